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
	// Round robin across the cluster: the first four addresses after the gateway.
	want := []netip.Addr{gw.Next(), gw.Next().Next(), gw.Next().Next().Next(), gw.Next().Next().Next().Next()}
	if !slices.Equal(ips, want) {
		t.Errorf("addresses %v, want %v (one cursor for the pool)", ips, want)
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
