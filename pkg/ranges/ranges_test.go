package ranges

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestDefaults(t *testing.T) {
	for _, c := range []struct{ subnet, start, end, gw string }{
		{"10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1"},
		{"10.1.2.0/30", "10.1.2.1", "10.1.2.2", "10.1.2.1"},
		{"10.0.0.0/8", "10.0.0.1", "10.255.255.254", "10.0.0.1"},
		{"2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1"},
		{"fd00::/126", "fd00::1", "fd00::3", "fd00::1"},
	} {
		r, err := New(netip.MustParsePrefix(c.subnet), netip.Addr{}, netip.Addr{}, netip.Addr{})
		if err != nil {
			t.Fatalf("%s: %v", c.subnet, err)
		}
		if r.Start.String() != c.start || r.End.String() != c.end || r.Gateway.String() != c.gw {
			t.Errorf("%s: %s-%s gw %s", c.subnet, r.Start, r.End, r.Gateway)
		}
	}
}

func TestUint128RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 1000; i++ {
		var b [16]byte
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		for _, a := range []netip.Addr{netip.AddrFrom16(b), netip.AddrFrom4([4]byte(b[:4]))} {
			x := ToUint128(a)
			if got := x.Addr(a.Is6()); got != a {
				t.Fatalf("%v -> %x %x -> %v", a, x.Hi, x.Lo, got)
			}
		}
	}
}

func TestSpan(t *testing.T) {
	m := netip.MustParseAddr
	for _, c := range []struct{ from, to, want string }{
		{"10.0.0.1", "10.0.0.1", "1"},
		{"10.0.0.1", "10.0.0.254", "254"},
		{"10.0.0.5", "10.0.0.1", "0"},
		{"0.0.0.0", "255.255.255.255", "4294967296"},
		{"2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "18446744073709551615"}, // 2^64-1
		{"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "18446744073709551616"},  // 2^64
		{"2001:db8::", "2001:db8:1::", "1208925819614629174706177"},              // 2^80+1
		{"2001:db8::ffff:ffff:ffff:fff0", "2001:db8:0:1::f", "32"},               // across the 64-bit boundary
		{"2001:db8::", "2001:db8::ffff", "65536"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "340282366920938463463374607431768211456"}, // 2^128
	} {
		if got := Span(m(c.from), m(c.to)); got.String() != c.want {
			t.Errorf("Span(%s, %s) = %s; want %s", c.from, c.to, got, c.want)
		}
	}
}

// Walk visits every address of the set exactly once, starting right after the cursor.
func TestWalkVisitsEachAddressOnce(t *testing.T) {
	mk := func(s, e string) Range {
		p := netip.MustParsePrefix("10.0.0.0/16")
		r, err := New(p, netip.MustParseAddr(s), netip.MustParseAddr(e), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	set, err := NewSet([]Range{mk("10.0.0.10", "10.0.0.14"), mk("10.0.1.1", "10.0.1.3"), mk("10.0.0.200", "10.0.0.200")})
	if err != nil {
		t.Fatal(err)
	}
	all := map[netip.Addr]bool{}
	for _, r := range set {
		for a := r.Start; a.Compare(r.End) <= 0; a = a.Next() {
			all[a] = true
		}
	}
	cursors := []netip.Addr{{}, netip.MustParseAddr("10.9.9.9")}
	for a := range all {
		cursors = append(cursors, a)
	}
	for _, last := range cursors {
		seen := map[netip.Addr]bool{}
		var first netip.Addr
		for _, seg := range set.Walk(last) {
			for a := seg.From; a.Compare(seg.To) <= 0; a = a.Next() {
				if seen[a] || !all[a] || set.RangeFor(a) != seg.Range {
					t.Fatalf("cursor %v: %v visited twice or outside its range", last, a)
				}
				if !first.IsValid() {
					first = a
				}
				seen[a] = true
			}
		}
		if len(seen) != len(all) {
			t.Fatalf("cursor %v: visited %d of %d", last, len(seen), len(all))
		}
		want := set[0].Start
		if i := set.RangeFor(last); i >= 0 {
			if last == set[i].End {
				want = set[(i+1)%len(set)].Start
			} else {
				want = last.Next()
			}
		}
		if first != want {
			t.Errorf("cursor %v: walk starts at %v, want %v", last, first, want)
		}
	}
}

func TestParse(t *testing.T) {
	if a, err := ParseAddr("::ffff:10.1.2.3"); err != nil || a.String() != "10.1.2.3" {
		t.Errorf("mapped: %v %v", a, err)
	}
	for _, bad := range []string{"fe80::1%eth0", "10.1.2", "010.1.2.3", ""} {
		if _, err := ParseAddr(bad); err == nil {
			t.Errorf("ParseAddr(%q) accepted", bad)
		}
	}
	if _, err := ParsePrefix("::ffff:10.0.0.0/120"); err == nil {
		t.Error("mapped prefix accepted")
	}
}
