package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

func own(id, ifname string) store.Owner { return store.Owner{ID: id, IfName: ifname} }

func mustReserve(t testing.TB, s *Store, a string, o store.Owner) {
	t.Helper()
	if ok, err := s.Reserve(netip.MustParseAddr(a), o); err != nil || !ok {
		t.Fatalf("Reserve(%s, %q) = %v, %v", a, o.Key(), ok, err)
	}
}

func sorted(as []netip.Addr) string {
	slices.SortFunc(as, netip.Addr.Compare)
	return fmt.Sprint(as)
}

func TestGCTouchesOnlyThisNode(t *testing.T) {
	network := newNetwork()
	a := mustOpen(t, cfgFor(shared, "node-a"), network)
	b := mustOpen(t, cfgFor(shared, "node-b"), network)
	mustReserve(t, a, "10.0.0.1", own("c1", "eth0")) // valid
	mustReserve(t, a, "10.0.0.2", own("c1", "eth1")) // stale: c1 has no eth1
	mustReserve(t, a, "10.0.0.3", own("c1", ""))     // ID-only, c1 has a valid attachment: kept
	mustReserve(t, a, "10.0.0.4", own("c2", ""))     // ID-only, c2 has none: stale
	mustReserve(t, a, "fd00::5", own("c3", "eth0"))  // stale
	mustReserve(t, b, "10.0.0.6", own("c4", "eth0")) // stale, but node b's
	mustReserve(t, b, "10.0.0.7", own("c1", "eth1")) // node b's
	removed, err := a.GC([]types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(removed); got != "[10.0.0.2 10.0.0.4 fd00::5]" {
		t.Errorf("GC removed %s", got)
	}
	c := mustOpen(t, cfgFor(shared, "node-c"), network)
	for addr, want := range map[string]string{"10.0.0.1": "c1\r\neth0", "10.0.0.3": "c1", "10.0.0.6": "c4\r\neth0", "10.0.0.7": "c1\r\neth1", "10.0.0.2": "", "10.0.0.4": "", "fd00::5": ""} {
		o, ok, err := c.Holder(netip.MustParseAddr(addr))
		if err != nil || ok != (want != "") || (ok && o.Key() != want) {
			t.Errorf("after GC, Holder(%s) = %q, %v, %v; want %q", addr, o.Key(), ok, err, want)
		}
	}
	// GC of node b with nothing valid empties node b only.
	removed, err = b.GC(nil)
	if err != nil || sorted(removed) != "[10.0.0.6 10.0.0.7]" {
		t.Errorf("GC(nil) on node b = %v, %v", removed, err)
	}
	wantLeft(t, c, 2)
}

func TestGCManyInBatches(t *testing.T) {
	network := newNetwork()
	s := mustOpen(t, cfgFor(shared, "node-a"), network)
	other := mustOpen(t, cfgFor(shared, "node-b"), network)
	var valid []types.GCAttachment
	want := 0
	for i := range 130 {
		a := fmt.Sprintf("10.1.%d.%d", i/50, i%50+1)
		o := own(fmt.Sprintf("c%d", i), "eth0")
		if i%20 == 19 {
			mustReserve(t, other, a, o)
			continue
		}
		mustReserve(t, s, a, o)
		if i%3 == 0 {
			valid = append(valid, types.GCAttachment{ContainerID: o.ID, IfName: o.IfName})
		} else {
			want++
		}
	}
	removed, err := s.GC(valid)
	if err != nil || len(removed) != want {
		t.Fatalf("GC removed %d, %v; want %d", len(removed), err, want)
	}
	wantLeft(t, other, 130-want)
}

func TestFreeOnRebootOnlyThisNode(t *testing.T) {
	network := newNetwork()
	a := mustOpen(t, cfgFor(shared, "node-a"), network)
	b := mustOpen(t, cfgFor(shared, "node-b"), network)
	if n, err := a.FreeOnReboot("boot-1"); err != nil || n != 0 {
		t.Fatalf("first FreeOnReboot = %d, %v", n, err)
	}
	if n, err := b.FreeOnReboot("boot-b"); err != nil || n != 0 {
		t.Fatalf("first FreeOnReboot on b = %d, %v", n, err)
	}
	mustReserve(t, a, "10.0.0.1", own("c1", "eth0"))
	mustReserve(t, a, "10.0.0.2", own("c2", "eth0"))
	mustReserve(t, b, "10.0.0.3", own("c3", "eth0"))
	// Each call opens a Store and frees on reboot first, as the plugin does.
	call := func() *Store { return mustOpen(t, cfgFor(shared, "node-a"), network) }
	if n, err := call().FreeOnReboot("boot-1\n"); err != nil || n != 0 {
		t.Fatalf("same boot: FreeOnReboot = %d, %v", n, err)
	}
	if n, err := call().FreeOnReboot("boot-2"); err != nil || n != 2 {
		t.Fatalf("after reboot: FreeOnReboot = %d, %v; want 2", n, err)
	}
	if n, err := call().FreeOnReboot("boot-2"); err != nil || n != 0 {
		t.Fatalf("second call of the boot: FreeOnReboot = %d, %v", n, err)
	}
	held := checkConsistent(t, etcdtest.Client(t, shared), a)
	if len(held) != 1 || held[netip.MustParseAddr("10.0.0.3")] != "c3\r\neth0" {
		t.Errorf("left after node a rebooted: %v", held)
	}
}

func TestCountReservedEdges(t *testing.T) {
	s := mustOpen(t, cfgFor(shared, "node-a"), newNetwork())
	for _, a := range []string{"0.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.255", "10.0.1.0", "255.255.255.255", "::", "::a00:1", "fd00::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		mustReserve(t, s, a, own("c-"+a, "eth0"))
	}
	for _, c := range []struct {
		from, to string
		want     int
	}{
		{"10.0.0.1", "10.0.0.1", 1},
		{"10.0.0.1", "10.0.0.2", 2},
		{"10.0.0.2", "10.0.0.254", 1},
		{"10.0.0.3", "10.0.0.254", 0},
		{"10.0.0.255", "10.0.1.0", 2},
		{"10.0.0.0", "10.0.1.255", 4},
		{"0.0.0.0", "255.255.255.255", 6},
		{"255.255.255.255", "255.255.255.255", 1},
		{"0.0.0.0", "0.0.0.0", 1},
		{"10.0.0.2", "10.0.0.1", 0},                          // reversed
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 4}, // IPv4 is not in IPv6 space
		{"::a00:1", "::a00:1", 1},
		{"fd00::", "fd00::1", 1},
		{"10.0.0.1", "fd00::1", 0}, // mixed families
	} {
		n, err := s.CountReserved(netip.MustParseAddr(c.from), netip.MustParseAddr(c.to))
		if err != nil || n != c.want {
			t.Errorf("CountReserved(%s, %s) = %d, %v; want %d", c.from, c.to, n, err, c.want)
		}
	}
}

