package allocator_test

import (
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// TestDescribe: a range set as ADD may give it (gateways left out wherever they sit), with
// its size and how many of its addresses are excluded.
func TestDescribe(t *testing.T) {
	excl := ranges.NewExclusions([]netip.Prefix{netip.MustParsePrefix("10.0.3.4/30"), netip.MustParsePrefix("10.0.3.1/32"), ranges.Mapped})
	for _, c := range []struct {
		name string
		set  ranges.Set
		want string
	}{
		{"a /30, gateway first", ranges.Set{mustRange(t, "10.0.0.0/30", "", "", "")},
			"range set 0 assigns 10.0.0.2 (1 address; the gateway 10.0.0.1 is never assigned), 0 of them excluded, the rest reserved"},
		{"gateway in the middle", ranges.Set{mustRange(t, "10.0.1.0/24", "10.0.1.10", "10.0.1.20", "10.0.1.15")},
			"range set 0 assigns 10.0.1.10-10.0.1.14,10.0.1.16-10.0.1.20 (10 addresses; the gateway 10.0.1.15 is never assigned), 0 of them excluded, the rest reserved"},
		{"gateway last, gateway outside", ranges.Set{mustRange(t, "10.0.2.0/24", "10.0.2.5", "10.0.2.7", "10.0.2.7"), mustRange(t, "10.0.4.0/24", "10.0.4.5", "10.0.4.6", "10.0.4.1")},
			"range set 0 assigns 10.0.2.5-10.0.2.6,10.0.4.5-10.0.4.6 (4 addresses; the gateway 10.0.2.7 is never assigned), 0 of them excluded, the rest reserved"},
		{"exclusions, an excluded gateway not counted", ranges.Set{mustRange(t, "10.0.3.0/29", "", "", "")},
			"range set 0 assigns 10.0.3.2-10.0.3.6 (5 addresses; the gateway 10.0.3.1 is never assigned), 3 of them excluded, the rest reserved"},
		{"a range of its gateway alone", ranges.Set{mustRange(t, "10.0.5.0/24", "10.0.5.1", "10.0.5.1", "")},
			"range set 0 assigns no address (0 addresses; the gateway 10.0.5.1 is never assigned), 0 of them excluded, the rest reserved"},
		{"IPv6 /64", ranges.Set{mustRange(t, "fd00::/64", "", "", "")},
			"range set 0 assigns fd00::2-fd00::ffff:ffff:ffff:ffff (2^64-2 addresses; the gateway fd00::1 is never assigned), 0 of them excluded, the rest reserved"},
		{"IPv6 /63", ranges.Set{mustRange(t, "fd00::/63", "", "", "")},
			"range set 0 assigns fd00::2-fd00::1:ffff:ffff:ffff:ffff (2^64 addresses or more; the gateway fd00::1 is never assigned), 0 of them excluded, the rest reserved"},
		{"IPv6 /96", ranges.Set{mustRange(t, "fd00::/96", "", "", "")},
			"range set 0 assigns fd00::2-fd00::ffff:ffff (4294967294 addresses; the gateway fd00::1 is never assigned), 0 of them excluded, the rest reserved"},
	} {
		if got := allocator.Describe(0, c.set, excl); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}
