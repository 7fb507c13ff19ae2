package store_test

import (
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/store"
)

// FuzzParseKey: a record names its owner exactly. ParseKey(o.Key()) == o for every owner
// whose key survives the trimming (a non-empty ID without "\r\n", no white space around
// the key); and for any content, ParseKey(c).Key() is the trimmed content, which is what
// the disk store's rebuild uses as the owner's key (so index lookups by o.Key() and
// rebuilt entries agree), and ParseKey is idempotent.
func FuzzParseKey(f *testing.F) {
	f.Add("c1", "eth0", "c1\r\neth0")
	f.Add("c1", "", "  c1\r\n")
	f.Add("abc", "net1", "abc\r\nnet1\r\n")
	f.Add("a\r", "\nb", "a\r\r\n\nb")
	f.Add(" c1", "eth0", "\r\n\r\neth0")
	f.Add("c\r\nd", "eth0", "\u0085c1\u00a0")
	f.Add("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0", "c1\neth0")
	f.Fuzz(func(t *testing.T, id, ifname, content string) {
		o := store.Owner{ID: id, IfName: ifname}
		k := o.Key()
		if id != "" && !strings.Contains(id, store.LineBreak) && strings.TrimSpace(k) == k {
			if got := store.ParseKey(k); got != o {
				t.Fatalf("ParseKey(%q) = %#v, want %#v", k, got, o)
			}
		}
		if ifname == "" && k != id {
			t.Fatalf("Key of a legacy owner %q = %q", id, k)
		}
		if o.Legacy() != (store.Owner{ID: id}) {
			t.Fatalf("Legacy(%#v) = %#v", o, o.Legacy())
		}
		p := store.ParseKey(content)
		if p.Key() != strings.TrimSpace(content) {
			t.Fatalf("ParseKey(%q) = %#v, whose key %q is not the trimmed content", content, p, p.Key())
		}
		if store.ParseKey(p.Key()) != p {
			t.Fatalf("ParseKey not idempotent on %q: %#v then %#v", content, p, store.ParseKey(p.Key()))
		}
		if p.IfName != "" && p.ID == "" {
			t.Fatalf("ParseKey(%q) = %#v: an ifname without a container ID", content, p)
		}
	})
}
