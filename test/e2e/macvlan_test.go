package e2e

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestMacvlan attaches two namespaces with macvlan (mode bridge) children of one master and
// the IPAM plugin under test; children of the same master reach each other inside the driver.
// The master is one end of a veth pair (this kernel has no dummy links); both ends are up so
// the master has carrier. The config is cniVersion 0.4.0, the oldest with CHECK, so the
// plugin's result conversion to an older version is exercised too.
func TestMacvlan(t *testing.T) {
	e := setup(t)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.252.%d.0/24", testOctet()))
	master, peer := linkName(t, "mv0"), linkName(t, "mv1")
	cleanupLink(t, master) // deleting either end removes the pair
	mustRun(t, "ip", "link", "add", master, "type", "veth", "peer", "name", peer)
	mustRun(t, "ip", "link", "set", master, "up")
	mustRun(t, "ip", "link", "set", peer, "up")

	n := newNet(t, e, uniqueName("mv"), map[string]any{
		"cniVersion": "0.4.0",
		"plugins": []map[string]any{{
			"type":   "macvlan",
			"master": master,
			"mode":   "bridge",
			"ipam": map[string]any{
				"type":       e.ipam,
				"subnet":     subnet.String(),
				"rangeStart": subnet.Addr().Next().Next().Next().Next().String(), // .4
				"dataDir":    t.TempDir(),
			},
		}},
	})
	a, b, pa, pb := n.attachPair("mv", subnet)
	ipA, ipB := pa[0].Addr(), pb[0].Addr()
	first := subnet.Addr().Next().Next().Next().Next()
	for _, ip := range []netip.Addr{ipA, ipB} {
		if ip.Less(first) {
			t.Errorf("address %s below rangeStart %s", ip, first)
		}
	}
	if a.result.CNIVersion != "0.4.0" {
		t.Errorf("result cniVersion %q, want 0.4.0", a.result.CNIVersion)
	}

	ping(t, a.ns, ipB)
	ping(t, b.ns, ipA)

	checkAll(t, a, b)
	a.delTwice(t, ipA)
	b.delTwice(t, ipB)
}