func TestRecordsAndNetworks(t *testing.T) {
	prefix := fmt.Sprintf("/records-test-%d", time.Now().UnixNano())
	cfg := cfgFor(shared, "node-a")
	cfg.Prefix = prefix + "/" // a trailing slash is ignored
	s := mustOpen(t, cfg, "big")
	addrs := make([]netip.Addr, 1200) // more than one listBatch
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 2, byte(i / 256), byte(i % 256)})
	}
	before := time.Now().Add(-time.Second)
	bulkReserve(t, etcdtest.Client(t, shared), s, addrs, func(i int) store.Owner { return own(fmt.Sprintf("c%d", i), "eth0") })
	seen := map[netip.Addr]bool{}
	err := s.Records(func(r Record) error {
		if seen[r.Addr] {
			t.Errorf("%s twice", r.Addr)
		}
		seen[r.Addr] = true
		i := int(r.Addr.As4()[2])*256 + int(r.Addr.As4()[3])
		if r.Owner != own(fmt.Sprintf("c%d", i), "eth0") || r.Node != "node-a" || r.Created.Before(before) {
			t.Errorf("record %+v", r)
		}
		return nil
	})
	if err != nil || len(seen) != len(addrs) {
		t.Fatalf("Records: %d, %v", len(seen), err)
	}
	for _, n := range []string{"small", "other"} {
		s := mustOpen(t, cfg, n)
		mustReserve(t, s, "10.0.0.1", own("x", "eth0"))
	}
	mustOpen(t, cfg, "empty") // opened, nothing written: not a network yet
	nets, err := Networks(cfg)
	if err != nil || fmt.Sprint(nets) != "[big other small]" {
		t.Errorf("Networks = %v, %v", nets, err)
	}
}

