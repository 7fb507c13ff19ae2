// Package fuzzbytes hands a fuzzer's bytes out one at a time, to fuzz targets that build
// a small, well-formed problem from them.
package fuzzbytes

// Src hands out the fuzzer's bytes; past the end it gives zeros.
type Src struct{ b []byte }

// New hands out b.
func New(b []byte) *Src { return &Src{b: b} }

// Byte is the next byte (0 past the end).
func (s *Src) Byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

// U16 is the next two bytes, big-endian.
func (s *Src) U16() uint16 { return uint16(s.Byte())<<8 | uint16(s.Byte()) }

// Empty reports whether every byte has been handed out.
func (s *Src) Empty() bool { return len(s.b) == 0 }
