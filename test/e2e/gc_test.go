package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// chainedNet writes a cniVersion 1.1.0 list of two plugins: bridge with local-ipam as its IPAM,
// then local-ipam itself with the same ipam section. The second one (chained mode) passes
// ADD's result on and is how GC, which bridge does not forward to its IPAM, reaches the store.
// The bridge is the gateway, as in the other bridge tests: bridge pins its own MAC only when
// it sets the gateway address; otherwise the MAC follows the lowest port's and bridge's CHECK
// of an earlier attachment fails ("Bridge interface ... Mac doesn't match").
func chainedNet(t *testing.T, e *env, tag string, subnet netip.Prefix) *cniNet {
	t.Helper()
	br := linkName(t, tag)
	cleanupLink(t, br)
	preserveSysctls(t, "/proc/sys/net/ipv4/ip_forward")
	ipam := map[string]any{
		"type":    e.ipam,
		"subnet":  subnet.String(),
		"dataDir": t.TempDir(),
	}
	return newNet(t, e, uniqueName(tag), bridgeList("1.1.0", br, ipam, map[string]any{"type": "local-ipam", "ipam": ipam}))
}

// assertRecords checks the network's store holds exactly want (address → owner line).
func assertRecords(t *testing.T, n *cniNet, want map[netip.Addr]string, when string) {
	t.Helper()
	if got := n.records(); !maps.Equal(got, want) {
		t.Fatalf("%s: store records %q, want %q", when, got, want)
	}
}

// TestGCChainedCnitool drives the chained list with cnitool. ADD through both plugins gives
// each namespace one address (the chained local-ipam allocates nothing more) and the
// namespaces reach each other; CHECK and STATUS pass through both plugins. Then `cnitool gc`,
// which calls libcni's GCNetworkList with nil args: libcni DELs every attachment of the
// network in its cache (/var/lib/cni/results), through the list, and sends GC without
// cni.dev/valid-attachments, which means "collect everything", as host-local reads it: a
// reservation of a container cnitool never knew is released too.
func TestGCChainedCnitool(t *testing.T) {
	e := setup(t)
	requireLocalIPAM(t, e, "chained mode (GC through a list)")
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.249.%d.0/28", testOctet()))
	n := chainedNet(t, e, "gcc", subnet)
	a, b, pa, pb := n.attachPair("gcc", subnet) // exactly one address each in the final result
	ipA, ipB := pa[0].Addr(), pb[0].Addr()
	for _, at := range []*attachment{a, b} {
		if len(at.result.Interfaces) == 0 || at.result.CNIVersion != "1.1.0" {
			t.Errorf("%s: the chained plugin did not pass bridge's 1.1.0 result on: %+v", at.ns, at.result)
		}
	}
	assertRecords(t, n, map[netip.Addr]string{ipA: owner(a.id), ipB: owner(b.id)}, "after ADD")
	ping(t, a.ns, ipB)
	ping(t, b.ns, ipA)
	checkAll(t, a, b)
	if out, err := n.cnitool("status", a.path); err != nil {
		t.Fatalf("STATUS: %v\n%s", err, out)
	}

	// A reservation made behind cnitool's back: not in its cache, so no GC DELs it.
	staleID := uniqueName("gcc", "stale")
	ipS := n.ipamAdd(staleID)
	want := map[netip.Addr]string{ipA: owner(a.id), ipB: owner(b.id), ipS: owner(staleID)}
	assertRecords(t, n, want, "after the stale ADD")
	cacheFiles := []string{
		filepath.Join(libcniCacheDir, n.name+"-"+a.id+"-eth0"),
		filepath.Join(libcniCacheDir, n.name+"-"+b.id+"-eth0"),
	}
	for _, f := range cacheFiles {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("cnitool's cache entry: %v", err)
		}
	}

	if out, err := n.cnitool("gc", a.path); err != nil {
		t.Fatalf("cnitool gc (no valid-attachments): %v\n%s", err, out)
	}
	// The cached attachments were DELed through bridge and the chained local-ipam, and the
	// GC released the reservation cnitool never knew.
	assertRecords(t, n, map[netip.Addr]string{}, "after cnitool gc")
	for _, at := range []*attachment{a, b} {
		if linkExists(at.ns, "eth0") {
			t.Errorf("%s: eth0 still present after cnitool gc DELed it", at.ns)
		}
	}
	for _, f := range cacheFiles {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cnitool's cache entry %s still present after gc DELed it (stat: %v)", f, err)
		}
	}

	// cnitool's very call (nil GCArgs), in process, with an empty cache so that only the GC
	// verb is sent: a new stale reservation goes.
	staleID2 := uniqueName("gcc", "stale2")
	ipS2 := n.ipamAdd(staleID2)
	assertRecords(t, n, map[netip.Addr]string{ipS2: owner(staleID2)}, "after the second stale ADD")
	list, err := libcni.ConfListFromBytes(n.conf)
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{e.binDir}, t.TempDir(), nil)
	if err := cni.GCNetworkList(context.Background(), list, nil); err != nil {
		t.Fatalf("libcni GCNetworkList(nil): %v", err)
	}
	assertRecords(t, n, map[netip.Addr]string{}, "after GCNetworkList(nil)")
}