func TestErrors(t *testing.T) {
	code := func(err error) uint {
		if err == nil {
			return 0
		}
		if _, ok := err.(*types.Error); !ok {
			t.Errorf("%v (%T) is not a *types.Error", err, err)
		}
		return cnierr.Code(err)
	}
	for _, n := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := Open(cfgFor(shared, "n"), n); code(err) != cnierr.InvalidConfig {
			t.Errorf("Open(network %q) = %v; want code 7", n, err)
		}
	}
	for _, n := range []string{"", "a/b", "a\nb"} {
		if _, err := Open(cfgFor(shared, n), "net"); code(err) != cnierr.InvalidConfig {
			t.Errorf("Open(node %q) = %v; want code 7", n, err)
		}
	}
	if _, err := Open(Config{Node: "n"}, "net"); code(err) != cnierr.InvalidConfig {
		t.Errorf("Open without endpoints = %v; want code 7", err)
	}
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for _, c := range []Config{
		{Endpoints: shared, Node: "n", TrustedCAFile: filepath.Join(dir, "missing.pem")},
		{Endpoints: shared, Node: "n", TrustedCAFile: garbage},
		{Endpoints: shared, Node: "n", CertFile: garbage, KeyFile: garbage},
		{Endpoints: shared, Node: "n", CertFile: garbage},
	} {
		if _, err := Open(c, "net"); code(err) != cnierr.InvalidConfig {
			t.Errorf("Open(%+v) = %v; want code 7", c, err)
		}
	}

	// Nothing listens there: code 11 within the timeout, naming the endpoint.
	ports, _ := freePortsForTest(t)
	dead := fmt.Sprintf("http://127.0.0.1:%d", ports)
	start := time.Now()
	_, err := Open(Config{Endpoints: []string{dead}, Node: "n", Timeout: time.Second}, "net")
	if code(err) != cnierr.TryAgainLater || !strings.Contains(err.Error(), dead) {
		t.Errorf("Open(dead endpoint) = %v; want code 11 naming it", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open(dead endpoint) took %s with a 1s timeout", d)
	}
	_, err = Networks(Config{Endpoints: []string{dead}, Node: "n", Timeout: time.Second})
	if code(err) != cnierr.TryAgainLater {
		t.Errorf("Networks(dead endpoint) = %v; want code 11", err)
	}

	// Corrupt values: code 104 naming the key.
	network := newNetwork()
	s := mustOpen(t, cfgFor(shared, "n"), network)
	cli := etcdtest.Client(t, shared)
	put := func(k, v string) { etcdtest.Put(t, cli, k, v) }
	corruptPage, _ := s.pageOf(netip.MustParseAddr("10.0.0.0"))
	put(s.pageKey(corruptPage), "short")
	s = mustOpen(t, cfgFor(shared, "n"), network)
	if _, _, err := s.FirstFree(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.9")); code(err) != cnierr.StoreCorrupt || !strings.Contains(err.Error(), s.pageKey(corruptPage)) {
		t.Errorf("FirstFree over a corrupt page = %v; want code 104 naming it", err)
	}
	if _, err := s.Reserve(netip.MustParseAddr("10.0.0.1"), own("c", "eth0")); code(err) != cnierr.StoreCorrupt {
		t.Errorf("Reserve in a corrupt page = %v; want code 104", err)
	}
	o := own("c", "eth0")
	put(s.ownerKey(o.Key(), netip.MustParseAddr("10.9.0.1")), "{not json")
	if _, err := s.Owned(o); code(err) != cnierr.StoreCorrupt || !strings.Contains(err.Error(), s.ownerPrefix(o.Key())) {
		t.Errorf("Owned with a corrupt entry = %v; want code 104 naming it", err)
	}
	if err := s.Records(func(Record) error { return nil }); code(err) != cnierr.StoreCorrupt {
		t.Errorf("Records with a corrupt entry = %v; want code 104", err)
	}
	put(s.nodeKey("n", netip.MustParseAddr("10.9.0.2")), "")
	// The first GC binds node n and frees nothing (GC); the next one reads its index.
	if _, err := s.GC(nil); err != nil {
		t.Fatalf("GC binding the node = %v", err)
	}
	if _, err := s.GC(nil); code(err) != cnierr.StoreCorrupt {
		t.Errorf("GC with a corrupt entry = %v; want code 104", err)
	}
	put(s.ipKey(netip.MustParseAddr("10.9.0.3")), "c\r\neth0") // no index entries
	if _, err := s.Release(netip.MustParseAddr("10.9.0.3"), o); code(err) != cnierr.StoreCorrupt {
		t.Errorf("Release of a reservation without its index = %v; want code 104", err)
	}
	if err := s.Writable(); err != nil {
		t.Errorf("Writable = %v", err)
	}
	// Closed twice is fine; a closed store answers with an error, not a hang.
	s.Close()
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, _, err := s.Holder(netip.MustParseAddr("10.0.0.1")); code(err) == 0 {
		t.Errorf("Holder on a closed store succeeded")
	}
}

