package allocator

import (
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// Assignable is set as ADD may give it out: each range without its gateway, in host-local's
// "start-end" form joined by commas (a lone address as itself): for a /30 whose gateway is
// the first address, only the second.
func Assignable(set ranges.Set) string {
	var parts []string
	piece := func(from, to netip.Addr) {
		switch from.Compare(to) {
		case 0:
			parts = append(parts, from.String())
		case -1:
			parts = append(parts, from.String()+"-"+to.String())
		}
	}
	for _, r := range set {
		if !r.Contains(r.Gateway) {
			piece(r.Start, r.End)
			continue
		}
		if r.Gateway != r.Start {
			piece(r.Start, r.Gateway.Prev())
		}
		if r.Gateway != r.End {
			piece(r.Gateway.Next(), r.End)
		}
	}
	if len(parts) == 0 {
		return "no address"
	}
	return strings.Join(parts, ",")
}

// Describe says what range set idx of a pool holds, for the details of an error that
// says it has no address to give: its assignable addresses, how many they are, the
// gateways left out, and how many of them are excluded.
func Describe(idx int, set ranges.Set, excl ranges.Exclusions) string {
	var size, excluded uint64
	exact := true
	var gws []string
	for _, r := range set {
		n, ok := ranges.Size(r.Start, r.End)
		exact = exact && ok && size+n >= size
		size += n
		ex := excl.Count(r.Start, r.End)
		if r.Contains(r.Gateway) {
			size--
			gws = append(gws, r.Gateway.String())
			if _, ok := excl.Covering(r.Gateway); ok {
				ex--
			}
		}
		excluded += ex
	}
	var b strings.Builder
	fmt.Fprintf(&b, "range set %d assigns %s", idx, Assignable(set))
	if exact {
		fmt.Fprintf(&b, " (%s address%s", count(size), plural(size))
	} else {
		b.WriteString(" (2^64 addresses or more")
	}
	switch len(gws) {
	case 0:
	case 1:
		fmt.Fprintf(&b, "; the gateway %s is never assigned", gws[0])
	default:
		fmt.Fprintf(&b, "; the gateways %s are never assigned", strings.Join(gws, ", "))
	}
	fmt.Fprintf(&b, "), %d of them excluded, the rest reserved", excluded)
	return b.String()
}

// count writes n in decimal, or as 2^k-d when it is just under a large power of two (an
// IPv6 /64 less its gateway: 2^64-2), which no one reads in decimal.
func count(n uint64) string {
	if n < 1<<32 {
		return fmt.Sprint(n)
	}
	k := bits.Len64(n)
	var d uint64
	if k == 64 {
		d = math.MaxUint64 - n + 1
	} else {
		d = 1<<k - n
	}
	if d > 1<<16 {
		return fmt.Sprint(n)
	}
	if d == 0 {
		return fmt.Sprintf("2^%d", k)
	}
	return fmt.Sprintf("2^%d-%d", k, d)
}

func plural(n uint64) string {
	if n == 1 {
		return ""
	}
	return "es"
}
