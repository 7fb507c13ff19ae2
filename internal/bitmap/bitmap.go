// Package bitmap is the bitmap the stores keep of a page of addresses: bit i set means
// address i of the page is reserved. The bytes are the stored form as is (a disk store's
// page file, an etcd store's page value): bit i is bit i%8 of byte i/8, least significant
// first.
package bitmap

import (
	"encoding/binary"
	"math/bits"
)

// Bitmap holds 8*len(b) bits. Get and Set panic on a bit past the end, as an index past
// the end of a slice does.
type Bitmap []byte

// Get reports whether bit i is set.
func (b Bitmap) Get(i uint32) bool { return b[i/8]&(1<<(i%8)) != 0 }

// Set sets bit i to v and reports whether that changed it.
func (b Bitmap) Set(i uint32, v bool) (changed bool) {
	mask := byte(1) << (i % 8)
	if (b[i/8]&mask != 0) == v {
		return false
	}
	b[i/8] ^= mask
	return true
}

// FirstClear returns the lowest clear bit in [from, to]; bits past the end of b are not
// in the bitmap, and never returned. It reads eight bytes at a time.
func (b Bitmap) FirstClear(from, to uint32) (uint32, bool) {
	if n := uint64(len(b)) * 8; uint64(to) >= n {
		if n == 0 {
			return 0, false
		}
		to = uint32(n - 1) // n <= to < 2^32 here
	}
	if from > to {
		return 0, false
	}
	for w := from / 64; w <= to/64; w++ {
		var word uint64
		if off := int(w) * 8; off+8 <= len(b) {
			word = ^binary.LittleEndian.Uint64(b[off:])
		} else {
			word = ^b.tail(off)
		}
		if w == from/64 {
			word &= ^uint64(0) << (from % 64)
		}
		if word != 0 {
			i := w*64 + uint32(bits.TrailingZeros64(word))
			if i <= to {
				return i, true
			}
			return 0, false
		}
	}
	return 0, false
}

// tail is the last, partial word from byte off on; the bits past the end read as set, so
// that FirstClear never finds one there.
func (b Bitmap) tail(off int) uint64 {
	x := ^uint64(0)
	for j, c := range b[off:] {
		x &^= uint64(0xff) << (8 * j)
		x |= uint64(c) << (8 * j)
	}
	return x
}

// AllOnes reports whether every bit is set (true for an empty bitmap).
func (b Bitmap) AllOnes() bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

// AllZero reports whether every bit is clear (true for an empty bitmap).
func (b Bitmap) AllZero() bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
