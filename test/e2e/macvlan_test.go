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
	nsA, nsB := uniqueName("mv", "a"), uniqueName("mv", "b")
	addNetns(t, nsA)
	addNetns(t, nsB)

	a, b := n.add(nsA), n.add(nsB)
	ipA := assertAttached(t, a, subnet)[0].Addr()
	ipB := assertAttached(t, b, subnet)[0].Addr()
	if ipA == ipB {
		t.Fatalf("both namespaces got %s", ipA)
	}
	first := subnet.Addr().Next().Next().Next().Next()
	for _, ip := range []netip.Addr{ipA, ipB} {
		if ip.Less(first) {
			t.Errorf("address %s below rangeStart %s", ip, first)
		}
	}
	if a.result.CNIVersion != "0.4.0" {
		t.Errorf("result cniVersion %q, want 0.4.0", a.result.CNIVersion)
	}

	ping(t, nsA, ipB)
	ping(t, nsB, ipA)

	for _, at := range []*attachment{a, b} {
		if err := at.check(); err != nil {
			t.Fatalf("CHECK %s: %v", at.ns, err)
		}
	}
	for _, x := range []struct {
		at *attachment
		ip netip.Addr
	}{{a, ipA}, {b, ipB}} {
		if err := x.at.del(); err != nil {
			t.Fatalf("DEL %s: %v", x.at.ns, err)
		}
		n.assertNoRecord(t, x.ip)
		if linkExists(x.at.ns, "eth0") {
			t.Errorf("%s: eth0 still present after DEL", x.at.ns)
		}
		if err := x.at.del(); err != nil {
			t.Fatalf("second DEL %s: %v", x.at.ns, err)
		}
	}
}