func freePortsForTest(t *testing.T) (int, error) {
	t.Helper()
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*netTCPAddr).Port
	l.Close()
	return port, nil
}

// bulkReserve writes reservations as Reserve does (the same keys and values), many to a
// transaction, to build big pools quickly. The network must have none of these.
func bulkReserve(t testing.TB, cli *clientv3.Client, s *Store, addrs []netip.Addr, owner func(int) store.Owner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pages := map[pageID]*page{}
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	now := time.Now().UTC()
	for i, a := range addrs {
		o := owner(i)
		v, _ := json.Marshal(entry{Owner: o.Key(), Node: s.cfg.Node, Created: now, Token: "bulk"})
		ops = append(ops, clientv3.OpPut(s.ipKey(a), o.Key()), clientv3.OpPut(s.ownerKey(o.Key(), a), string(v)), clientv3.OpPut(s.nodeKey(s.cfg.Node, a), string(v)))
		if len(ops) >= 120 {
			flush()
		}
		p, off := s.pageOf(a)
		if pages[p] == nil {
			pages[p] = &page{bits: make([]byte, s.pbytes)}
		}
		pages[p].bits[off>>3] |= 1 << (off & 7)
	}
	flush()
	for p, pg := range pages {
		ops = append(ops, clientv3.OpPut(s.pageKey(p), string(pg.bits)))
		if allOnes(pg.bits, s.pbytes) {
			ops = append(ops, clientv3.OpPut(s.fullKey(p), ""))
		}
		if s.blk.on { // the node holds the blocks it reserved in
			ops = append(ops, clientv3.OpPut(s.blockKey(p), s.cfg.Node), clientv3.OpPut(s.nblockKey(s.cfg.Node, p), ""))
		}
		if len(ops) >= 120 {
			flush()
		}
	}
	flush()
}

// TestBigPoolBoundedRoundTrips fills a /16 with 50,000 reservations and checks that
// FirstFree and a whole ADD cost a few round trips, whatever the size.
func TestBigPoolBoundedRoundTrips(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 50,000-reservation pool")
	}
	// A member process of its own: built without the race detector, it loads the pool
	// many times faster than the embedded server does under -race.
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	network := newNetwork()
	cfg := cfgFor(eps, "node-a")
	cfg.BlockSize = 0 // the cluster-wide round robin's order (TestBlocksRoundTrips: blocks)
	s := mustOpen(t, cfg, network)
	base := netip.MustParseAddr("10.50.0.2")
	const n = 50000
	addrs := make([]netip.Addr, 0, n)
	hole := netip.Addr{}
	for a, i := base, 0; i < n+1; a, i = a.Next(), i+1 {
		if i == n-7 {
			hole = a // the one free address, near the end
			continue
		}
		addrs = append(addrs, a)
	}
	last := addrs[len(addrs)-1]
	bulkReserve(t, etcdtest.Client(t, eps), s, addrs, func(i int) store.Owner { return own(fmt.Sprintf("c%d", i), "eth0") })
	s = mustOpen(t, cfg, network) // the first one's time is up
	if c, err := s.CountReserved(base, last); err != nil || c != n {
		t.Fatalf("CountReserved = %d, %v", c, err)
	}

	s = mustOpen(t, cfg, network)
	rt := s.RoundTrips()
	got, ok, err := s.FirstFree(base, netip.MustParseAddr("10.50.255.254"))
	if err != nil || !ok || got != hole {
		t.Fatalf("FirstFree = %v, %v, %v; want %v", got, ok, err, hole)
	}
	t.Logf("FirstFree over %d reservations: %d round trips", n, s.RoundTrips()-rt)
	if d := s.RoundTrips() - rt; d > 4 {
		t.Errorf("FirstFree near full took %d round trips", d)
	}
	// Nothing free from the start to the last reservation but the hole.
	rt = s.RoundTrips()
	if a, ok, err := s.FirstFree(hole.Next(), last); err != nil || ok {
		t.Fatalf("FirstFree over a full stretch = %v, %v, %v", a, ok, err)
	}
	if d := s.RoundTrips() - rt; d > 4 {
		t.Errorf("FirstFree over a full stretch took %d round trips", d)
	}

	// A whole ADD (Open's probe, which reads the cursors; Owned of the attachment and its
	// ID-only form in one read; FirstFree; Reserve with the cursor in its transaction)
	// into the nearly full pool: 5 round trips.
	r, err := ranges.New(netip.MustParsePrefix("10.50.0.0/16"), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg, network)
	as, err := allocator.Allocate(s, ranges.Pool{Sets: []ranges.Set{{r}}}, own("new", "eth0"), nil)
	if err != nil || as[0].Addr != hole {
		t.Fatalf("Allocate = %v, %v; want %v", as, err, hole)
	}
	t.Logf("ADD into a pool of %d: %d round trips (Open included)", n, s.RoundTrips())
	if s.RoundTrips() > 5 {
		t.Errorf("ADD took %d round trips", s.RoundTrips())
	}
	// The next ADD finds the pool past the hole full up to the cursor's end, wraps and
	// finds what is left after the 50,000 (the /16 is bigger).
	s = mustOpen(t, cfg, network)
	as, err = allocator.Allocate(s, ranges.Pool{Sets: []ranges.Set{{r}}}, own("new2", "eth0"), nil)
	if err != nil || as[0].Addr != last.Next() {
		t.Fatalf("Allocate = %v, %v; want %v", as, err, last.Next())
	}
	t.Logf("ADD that wraps in a pool of %d: %d round trips (Open included)", n, s.RoundTrips())
	if s.RoundTrips() > 6 {
		t.Errorf("second ADD took %d round trips", s.RoundTrips())
	}
	// DEL of one attachment.
	s = mustOpen(t, cfg, network)
	if freed, _, err := allocator.Release(s, own("c77", "eth0")); err != nil || len(freed) != 1 {
		t.Fatalf("Release = %v, %v", freed, err)
	}
	t.Logf("DEL in a pool of %d: %d round trips (Open included)", n, s.RoundTrips())
	if s.RoundTrips() > 6 {
		t.Errorf("DEL took %d round trips", s.RoundTrips())
	}
}

