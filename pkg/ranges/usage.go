package ranges

import (
	"math"
	"net/netip"
)

// Usage is how the addresses of a range set are used (the operator's usage command).
type Usage struct {
	// Size counts the addresses that can be handed out: those of the ranges, gateways
	// excepted.
	Size uint64
	// InUse counts the reserved addresses; a reserved address that is also excluded
	// counts here, not as excluded.
	InUse uint64
	// Excluded counts the excluded addresses that are not reserved.
	Excluded uint64
	// Free is Size less InUse and Excluded.
	Free uint64
	// Saturated: the set holds 2^64 addresses or more; Size and Free are then about 2^64.
	Saturated bool
}

// Percent is the share of the addresses not excluded that are in use, in percent to one
// decimal (0 when every address is excluded).
func (u Usage) Percent() float64 {
	if avail := u.Size - u.Excluded; avail > 0 {
		return math.Round(float64(u.InUse)/float64(avail)*1000) / 10
	}
	return 0
}

// Usage counts s against the exclusions: count answers how many addresses of [from, to]
// are reserved, so that a store that can count without listing (etcd) never lists.
func (s Set) Usage(excl Exclusions, count func(from, to netip.Addr) (uint64, error)) (Usage, error) {
	var u Usage
	for _, r := range s {
		n, exact := Size(r.Start, r.End)
		u.Size = addSat(u.Size, n)
		u.Saturated = u.Saturated || !exact || u.Size == math.MaxUint64
		ex := excl.Count(r.Start, r.End)
		inUse, err := count(r.Start, r.End)
		if err != nil {
			return u, err
		}
		// Reserved and excluded: counted as in use, not as excluded.
		var exInUse uint64
		for _, iv := range excl {
			from, to := maxAddr(iv.From, r.Start), minAddr(iv.To, r.End)
			if from.Compare(to) > 0 {
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
			u.Size--
			_, gwExcluded := excl.Covering(r.Gateway)
			if gwExcluded {
				ex--
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
		u.InUse += inUse
		u.Excluded = addSat(u.Excluded, ex-exInUse)
	}
	u.Free = u.Size - u.InUse - u.Excluded
	return u, nil
}

// addSat adds, saturating at 2^64-1.
func addSat(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
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
