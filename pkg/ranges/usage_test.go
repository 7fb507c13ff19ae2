package ranges

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"testing"
)

// reserved counts the addresses of [from, to] among addrs, as a store would.
func reserved(addrs ...string) func(from, to netip.Addr) (uint64, error) {
	return func(from, to netip.Addr) (uint64, error) {
		var n uint64
		for _, s := range addrs {
			a := netip.MustParseAddr(s)
			if a.BitLen() == from.BitLen() && from.Compare(a) <= 0 && a.Compare(to) <= 0 {
				n++
			}
		}
		return n, nil
	}
}

func mustRange(t *testing.T, subnet, start, end, gw string) Range {
	t.Helper()
	parse := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	r, err := New(netip.MustParsePrefix(subnet), parse(start), parse(end), parse(gw))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func exclusions(ps ...string) Exclusions {
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, netip.MustParsePrefix(p))
	}
	return NewExclusions(append(out, Mapped))
}

// use is a Usage from decimal counts.
func use(size, inUse, excluded, free string) Usage {
	n := func(s string) *big.Int {
		v, ok := new(big.Int).SetString(s, 10)
		if !ok {
			panic(s)
		}
		return v
	}
	return Usage{Size: n(size), InUse: n(inUse), Excluded: n(excluded), Free: n(free)}
}

func TestSetUsage(t *testing.T) {
	for _, c := range []struct {
		name    string
		set     func(t *testing.T) Set
		excl    Exclusions
		count   func(from, to netip.Addr) (uint64, error)
		want    Usage
		percent float64
	}{
		{
			// .1-.254 less the gateway: 253. Excluded: .2 .3 (the /30 less the gateway and
			// the network address), .9, .200-.207: 11.
			name:    "exclusions, gateway excluded too",
			set:     func(t *testing.T) Set { return Set{mustRange(t, "10.71.0.0/24", "", "", "")} },
			excl:    exclusions("10.71.0.0/30", "10.71.0.9/32", "10.71.0.200/29"),
			count:   reserved("10.71.0.4", "10.71.0.5", "10.71.0.6", "10.71.0.7"),
			want:    use("253", "4", "11", "238"),
			percent: 1.7,
		},
		{
			// .9 excluded yet reserved (an old record): in use, not excluded. A record
			// at the gateway is not counted: the gateway is never handed out.
			name:    "reserved and excluded counts as in use; the gateway never",
			set:     func(t *testing.T) Set { return Set{mustRange(t, "10.71.0.0/24", "", "", "")} },
			excl:    exclusions("10.71.0.9/32"),
			count:   reserved("10.71.0.1", "10.71.0.9", "10.71.0.20"),
			want:    use("253", "2", "0", "251"),
			percent: 0.8,
		},
		{
			name:    "reserved gateway inside an exclusion",
			set:     func(t *testing.T) Set { return Set{mustRange(t, "10.71.0.0/28", "", "", "")} },
			excl:    exclusions("10.71.0.0/30"),
			count:   reserved("10.71.0.1", "10.71.0.2"),
			want:    use("13", "1", "1", "11"),
			percent: 8.3,
		},
		{
			name: "two ranges, gateway outside the range",
			set: func(t *testing.T) Set {
				return Set{
					mustRange(t, "10.72.0.0/24", "10.72.0.10", "10.72.0.19", "10.72.0.1"),
					mustRange(t, "10.72.1.0/24", "10.72.1.10", "10.72.1.14", "10.72.1.1"),
				}
			},
			count:   reserved("10.72.0.10", "10.72.1.14", "10.72.0.1", "10.72.2.1"),
			want:    use("15", "2", "0", "13"),
			percent: 13.3,
		},
		{
			name:  "every address excluded",
			set:   func(t *testing.T) Set { return Set{mustRange(t, "10.73.0.0/30", "", "", "")} },
			excl:  exclusions("10.73.0.0/30"),
			count: reserved(),
			want:  use("1", "0", "1", "0"),
		},
		{
			name:    "IPv6 /120",
			set:     func(t *testing.T) Set { return Set{mustRange(t, "fd00:70::/120", "", "", "")} },
			excl:    exclusions("fd00:70::80/121"),
			count:   reserved("fd00:70::2", "fd00:70::3", "10.0.0.2"),
			want:    use("254", "2", "128", "124"),
			percent: 1.6,
		},
		{
			// A /64 with its gateway: 2^64-2 (not 2^64-1: the network address is never in
			// a range either).
			name:  "IPv6 /64, exact",
			set:   func(t *testing.T) Set { return Set{mustRange(t, "fd00:71::/64", "", "", "")} },
			count: reserved("fd00:71::2", "fd00:71::1"),
			want:  use("18446744073709551614", "1", "0", "18446744073709551613"),
		},
		{
			name:  "IPv6 /48 less a /56 and a /64",
			set:   func(t *testing.T) Set { return Set{mustRange(t, "fd00:72::/48", "", "", "")} },
			excl:  exclusions("fd00:72:0:100::/56", "fd00:72:0:ff00::/64", "fd00:72:0:ff00::5/128"),
			count: reserved("fd00:72::2", "fd00:72:0:100::9"),
			// 2^80-2; excluded 2^72+2^64 less the reserved fd00:72:0:100::9.
			want: use("1208925819614629174706174", "2", "4740813226943354765311", "1204185006387685819940861"),
		},
		{
			// The whole IPv6 space, as one range: 2^128-2 after the network address and
			// the gateway; the IPv4-mapped block (2^32) is always excluded.
			name:  "IPv6 ::/0",
			set:   func(t *testing.T) Set { return Set{mustRange(t, "::/0", "", "", "")} },
			count: reserved(),
			want:  use("340282366920938463463374607431768211454", "0", "4294967296", "340282366920938463463374607427473244158"),
		},
		{
			// Two ranges that together hold every IPv6 address, gateways outside them.
			name: "2^128 addresses",
			set: func(t *testing.T) Set {
				return Set{
					mustRange(t, "::/0", "::", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "8000::1"),
					mustRange(t, "::/0", "8000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::1"),
				}
			},
			count: reserved("::1"),
			want:  use("340282366920938463463374607431768211456", "1", "4294967296", "340282366920938463463374607427473244159"),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			excl := c.excl
			if excl == nil {
				excl = exclusions()
			}
			got, err := c.set(t).Usage(excl, c.count)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) || got.Percent() != c.percent {
				t.Errorf("Usage = %v, %.1f%%; want %v, %.1f%%", got, got.Percent(), c.want, c.percent)
			}
		})
	}
}

func TestSetUsageCountError(t *testing.T) {
	set := Set{mustRange(t, "10.71.0.0/24", "", "", "")}
	boom := errors.New("store unreadable")
	for _, failAt := range []int{1, 2, 3} {
		calls := 0
		count := func(from, to netip.Addr) (uint64, error) {
			calls++
			if calls == failAt {
				return 0, boom
			}
			return 0, nil
		}
		if _, err := set.Usage(exclusions("10.71.0.9/32"), count); !errors.Is(err, boom) {
			t.Errorf("count failing at call %d: Usage returned %v, want the count's error", failAt, err)
		}
	}
}

func TestMinMaxAddr(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.10")
	if maxAddr(a, b) != b || maxAddr(b, a) != b || minAddr(a, b) != a || minAddr(b, a) != a || maxAddr(a, a) != a {
		t.Errorf("maxAddr/minAddr of %s, %s: %s, %s", a, b, maxAddr(a, b), minAddr(a, b))
	}
}
