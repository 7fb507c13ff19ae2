package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// assertAttached checks an attachment got exactly one address from each subnet (in that
// order of families), that none is the subnet's gateway (.1 / ::1, the default), that the
// addresses are really configured on the interface inside the namespace, and that each has its
// store record. It returns the addresses.
func assertAttached(t *testing.T, a *attachment, subnets ...netip.Prefix) []netip.Prefix {
	t.Helper()
	got := a.result.prefixes(t)
	if len(got) != len(subnets) {
		t.Fatalf("%s: result has %d addresses %v, want one per range set %v", a.ns, len(got), got, subnets)
	}
	inNs := nsAddrs(t, a.ns, a.ifname)
	for i, sn := range subnets {
		p := got[i]
		if p.Bits() != sn.Bits() || !sn.Contains(p.Addr()) {
			t.Errorf("%s: address %s not inside %s", a.ns, p, sn)
		}
		if p.Addr() == sn.Addr().Next() {
			t.Errorf("%s: got the gateway address %s", a.ns, p)
		}
		if !slices.Contains(inNs, p) {
			t.Errorf("%s: %s not configured on %s (have %v)", a.ns, p, a.ifname, inNs)
		}
		a.assertRecord(t, p.Addr())
	}
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// TestBridgeIPv4 attaches two namespaces to a bridge with the IPAM plugin under test handing
// out addresses from a single legacy `subnet`, and walks ADD, connectivity, CHECK and DEL.
func TestBridgeIPv4(t *testing.T) {
	e := setup(t)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.250.%d.0/24", testOctet()))
	gw := subnet.Addr().Next()
	br := linkName(t, "br4")
	cleanupLink(t, br)
	preserveSysctls(t, "/proc/sys/net/ipv4/ip_forward")

	n := newNet(t, e, uniqueName("br4"), bridgeList("1.1.0", br, map[string]any{
		"type":    e.ipam,
		"subnet":  subnet.String(),
		"dataDir": t.TempDir(),
		"routes":  []map[string]any{{"dst": "0.0.0.0/0"}},
	}))

	// ADD: distinct addresses inside the subnet, configured in the namespaces, recorded.
	a, b, pa, pb := n.attachPair("br4", subnet)
	nsA, nsB := a.ns, b.ns
	ipA, ipB := pa[0].Addr(), pb[0].Addr()
	for _, at := range []*attachment{a, b} {
		if at.result.CNIVersion != "1.1.0" {
			t.Errorf("%s: result cniVersion %q, want 1.1.0", at.ns, at.result.CNIVersion)
		}
		if g := at.result.IPs[0].Gateway; g != gw.String() {
			t.Errorf("%s: result gateway %q, want %s", at.ns, g, gw)
		}
		if !slices.ContainsFunc(at.result.Routes, func(r cniRoute) bool { return r.Dst == "0.0.0.0/0" }) {
			t.Errorf("%s: result routes %v lack 0.0.0.0/0", at.ns, at.result.Routes)
		}
		if g := nsDefaultGateway(t, at.ns, false); g != gw.String() {
			t.Errorf("%s: default route via %q, want %s", at.ns, g, gw)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Connectivity: A reaches B across the bridge and the gateway on the bridge.
	ping(t, nsA, ipB)
	ping(t, nsA, gw)
	ping(t, nsB, ipA)

	// CHECK passes for both; it fails once A's reservation is missing from the store.
	checkAll(t, a, b)
	// (Moved out of the network directory: host-local's CHECK finds a record by content
	// anywhere below it.)
	rec, aside := n.recordPath(ipA), filepath.Join(t.TempDir(), "record")
	if err := os.Rename(rec, aside); err != nil {
		t.Fatal(err)
	}
	checkErr := a.check()
	if err := os.Rename(aside, rec); err != nil {
		t.Fatal(err)
	}
	if checkErr == nil {
		t.Errorf("CHECK %s passed with its store record %s missing", nsA, rec)
	}

	// DEL releases A's address and removes its interface; a second DEL succeeds.
	a.delTwice(t, ipA)
	b.assertRecord(t, ipB) // B untouched

	// DEL after the namespace is gone still releases the address.
	delNetns(nsB)
	if err := b.del(); err != nil {
		t.Fatalf("DEL %s after its netns was deleted: %v", nsB, err)
	}
	n.assertNoRecord(t, ipB)

	// A new ADD does not immediately reuse the addresses just released (round-robin).
	a2 := n.add(nsA)
	ipA2 := assertAttached(t, a2, subnet)[0].Addr()
	if ipA2 == ipA || ipA2 == ipB {
		t.Errorf("re-ADD got %s, a just-released address (released %s, %s)", ipA2, ipA, ipB)
	}
	if err := a2.del(); err != nil {
		t.Fatalf("DEL %s: %v", nsA, err)
	}
	n.assertNoRecord(t, ipA2)
}

// TestBridgeDualStack gives each namespace one IPv4 and one IPv6 address from two `ranges`
// sets. The bridge plugin turns off DAD on the container interface (enabledad defaults to
// false), so container addresses are usable at once; only the IPv6 gateway on the bridge in
// the root namespace goes through DAD (about a second), which the test waits out.
func TestBridgeDualStack(t *testing.T) {
	e := setup(t)
	sn4 := netip.MustParsePrefix(fmt.Sprintf("10.251.%d.0/24", testOctet()))
	sn6 := netip.MustParsePrefix(fmt.Sprintf("fd00:e2e:%x::/64", testOctet()))
	br := linkName(t, "br6")
	cleanupLink(t, br)
	preserveSysctls(t, "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")

	n := newNet(t, e, uniqueName("br6"), bridgeList("1.0.0", br, map[string]any{
		"type":    e.ipam,
		"dataDir": t.TempDir(),
		"ranges": [][]map[string]any{
			{{"subnet": sn4.String()}},
			{{"subnet": sn6.String()}},
		},
		"routes": []map[string]any{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}},
	}))
	a, b, pa, pb := n.attachPair("br6", sn4, sn6)
	nsA := a.ns
	gw6 := sn6.Addr().Next()
	if g := nsDefaultGateway(t, nsA, true); g != gw6.String() {
		t.Errorf("%s: IPv6 default route via %q, want %s", nsA, g, gw6)
	}

	ping(t, nsA, pb[0].Addr())
	ping(t, nsA, pb[1].Addr())
	ping(t, nsA, sn4.Addr().Next())
	waitDAD(t, br, gw6) // the bridge's gateway address runs DAD in the root namespace
	ping(t, nsA, gw6)

	checkAll(t, a, b)
	a.delTwice(t, pa[0].Addr(), pa[1].Addr())
	b.delTwice(t, pb[0].Addr(), pb[1].Addr())
}
