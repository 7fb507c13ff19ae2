package plugin

import (
	"testing"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// TestDescribe: a range set as ADD may give it (gateways left out wherever they sit), with
// its size, exact (short for huge ones), and how many of its addresses are excluded.
func TestDescribe(t *testing.T) {
	for _, c := range []struct {
		name, ipam, want string
	}{
		{"a /30, gateway first", `"subnet":"10.0.0.0/30"`,
			"range set 0 assigns 10.0.0.2 (1 address; the gateway 10.0.0.1 is never assigned), 0 of them excluded, the rest reserved"},
		{"gateway in the middle", `"subnet":"10.0.1.0/24","rangeStart":"10.0.1.10","rangeEnd":"10.0.1.20","gateway":"10.0.1.15"`,
			"range set 0 assigns 10.0.1.10-10.0.1.14,10.0.1.16-10.0.1.20 (10 addresses; the gateway 10.0.1.15 is never assigned), 0 of them excluded, the rest reserved"},
		{"gateway last, gateway outside", `"ranges":[[{"subnet":"10.0.2.0/24","rangeStart":"10.0.2.5","rangeEnd":"10.0.2.7","gateway":"10.0.2.7"},{"subnet":"10.0.4.0/24","rangeStart":"10.0.4.5","rangeEnd":"10.0.4.6","gateway":"10.0.4.1"}]]`,
			"range set 0 assigns 10.0.2.5-10.0.2.6,10.0.4.5-10.0.4.6 (4 addresses; the gateway 10.0.2.7 is never assigned), 0 of them excluded, the rest reserved"},
		{"exclusions, an excluded gateway not counted", `"subnet":"10.0.3.0/29","exclude":["10.0.3.4/30","10.0.3.1"]`,
			"range set 0 assigns 10.0.3.2-10.0.3.6 (5 addresses; the gateway 10.0.3.1 is never assigned), 3 of them excluded, the rest reserved"},
		{"a range of its gateway alone", `"subnet":"10.0.5.0/24","rangeStart":"10.0.5.1","rangeEnd":"10.0.5.1"`,
			"range set 0 assigns no address (0 addresses; the gateway 10.0.5.1 is never assigned), 0 of them excluded, the rest reserved"},
		{"two gateways", `"ranges":[[{"subnet":"10.0.6.0/30"},{"subnet":"10.0.7.0/30"}]]`,
			"range set 0 assigns 10.0.6.2,10.0.7.2 (2 addresses; the gateways 10.0.6.1, 10.0.7.1 are never assigned), 0 of them excluded, the rest reserved"},
		{"every address excluded: the way out is the exclusion, not a release", `"subnet":"10.0.8.0/29","exclude":["10.0.8.0/29"]`,
			"range set 0 assigns 10.0.8.2-10.0.8.6 (5 addresses; the gateway 10.0.8.1 is never assigned), every one of them excluded by ipam.exclude: none can be assigned until the exclusions change"},
		{"IPv6 /64", `"subnet":"fd00::/64","exclude":["fd00::/65"]`,
			"range set 0 assigns fd00::2-fd00::ffff:ffff:ffff:ffff (2^64-2 addresses; the gateway fd00::1 is never assigned), 2^63-2 of them excluded, the rest reserved"},
		{"IPv6 /96", `"subnet":"fd00::/96"`,
			"range set 0 assigns fd00::2-fd00::ffff:ffff (4294967294 addresses; the gateway fd00::1 is never assigned), 0 of them excluded, the rest reserved"},
	} {
		conf, err := config.Load([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{`+c.ipam+`}}`), "")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := describe(0, conf.Pool.Sets[0], conf.Pool.Exclude); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}
