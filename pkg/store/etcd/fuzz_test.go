package etcd

import "testing"

// FuzzKeyNames: the address and page parts of keys, read back from etcd where anybody may
// have written anything, parse only when they are exactly what the store writes, and
// what the store writes always parses back to the same thing.
func FuzzKeyNames(f *testing.F) {
	for _, s := range []string{"4-0a000005", "6-fd000000000000000000000000000001", "4-0a00", "4-0A000005",
		"4-00000", "6-0000000000000000000000000000000", "6-fffffffffffffffffffffffffffff", "x", "", "4-", "6-zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a, ok := parseAddrName(s); ok {
			if !a.IsValid() || addrName(a) != s && addrName(a) != lower(s) {
				t.Fatalf("parseAddrName(%q) = %v, written back as %q", s, a, addrName(a))
			}
		}
		for _, bits := range []int{pageBits, 6, minBlockBits} { // pages, and blocks of 64 and 8
			if p, ok := parsePageName(s, bits); ok {
				if p.name() != s && p.name() != lower(s) {
					t.Fatalf("parsePageName(%q) = %+v, written back as %q", s, p, p.name())
				}
				if !p.v6 && p.n.Lo >= 1<<(32-bits) {
					t.Fatalf("parsePageName(%q): IPv4 page %x beyond the address space", s, p.n.Lo)
				}
			}
			// Whatever parses as an address lies in the page that names it.
			if a, ok := parseAddrName(s); ok {
				p, off := pageOf(a, bits)
				if p.addr(off) != a {
					t.Fatalf("%v: page %+v offset %d gives back %v", a, p, off, p.addr(off))
				}
				if q, ok := parsePageName(p.name(), bits); !ok || q != p {
					t.Fatalf("page name %q of %v does not parse back", p.name(), a)
				}
			}
		}
	})
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
