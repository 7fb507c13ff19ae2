// Package ranges is the address math of local-ipam: ranges and range sets of net/netip
// addresses, with host-local's defaults, validation and walk order.
package ranges

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// Range is one contiguous block of assignable addresses inside a subnet. Start and End are
// inclusive. Gateway is never handed out while walking this range.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr
	End     netip.Addr
	Gateway netip.Addr
}

// Mapped is the block of IPv4-mapped IPv6 addresses: they name IPv4 hosts (and a record
// for one would be named by its IPv4 form), so no IPv6 range hands them out.
var Mapped = netip.MustParsePrefix("::ffff:0:0/96")

// New validates a range and fills host-local's defaults: Start = subnet+1, End = the
// broadcast address - 1 for IPv4 and the last address for IPv6, Gateway = subnet+1.
// Zero addresses mean "not given".
func New(subnet netip.Prefix, start, end, gateway netip.Addr) (Range, error) {
	if !subnet.IsValid() {
		return Range{}, fmt.Errorf("missing or invalid subnet")
	}
	a := subnet.Addr()
	bits := a.BitLen()
	if subnet.Bits() > bits-2 {
		return Range{}, fmt.Errorf("Network %s too small to allocate from", subnet)
	}
	if m := subnet.Masked(); m.Addr() != a {
		return Range{}, fmt.Errorf("Network has host bits set. For a subnet mask of length %d the network address is %s", subnet.Bits(), m.Addr())
	}
	r := Range{Subnet: subnet}
	// pick is the address given, which must lie in the subnet, or def when none is.
	pick := func(what string, given, def netip.Addr) (netip.Addr, error) {
		if !given.IsValid() {
			return def, nil
		}
		if !r.inSubnet(given) {
			return netip.Addr{}, fmt.Errorf("%s %s not in network %s", what, given, subnet)
		}
		return given, nil
	}
	last := LastAddr(subnet)
	if a.Is4() {
		last = last.Prev() // the broadcast address is not handed out
	}
	var err error
	if r.Gateway, err = pick("gateway", gateway, a.Next()); err != nil {
		return Range{}, err
	}
	if r.Start, err = pick("RangeStart", start, a.Next()); err != nil {
		return Range{}, err
	}
	if r.End, err = pick("RangeEnd", end, last); err != nil {
		return Range{}, err
	}
	if r.Start.Compare(r.End) > 0 {
		return Range{}, fmt.Errorf("RangeStart %s is after RangeEnd %s in network %s", r.Start, r.End, subnet)
	}
	return r, nil
}

func (r Range) inSubnet(a netip.Addr) bool {
	return a.BitLen() == r.Subnet.Addr().BitLen() && r.Subnet.Contains(a)
}

// Contains reports whether a lies in [Start, End].
func (r Range) Contains(a netip.Addr) bool {
	return r.inSubnet(a) && a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0
}

// Overlaps reports whether two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	if r.Start.BitLen() != o.Start.BitLen() {
		return false
	}
	return r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// String is host-local's form, "start-end".
func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// Set is a range set: same-family, non-overlapping ranges; one address is allocated from
// each set, walking the ranges in order.
type Set []Range

// NewSet validates a set as host-local does.
func NewSet(rs []Range) (Set, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("empty range set")
	}
	for i := range rs {
		if rs[i].Start.BitLen() != rs[0].Start.BitLen() {
			return nil, fmt.Errorf("mixed address families")
		}
	}
	if i, j, ok := FirstOverlap(len(rs), func(k int) Range { return rs[k] }); ok {
		return nil, fmt.Errorf("subnets %s and %s overlap", rs[i], rs[j])
	}
	return Set(rs), nil
}

// FirstOverlap finds two of n ranges that overlap, in O(n log n): sorted by start, a
// range overlaps an earlier one exactly when it starts before the furthest end so far.
// (A config may hold a great many ranges: comparing every pair would take minutes.)
func FirstOverlap(n int, at func(int) Range) (i, j int, ok bool) {
	idx := make([]int, n)
	for k := range idx {
		idx[k] = k
	}
	sort.Slice(idx, func(a, b int) bool { return at(idx[a]).Start.Compare(at(idx[b]).Start) < 0 })
	far := -1 // the range with the furthest end among those seen, of the current family
	for _, k := range idx {
		r := at(k)
		if far >= 0 && at(far).Start.BitLen() == r.Start.BitLen() && r.Start.Compare(at(far).End) <= 0 {
			return min(far, k), max(far, k), true
		}
		if far < 0 || at(far).Start.BitLen() != r.Start.BitLen() || r.End.Compare(at(far).End) > 0 {
			far = k
		}
	}
	return 0, 0, false
}

// RangeFor returns the index of the range holding a, or -1.
func (s Set) RangeFor(a netip.Addr) int {
	for i := range s {
		if s[i].Contains(a) {
			return i
		}
	}
	return -1
}

