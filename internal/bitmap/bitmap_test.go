package bitmap

import (
	"testing"
)

func TestGetSet(t *testing.T) {
	b := make(Bitmap, 2)
	for _, c := range []struct {
		i       uint32
		v, want bool
	}{{0, true, true}, {0, true, false}, {9, true, true}, {15, true, true}, {9, false, true}, {9, false, false}} {
		if got := b.Set(c.i, c.v); got != c.want {
			t.Errorf("Set(%d, %v) changed = %v, want %v", c.i, c.v, got, c.want)
		}
		if b.Get(c.i) != c.v {
			t.Errorf("Get(%d) = %v after Set(%d, %v)", c.i, !c.v, c.i, c.v)
		}
	}
	// The stored form: bit i is bit i%8 of byte i/8.
	if b[0] != 0x01 || b[1] != 0x80 {
		t.Errorf("bytes %#x, want [0x01 0x80]", []byte(b))
	}
	defer func() {
		if recover() == nil {
			t.Error("Get past the end did not panic")
		}
	}()
	b.Get(16)
}

func TestFirstClear(t *testing.T) {
	ones := func(n int) Bitmap {
		b := make(Bitmap, n)
		for i := range b {
			b[i] = 0xff
		}
		return b
	}
	withClear := func(b Bitmap, bits ...uint32) Bitmap {
		for _, i := range bits {
			b.Set(i, false)
		}
		return b
	}
	for _, c := range []struct {
		name     string
		b        Bitmap
		from, to uint32
		want     uint32
		ok       bool
	}{
		{"empty bitmap", nil, 0, 10, 0, false},
		{"all clear", make(Bitmap, 16), 0, 127, 0, true},
		{"all clear, from inside", make(Bitmap, 16), 77, 127, 77, true},
		{"from after to", make(Bitmap, 16), 5, 4, 0, false},
		{"all ones", ones(16), 0, 127, 0, false},
		{"all ones, 8 KiB", ones(8192), 0, 65535, 0, false},
		{"last bit of 8 KiB", withClear(ones(8192), 65535), 0, 65535, 65535, true},
		{"clear bit before from", withClear(ones(16), 3), 4, 127, 0, false},
		{"clear bit after to", withClear(ones(16), 100), 0, 99, 0, false},
		{"clear bit at to", withClear(ones(16), 100), 0, 100, 100, true},
		{"clear bit at from", withClear(ones(16), 64), 64, 64, 64, true},
		{"word boundary", withClear(ones(16), 63, 64), 64, 127, 64, true},
		{"lowest of two", withClear(ones(16), 70, 65), 0, 127, 65, true},
		{"to past the end", ones(16), 0, 1 << 20, 0, false},
		{"to past the end, clear last bit", withClear(ones(16), 127), 100, ^uint32(0), 127, true},
		{"from past the end", make(Bitmap, 16), 128, 200, 0, false},
		{"partial word", withClear(ones(3), 23), 0, 100, 23, true},
		{"partial word full", ones(3), 0, 100, 0, false},
		{"partial word after a whole one", withClear(ones(11), 80), 0, 87, 80, true},
		{"partial word after a whole one, full", ones(11), 60, 1000, 0, false},
	} {
		got, ok := c.b.FirstClear(c.from, c.to)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: FirstClear(%d, %d) = %d, %v; want %d, %v", c.name, c.from, c.to, got, ok, c.want, c.ok)
		}
	}
}

func TestAllOnesAllZero(t *testing.T) {
	for _, c := range []struct {
		b          Bitmap
		ones, zero bool
	}{
		{nil, true, true},
		{Bitmap{0xff, 0xff}, true, false},
		{Bitmap{0xff, 0x7f}, false, false},
		{Bitmap{0, 0}, false, true},
		{Bitmap{0, 0x80}, false, false},
	} {
		if c.b.AllOnes() != c.ones || c.b.AllZero() != c.zero {
			t.Errorf("%#x: AllOnes %v AllZero %v; want %v %v", []byte(c.b), c.b.AllOnes(), c.b.AllZero(), c.ones, c.zero)
		}
	}
}

// FuzzBitmap: FirstClear, AllOnes and AllZero agree with a bit-by-bit model, on bitmaps of
// any length (whole words or not) and any bounds.
func FuzzBitmap(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint32(0), uint32(63))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, uint32(60), uint32(70))
	f.Add([]byte{0xff, 0xff, 0x03}, uint32(3), uint32(1000))
	f.Add([]byte{}, uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, raw []byte, from, to uint32) {
		b := Bitmap(raw)
		n := uint32(len(b) * 8)
		want, wok := uint32(0), false
		for i := from; i <= to && i < n; i++ {
			if !b.Get(i) {
				want, wok = i, true
				break
			}
		}
		if got, ok := b.FirstClear(from, to); got != want || ok != wok {
			t.Fatalf("FirstClear(%d, %d) of %x = %d, %v; want %d, %v", from, to, raw, got, ok, want, wok)
		}
		ones, zero := true, true
		for i := uint32(0); i < n; i++ {
			ones = ones && b.Get(i)
			zero = zero && !b.Get(i)
		}
		if b.AllOnes() != ones || b.AllZero() != zero {
			t.Fatalf("%x: AllOnes %v AllZero %v, want %v %v", raw, b.AllOnes(), b.AllZero(), ones, zero)
		}
		// Set changes exactly the bit it names.
		if n > 0 {
			i := from % n
			c := append(Bitmap(nil), b...)
			was := c.Get(i)
			if !c.Set(i, !was) || c.Get(i) == was || c.Set(i, !was) {
				t.Fatalf("Set(%d) of %x", i, raw)
			}
			for j := uint32(0); j < n; j++ {
				if j != i && c.Get(j) != b.Get(j) {
					t.Fatalf("Set(%d) changed bit %d of %x", i, j, raw)
				}
			}
		}
	})
}
