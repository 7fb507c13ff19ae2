package ranges

import (
	"math/bits"
	"net/netip"
)

// Uint128 is an address as a number (an IPv4 address in the low 32 bits), or a number on
// that scale: a page of addresses, a count. Arithmetic wraps at 2^128 unless it reports
// the carry.
type Uint128 struct{ Hi, Lo uint64 }

// ToUint128 returns a as a number (IPv4 in the low 32 bits).
func ToUint128(a netip.Addr) Uint128 {
	if a.Is4() {
		b := a.As4()
		return Uint128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var x Uint128
	for i := 0; i < 8; i++ {
		x.Hi = x.Hi<<8 | uint64(b[i])
		x.Lo = x.Lo<<8 | uint64(b[8+i])
	}
	return x
}

// Addr is the IPv6 address x, or with v6 false the IPv4 address of its low 32 bits (the
// inverse of ToUint128 for an address of that family).
func (x Uint128) Addr(v6 bool) netip.Addr {
	if !v6 {
		return netip.AddrFrom4([4]byte{byte(x.Lo >> 24), byte(x.Lo >> 16), byte(x.Lo >> 8), byte(x.Lo)})
	}
	var b [16]byte
	hi, lo := x.Hi, x.Lo
	for i := 7; i >= 0; i-- {
		b[i] = byte(hi)
		b[8+i] = byte(lo)
		hi >>= 8
		lo >>= 8
	}
	return netip.AddrFrom16(b)
}

// Cmp returns -1, 0 or +1 as x is less than, equal to or greater than y.
func (x Uint128) Cmp(y Uint128) int {
	switch {
	case x.Hi < y.Hi:
		return -1
	case x.Hi > y.Hi:
		return 1
	case x.Lo < y.Lo:
		return -1
	case x.Lo > y.Lo:
		return 1
	}
	return 0
}

// Add64 returns x+n, and whether it carried out of 128 bits (the sum wrapped).
func (x Uint128) Add64(n uint64) (Uint128, bool) {
	lo, c := bits.Add64(x.Lo, n, 0)
	hi, over := bits.Add64(x.Hi, 0, c)
	return Uint128{hi, lo}, over != 0
}

// Inc returns x+1 (0 after the largest value).
func (x Uint128) Inc() Uint128 {
	y, _ := x.Add64(1)
	return y
}

// Sub returns x-y (wrapped when y > x).
func (x Uint128) Sub(y Uint128) Uint128 {
	lo, b := bits.Sub64(x.Lo, y.Lo, 0)
	hi, _ := bits.Sub64(x.Hi, y.Hi, b)
	return Uint128{hi, lo}
}