// Contains reports whether a lies in one of the set's ranges.
func (s Set) Contains(a netip.Addr) bool { return s.RangeFor(a) >= 0 }

// Is4 reports the set's family.
func (s Set) Is4() bool { return len(s) > 0 && s[0].Start.Is4() }

// Overlaps reports whether any range of s overlaps any range of o.
func (s Set) Overlaps(o Set) bool {
	for _, r := range s {
		for _, r1 := range o {
			if r.Overlaps(r1) {
				return true
			}
		}
	}
	return false
}

// String is host-local's form, "start-end,start-end".
func (s Set) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Segment is a contiguous stretch [From, To] of range Range of a set, visited by a walk.
type Segment struct {
	Range    int
	From, To netip.Addr
}

// Walk returns the stretches host-local's round-robin iterator visits, in order: from the
// address after last (or the set's first address when last is not in the set) to the end
// of its range, through the following ranges, wrapping to the first, and back up to last.
// Every address of the set is visited exactly once.
func (s Set) Walk(last netip.Addr) []Segment {
	ri, start := 0, s[0].Start
	if last.IsValid() {
		if i := s.RangeFor(last); i >= 0 {
			if last == s[i].End {
				ri = (i + 1) % len(s)
				start = s[ri].Start
			} else {
				ri, start = i, last.Next()
			}
		}
	}
	segs := make([]Segment, 0, len(s)+1)
	segs = append(segs, Segment{ri, start, s[ri].End})
	for k := 1; k < len(s); k++ {
		j := (ri + k) % len(s)
		segs = append(segs, Segment{j, s[j].Start, s[j].End})
	}
	if start != s[ri].Start {
		segs = append(segs, Segment{ri, s[ri].Start, start.Prev()})
	}
	return segs
}

// LastAddr is the highest address of p.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

// setHostBits sets every bit of the address b after its first prefixLen.
func setHostBits(b []byte, prefixLen int) {
	for i := range b {
		if n := prefixLen - i*8; n < 8 {
			b[i] |= byte(0xff >> max(n, 0))
		}
	}
}

// ParseAddr parses an address as host-local does (net.ParseIP), with IPv4-mapped IPv6
// addresses turned into IPv4.
func ParseAddr(s string) (netip.Addr, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address: %q", s)
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap(), nil
}

// ParsePrefix parses a subnet in CIDR form as host-local does (net.ParseCIDR), keeping
// host bits so that callers can refuse them with a clear message. An IPv4-mapped IPv6
// subnet is refused (host-local: "IPNet IP and Mask version mismatch").
func ParsePrefix(s string) (netip.Prefix, error) {
	ip, ipnet, err := net.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
	}
	ones, bits := ipnet.Mask.Size()
	a, _ := netip.AddrFromSlice(ip)
	if a.Is4In6() {
		if bits != 32 {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s (IPv4-mapped IPv6 subnets are not allowed)", s)
		}
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), nil
}

// Interval is an inclusive stretch of addresses of one family.
type Interval struct{ From, To netip.Addr }

// Exclusions is a sorted list of disjoint intervals never handed out.
type Exclusions []Interval

// NewExclusions sorts and merges the intervals of ps (prefixes; a single address is a /32
// or /128).
func NewExclusions(ps []netip.Prefix) Exclusions {
	var out Exclusions
	for _, p := range ps {
		p = p.Masked()
		out = append(out, Interval{p.Addr(), LastAddr(p)})
	}
	slicesSortIntervals(out)
	merged := out[:0]
	for _, iv := range out {
		if n := len(merged); n > 0 && merged[n-1].To.BitLen() == iv.From.BitLen() &&
			(merged[n-1].To.Compare(iv.From) >= 0 || merged[n-1].To.Next() == iv.From) {
			if iv.To.Compare(merged[n-1].To) > 0 {
				merged[n-1].To = iv.To
			}
			continue
		}
		merged = append(merged, iv)
	}
	return merged
}

// Covering returns the exclusion that holds a.
func (e Exclusions) Covering(a netip.Addr) (Interval, bool) {
	lo, hi := 0, len(e)
	for lo < hi {
		m := (lo + hi) / 2
		if e[m].To.Compare(a) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(e) && e[lo].From.BitLen() == a.BitLen() && e[lo].From.Compare(a) <= 0 && a.Compare(e[lo].To) <= 0 {
		return e[lo], true
	}
	return Interval{}, false
}

func slicesSortIntervals(ivs []Interval) {
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].From.Compare(ivs[j].From) < 0 })
}

// Pool is what one network allocates from: its range sets (one address from each) and
// the addresses never handed out.
type Pool struct {
	Sets    []Set
	Exclude Exclusions
}

// Contains reports whether a lies in one of the pool's sets.
func (p Pool) Contains(a netip.Addr) bool {
	for _, s := range p.Sets {
		if s.Contains(a) {
			return true
		}
	}
	return false
}
