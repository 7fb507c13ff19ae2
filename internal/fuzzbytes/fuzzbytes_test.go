package fuzzbytes

import "testing"

func TestSrc(t *testing.T) {
	s := New([]byte{1, 2, 3})
	if s.Empty() {
		t.Fatal("Empty with three bytes left")
	}
	if b := s.Byte(); b != 1 {
		t.Errorf("Byte = %d, want 1", b)
	}
	if u := s.U16(); u != 0x0203 {
		t.Errorf("U16 = %#x, want 0x0203", u)
	}
	if !s.Empty() {
		t.Error("not Empty after every byte")
	}
	if b, u := s.Byte(), s.U16(); b != 0 || u != 0 {
		t.Errorf("past the end: Byte = %d, U16 = %d; want zeros", b, u)
	}
}