var netListen = func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

type netTCPAddr = net.TCPAddr

// A GC that takes longer than the timeout as a whole is not cut short: each batch has the
// timeout of its own (renew). Batches are slowed down so that the whole GC takes several
// timeouts whatever the machine.
func TestGCLongerThanTimeout(t *testing.T) {
	network := newNetwork()
	filler := mustOpen(t, cfgFor(shared, "node-a"), network)
	const n = 10 * batchRecords
	for i := range n {
		mustReserve(t, filler, fmt.Sprintf("10.2.0.%d", i+1), own(fmt.Sprintf("c%d", i), "eth0"))
	}
	cfg := cfgFor(shared, "node-a")
	cfg.Timeout = 500 * time.Millisecond
	s := mustOpen(t, cfg, network)
	afterBatch = func() { time.Sleep(150 * time.Millisecond) }
	defer func() { afterBatch = nil }()
	start := time.Now()
	removed, err := s.GC(nil)
	if err != nil || len(removed) != n {
		t.Fatalf("GC over %v removed %d of %d: %v", time.Since(start), len(removed), n, err)
	}
	if took := time.Since(start); took < 2*cfg.Timeout {
		t.Fatalf("the GC took %v: it did not outlast the timeout, the test tests nothing", took)
	}
	wantLeft(t, s, 0)
}

// TestListCompacted: a listing longer than one round trip (GC, release --node, list) reads
// every page at the revision of its first; if etcd compacts that revision away meanwhile,
// the call is told to try again (code 11, which reads anew), not that the store failed.
func TestListCompacted(t *testing.T) {
	s := mustOpen(t, cfgFor(etcdtest.StartEmbedded(t), "node-a"), newNetwork())
	ctx := context.Background()
	pre := s.base + "listed/"
	ops := make([]clientv3.Op, 0, 100)
	for i := range listBatch + 10 {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%04d", pre, i), ""))
		if len(ops) == cap(ops) || i == listBatch+9 {
			if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	n, compacted := 0, false
	err := s.list("list the test keys", pre, prefixEnd(pre), true, func(*mvccpb.KeyValue) error {
		n++
		if !compacted {
			compacted = true
			r, err := s.cli.Put(ctx, s.base+"other", "")
			if err == nil {
				_, err = s.cli.Compact(ctx, r.Header.Revision)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if cnierr.Code(err) != cnierr.TryAgainLater || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("listing past a compaction: want code 11 saying so, got %v (after %d keys)", err, n)
	}
	n = 0
	if err := s.list("list the test keys", pre, prefixEnd(pre), true, func(*mvccpb.KeyValue) error { n++; return nil }); err != nil || n != listBatch+10 {
		t.Fatalf("the listing again: %d keys, %v; want %d", n, err, listBatch+10)
	}
}