// TestGCLibcni drives the chained list through libcni itself, as containerd and CRI-O do, with
// libcni's cache in a temporary directory. Two containers are attached with AddNetworkList;
// a third reservation is made by a direct IPAM ADD (a container the runtime no longer knows).
// GCNetworkList with the two live attachments removes the stale reservation only, and the live
// containers still reach each other. A second GC that lists only A makes libcni DEL B (cached
// but no longer valid) through the list; A keeps its address.
func TestGCLibcni(t *testing.T) {
	e := setup(t)
	requireLocalIPAM(t, e, "chained mode (GC through a list)")
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.254.%d.0/28", testOctet()))
	n := chainedNet(t, e, "gcl", subnet)
	list, err := libcni.ConfListFromBytes(n.conf)
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	cni := libcni.NewCNIConfigWithCacheDir([]string{e.binDir}, cacheDir, nil)
	ctx := context.Background()

	attach := func(role string) *attachment {
		t.Helper()
		ns := uniqueName("gcl", role)
		a := &attachment{net: n, ns: ns, path: addNetns(t, ns), id: ns, ifname: "eth0"}
		rt := &libcni.RuntimeConf{ContainerID: a.id, NetNS: a.path, IfName: a.ifname}
		t.Cleanup(func() { _ = cni.DelNetworkList(context.Background(), list, rt) })
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			t.Fatalf("AddNetworkList %s: %v", ns, err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &a.result); err != nil {
			t.Fatalf("AddNetworkList %s: %v\n%s", ns, err, out)
		}
		t.Logf("AddNetworkList %s: %s", ns, out)
		return a
	}
	checkLive := func(ats ...*attachment) {
		t.Helper()
		for _, at := range ats {
			rt := &libcni.RuntimeConf{ContainerID: at.id, NetNS: at.path, IfName: at.ifname}
			if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("CheckNetworkList %s: %v", at.ns, err)
			}
		}
	}
	gcAttachment := func(at *attachment) types.GCAttachment {
		return types.GCAttachment{ContainerID: at.id, IfName: at.ifname}
	}

	a, b := attach("a"), attach("b")
	ipA := assertAttached(t, a, subnet)[0].Addr()
	ipB := assertAttached(t, b, subnet)[0].Addr()
	if ipA == ipB {
		t.Fatalf("both namespaces got %s", ipA)
	}
	live := map[netip.Addr]string{ipA: owner(a.id), ipB: owner(b.id)}
	assertRecords(t, n, live, "after ADD")

	staleID := uniqueName("gcl", "stale")
	ipS := n.ipamAdd(staleID)
	withStale := maps.Clone(live)
	withStale[ipS] = owner(staleID)
	assertRecords(t, n, withStale, "after the stale ADD")

	// GC as the runtime sends it: both live attachments valid. Nothing for libcni to DEL;
	// bridge ignores GC; the chained local-ipam releases the stale reservation.
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{
		ValidAttachments: []types.GCAttachment{gcAttachment(a), gcAttachment(b)},
	}); err != nil {
		t.Fatalf("GCNetworkList: %v", err)
	}
	assertRecords(t, n, live, "after GC")
	ping(t, a.ns, ipB)
	ping(t, b.ns, ipA)
	checkLive(a, b)

	// B's container is gone as far as the runtime knows: libcni DELs it, local-ipam keeps A.
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{
		ValidAttachments: []types.GCAttachment{gcAttachment(a)},
	}); err != nil {
		t.Fatalf("GCNetworkList with A only: %v", err)
	}
	assertRecords(t, n, map[netip.Addr]string{ipA: owner(a.id)}, "after GC with A only")
	if linkExists(b.ns, "eth0") {
		t.Errorf("%s: eth0 still present after libcni DELed it", b.ns)
	}
	if cached, err := cni.GetCachedAttachments(""); err != nil || len(cached) != 1 || cached[0].ContainerID != a.id {
		t.Errorf("libcni cache after GC with A only: %v %v, want A's attachment alone", cached, err)
	}
	checkLive(a)

	// A's container is gone too: the runtime has no live attachment and libcni sends the
	// nil list as null. libcni DELs A; local-ipam releases everything, a new stale
	// reservation included.
	ipS2 := n.ipamAdd(staleID + "2")
	assertRecords(t, n, map[netip.Addr]string{ipA: owner(a.id), ipS2: owner(staleID + "2")}, "after the second stale ADD")
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GCNetworkList with no attachment: %v", err)
	}
	assertRecords(t, n, map[netip.Addr]string{}, "after GC with no attachment")
	if linkExists(a.ns, "eth0") {
		t.Errorf("%s: eth0 still present after libcni DELed it", a.ns)
	}
}
