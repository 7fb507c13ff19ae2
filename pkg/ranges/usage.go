package ranges

import (
	"math"
	"math/big"
	"net/netip"
)

// Usage is how the addresses of a range set are used (the operator's usage command).
// Every count is exact, whatever the size of the ranges (an IPv6 set may hold up to
// 2^128 addresses).
type Usage struct {
	// Size counts the addresses that can be handed out: those of the ranges, gateways
	// excepted.
	Size *big.Int
	// InUse counts the reserved addresses; a reserved address that is also excluded
	// counts here, not as excluded.
	InUse *big.Int
	// Excluded counts the excluded addresses that are not reserved: those an exclusion
	// keeps from being handed out (neither the gateway nor addresses outside the ranges).
	Excluded *big.Int
	// Free is Size less InUse and Excluded.
	Free *big.Int
}

// Percent is the share of the addresses not excluded that are in use, in percent to one
// decimal (0 when every address is excluded).
func (u Usage) Percent() float64 {
	avail := new(big.Int).Sub(u.Size, u.Excluded)
	if avail.Sign() <= 0 {
		return 0
	}
	f, _ := new(big.Rat).SetFrac(new(big.Int).Mul(u.InUse, big.NewInt(1000)), avail).Float64()
	return math.Round(f) / 10
}

// Span returns the number of addresses in [from, to] (0 when from is after to), exactly:
// 2^128 for the whole IPv6 space.
func Span(from, to netip.Addr) *big.Int {
	if from.Compare(to) > 0 {
		return new(big.Int)
	}
	d := ToUint128(to).Sub(ToUint128(from))
	n := new(big.Int).SetUint64(d.Hi)
	n.Lsh(n, 64).Add(n, new(big.Int).SetUint64(d.Lo))
	return n.Add(n, big.NewInt(1))
}

// Count returns how many addresses of [from, to] are excluded.
func (e Exclusions) Count(from, to netip.Addr) *big.Int {
	n := new(big.Int)
	for _, iv := range e {
		if iv.From.BitLen() != from.BitLen() {
			continue
		}
		n.Add(n, Span(maxAddr(iv.From, from), minAddr(iv.To, to)))
	}
	return n
}

// Usage counts s against the exclusions: count answers how many addresses of [from, to]
// are reserved, so that a store that can count without listing (etcd) never lists.
func (s Set) Usage(excl Exclusions, count func(from, to netip.Addr) (uint64, error)) (Usage, error) {
	u := Usage{Size: new(big.Int), InUse: new(big.Int), Excluded: new(big.Int), Free: new(big.Int)}
	var inUse, exInUse uint64
	for _, r := range s {
		u.Size.Add(u.Size, Span(r.Start, r.End))
		u.Excluded.Add(u.Excluded, excl.Count(r.Start, r.End))
		n, err := count(r.Start, r.End)
		if err != nil {
			return u, err
		}
		inUse += n
		// Reserved and excluded: counted as in use, not as excluded.
		for _, iv := range excl {
			from, to := maxAddr(iv.From, r.Start), minAddr(iv.To, r.End)
			if iv.From.BitLen() != r.Start.BitLen() || from.Compare(to) > 0 {
				continue
			}
			k, err := count(from, to)
			if err != nil {
				return u, err
			}
			exInUse += k
		}
		if r.Contains(r.Gateway) {
			// The gateway is never given out: not part of the size, nor of what is used.
			u.Size.Sub(u.Size, big.NewInt(1))
			_, gwExcluded := excl.Covering(r.Gateway)
			if gwExcluded {
				u.Excluded.Sub(u.Excluded, big.NewInt(1))
			}
			k, err := count(r.Gateway, r.Gateway)
			if err != nil {
				return u, err
			}
			inUse -= k
			if gwExcluded {
				exInUse -= k
			}
		}
	}
	u.InUse.SetUint64(inUse)
	u.Excluded.Sub(u.Excluded, new(big.Int).SetUint64(exInUse))
	u.Free.Sub(u.Size, u.InUse).Sub(u.Free, u.Excluded)
	return u, nil
}

func maxAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

func minAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) <= 0 {
		return a
	}
	return b
}
