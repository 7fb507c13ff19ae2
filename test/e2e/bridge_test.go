package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
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

// TestBridgeEtcd: two "machines" (two configs naming different nodes, as two hosts'
// configs would) attach namespaces to one bridge through cnitool, the bridge plugin and
// local-ipam, which hands the calls to local-ipam-etcd; the addresses come from one pool
// kept in a real etcd. They must be distinct, configured, reachable, listed with their
// node, checked by CHECK, and gone after DEL.
func TestBridgeEtcd(t *testing.T) {
	e := setup(t)
	requireLocalIPAM(t, e, "the etcd store")
	cniexec.Bin(t, "local-ipam-etcd")
	eps := etcdtest.StartEmbedded(t)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.252.%d.0/24", testOctet()))
	gw := subnet.Addr().Next()
	br := linkName(t, "bre")
	cleanupLink(t, br)

	name := uniqueName("etcd")
	machine := func(node string) *cniNet {
		return newNet(t, e, name, bridgeList("1.1.0", br, map[string]any{
			"type":   e.ipam,
			"subnet": subnet.String(),
			"store":  map[string]any{"type": "etcd", "endpoints": eps, "node": node, "prefix": "/e2e"},
		}))
	}
	ma, mb := machine("machine-a"), machine("machine-b")
	var atts []*attachment
	var ips []netip.Addr
	for i, m := range []*cniNet{ma, mb, ma, mb} {
		ns := uniqueName("etcd", fmt.Sprint(i))
		addNetns(t, ns)
		a := m.add(ns)
		got := a.result.prefixes(t)
		if len(got) != 1 || !subnet.Contains(got[0].Addr()) || got[0].Addr() == gw || got[0].Bits() != 24 {
			t.Fatalf("%s: result addresses %v, want one in %s other than the gateway", ns, got, subnet)
		}
		if !slices.Contains(nsAddrs(t, ns, "eth0"), got[0]) {
			t.Fatalf("%s: %s not configured on eth0", ns, got[0])
		}
		if slices.Contains(ips, got[0].Addr()) {
			t.Fatalf("%s given twice across machines", got[0].Addr())
		}
		atts, ips = append(atts, a), append(ips, got[0].Addr())
	}
	// Node-affine blocks (64 addresses by default): each machine's two addresses follow
	// each other in a block of its own.
	block := func(a netip.Addr) netip.Prefix { p, _ := a.Prefix(26); return p }
	if ips[2] != ips[0].Next() || ips[3] != ips[1].Next() || block(ips[0]) == block(ips[1]) {
		t.Errorf("addresses %v (machines a, b, a, b): want each machine's in a block of its own, one after the other", ips)
	}
	ping(t, atts[0].ns, ips[1])
	ping(t, atts[3].ns, ips[2])
	ping(t, atts[1].ns, gw)

	// The operator's view: every reservation with the node that made it.
	conf := filepath.Join(t.TempDir(), "net.conflist")
	if err := os.WriteFile(conf, ma.conf, 0o644); err != nil {
		t.Fatal(err)
	}
	listed := func() map[string]string {
		o := cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, "list", "--conf", conf, "--json")
		if o.Exit != 0 {
			t.Fatalf("list: %s", o)
		}
		var l []struct{ Address, ContainerID, Node string }
		if err := json.Unmarshal([]byte(o.Stdout), &l); err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, r := range l {
			m[r.ContainerID] = r.Address + "@" + r.Node
		}
		return m
	}
	l := listed()
	for i, a := range atts {
		node := "machine-a"
		if i%2 == 1 {
			node = "machine-b"
		}
		if w := ips[i].String() + "@" + node; l[a.id] != w {
			t.Errorf("list: %s holds %q, want %s", a.id, l[a.id], w)
		}
	}

	// CHECK from each machine passes; DEL releases; a second DEL succeeds.
	checkAll(t, atts...)
	for _, a := range atts {
		a.delTwice(t)
	}
	if l := listed(); len(l) != 0 {
		t.Errorf("after DEL of everything the pool holds %v", l)
	}
}
