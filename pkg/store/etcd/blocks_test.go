package etcd

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

func blockCfg(eps []string, node string, size int) Config {
	c := cfgFor(eps, node)
	c.BlockSize = size
	return c
}

func poolOf(t testing.TB, subnet, start, end, gw string) ranges.Pool {
	t.Helper()
	return ranges.Pool{Sets: []ranges.Set{{storetest.Range(t, subnet, start, end, gw)}}}
}

// addAs allocates for id from a Store of its own (one CNI call).
func addAs(t testing.TB, cfg Config, network string, pool ranges.Pool, id string) (netip.Addr, error) {
	t.Helper()
	s := mustOpen(t, cfg, network)
	defer s.Close()
	as, err := allocator.Allocate(s, pool, own(id, "eth0"), nil)
	if err != nil {
		return netip.Addr{}, err
	}
	return as[0].Addr, nil
}

// addN ADDs n containers prefix0, prefix1, ... with cfg, and returns who got which address.
func addN(t testing.TB, cfg Config, network string, pool ranges.Pool, prefix string, n int) map[netip.Addr]string {
	t.Helper()
	ids := map[netip.Addr]string{}
	for i := range n {
		id := fmt.Sprintf("%s%d", prefix, i)
		a, err := addAs(t, cfg, network, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		ids[a] = id
	}
	return ids
}

// fillUp ADDs until the pool answers code 100, the i-th ADD with cfg(i) for container
// prefix<i>; it returns the addresses given, failing on one given twice.
func fillUp(t testing.TB, network string, pool ranges.Pool, prefix string, cfg func(i int) Config) map[netip.Addr]bool {
	t.Helper()
	got := map[netip.Addr]bool{}
	for i := 0; ; i++ {
		a, err := addAs(t, cfg(i), network, pool, fmt.Sprintf("%s%d", prefix, i))
		if cnierr.Code(err) == cnierr.NoFreeAddress {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if got[a] {
			t.Fatalf("%s given twice", a)
		}
		got[a] = true
	}
}

func delAs(t testing.TB, cfg Config, network, id string) {
	t.Helper()
	s := mustOpen(t, cfg, network)
	defer s.Close()
	if _, _, err := allocator.Release(s, own(id, "eth0")); err != nil {
		t.Fatal(err)
	}
}

func blocksOf(t testing.TB, cfg Config, network string) []BlockInfo {
	t.Helper()
	s := mustOpen(t, cfg, network)
	defer s.Close()
	bs, err := s.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// TestBlocksFillExactly: 16 machines (processes with node names of their own) fill a /24
// at once: every free address is handed out exactly once, then each gets code 100.
func TestBlocksFillExactly(t *testing.T) {
	network := newNetwork()
	got, perNode := allocateInProcesses(t, network, "10.91.0.0/24", 16, 64, func(node string) string { return node })
	if len(got) != 253 {
		t.Errorf("%d addresses handed out, want all 253", len(got))
	}
	t.Logf("addresses per machine: %v", perNode)
	s := mustOpen(t, blockCfg(shared, "check", 64), network)
	if held := checkConsistent(t, etcdtest.Client(t, shared), s); len(held) != 253 {
		t.Errorf("%d reservations in etcd, want 253", len(held))
	}
}

// TestBlocksAffinity: a machine that keeps creating and deleting one pod keeps its block:
// no block is claimed or given back per pod, and the cursor walks on within the block.
func TestBlocksAffinity(t *testing.T) {
	network := newNetwork()
	cfg := blockCfg(shared, "node-a", 64)
	pool := poolOf(t, "10.92.0.0/16", "", "", "")
	seen := map[netip.Addr]bool{}
	for i := range 40 {
		a, err := addAs(t, cfg, network, pool, "pod")
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Errorf("ADD %d reused %s at once (round robin within the block)", i, a)
		}
		seen[a] = true
		delAs(t, cfg, network, "pod")
	}
	bs := blocksOf(t, cfg, network)
	if len(bs) != 1 || bs[0].Node != "node-a" || bs[0].InUse != 0 {
		t.Fatalf("blocks after 40 create/delete: %+v; want one empty block of node-a", bs)
	}
	cli := etcdtest.Client(t, shared)
	s := mustOpen(t, cfg, network)
	p, _ := s.pageOf(bs[0].Prefix.Addr())
	if n := countKeys(t, cli, s.blockKey(p)); n != 1 {
		t.Fatal("block key gone")
	}
	resp, err := cli.Get(t.Context(), s.blockKey(p))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Version != 1 {
		t.Errorf("block key written %d times; want once (claimed, never released)", resp.Kvs[0].Version)
	}
}

// TestBlocksInsideRanges: gateway, exclusions, rangeStart/rangeEnd and a range not
// aligned on blocks hold inside blocks: four machines fill the range with exactly its
// allocatable addresses.
func TestBlocksInsideRanges(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.93.0.0/24", "10.93.0.5", "10.93.0.200", "10.93.0.70")
	excl := []netip.Prefix{netip.MustParsePrefix("10.93.0.64/29"), netip.MustParsePrefix("10.93.0.130/32")}
	pool.Exclude = ranges.NewExclusions(excl)
	want := map[netip.Addr]bool{}
	for a := netip.MustParseAddr("10.93.0.5"); a.Compare(netip.MustParseAddr("10.93.0.200")) <= 0; a = a.Next() {
		if a != netip.MustParseAddr("10.93.0.70") && !excl[0].Contains(a) && !excl[1].Contains(a) {
			want[a] = true
		}
	}
	got := fillUp(t, network, pool, "c", func(i int) Config { return blockCfg(shared, fmt.Sprintf("m%d", i%4), 16) })
	for a := range got {
		if !want[a] {
			t.Errorf("%s given: not allocatable", a)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d addresses handed out, want %d", len(got), len(want))
	}
}

// TestBlocksTakeOver: when no block is left unclaimed, a machine borrows from the others'
// blocks and takes over an empty one.
func TestBlocksTakeOver(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.94.0.0/25", "10.94.0.8", "10.94.0.71", "") // 64 addresses, 8 blocks of 8
	a := blockCfg(shared, "node-a", 8)
	ids := addN(t, a, network, pool, "a", 64)
	if _, err := addAs(t, a, network, pool, "one-too-many"); cnierr.Code(err) != cnierr.NoFreeAddress {
		t.Fatalf("ADD to a full pool = %v; want code 100", err)
	}
	for a8 := netip.MustParseAddr("10.94.0.8"); a8.Compare(netip.MustParseAddr("10.94.0.15")) <= 0; a8 = a8.Next() {
		delAs(t, a, network, ids[a8]) // empties the block .8 - .15
	}
	delAs(t, a, network, ids[netip.MustParseAddr("10.94.0.20")]) // a hole in the next
	b := blockCfg(shared, "node-b", 8)
	got, err := addAs(t, b, network, pool, "b0")
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, x := range blocksOf(t, b, network) {
		held[x.Prefix.String()] = x.Node
	}
	if got.Compare(netip.MustParseAddr("10.94.0.15")) > 0 && got != netip.MustParseAddr("10.94.0.20") {
		t.Errorf("node-b got %s: not a free address", got)
	}
	if held["10.94.0.8/29"] != "node-b" && got != netip.MustParseAddr("10.94.0.20") {
		t.Errorf("node-b got %s, blocks %v; want the empty block taken over", got, held)
	}
	if held["10.94.0.16/29"] != "node-a" {
		t.Errorf("blocks %v: node-a's block with a hole must stay node-a's", held)
	}
	// Whatever b took first, its next addresses come from the empty block, now its own.
	if got, err := addAs(t, b, network, pool, "b1"); err != nil || got.Compare(netip.MustParseAddr("10.94.0.15")) > 0 {
		t.Errorf("node-b's second ADD = %s, %v; want one in the block taken over", got, err)
	}
	if held := blocksOf(t, b, network); !slices.ContainsFunc(held, func(x BlockInfo) bool {
		return x.Prefix.String() == "10.94.0.8/29" && x.Node == "node-b"
	}) {
		t.Errorf("blocks %+v: want 10.94.0.8/29 node-b's", held)
	}
	s := mustOpen(t, b, network)
	checkConsistent(t, etcdtest.Client(t, shared), s)
}

// TestBlocksReleaseNode: release --node frees a dead machine's reservations and blocks;
// another machine claims them.
func TestBlocksReleaseNode(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.95.0.0/27", "", "", "") // .1 gateway; 4 blocks of 8
	a := blockCfg(shared, "dead", 8)
	for i := range 10 {
		if _, err := addAs(t, a, network, pool, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := blockCfg(shared, "alive", 8)
	if _, err := addAs(t, b, network, pool, "b0"); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, b, network)
	n, _, err := s.ReleaseNode("dead", func([]Record) {}, func([]Record) {})
	if err != nil || n != 10 {
		t.Fatalf("ReleaseNode = %d, %v; want 10", n, err)
	}
	for _, x := range blocksOf(t, b, network) {
		if x.Node == "dead" {
			t.Errorf("block %+v still held by the released node", x)
		}
	}
	wantLeft(t, s, 1)
	// The freed blocks are claimed again: the pool fills up to its 29 addresses.
	fillUp(t, network, pool, "more", func(int) Config { return b })
	wantLeft(t, s, 29)
	for _, x := range blocksOf(t, b, network) {
		if x.Node != "alive" {
			t.Errorf("block %+v: want every block claimed by alive", x)
		}
	}
}

// TestBlocksExistingPool: a pool written without blocks keeps working when blocks are
// turned on: its reservations stay valid and are never handed out again, blocks are
// claimed around them, and they are released as before.
func TestBlocksExistingPool(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.96.0.0/24", "", "", "")
	old := blockCfg(shared, "old", 0)
	before := addN(t, old, network, pool, "old", 100)
	for i := 0; i < 100; i += 3 {
		delAs(t, old, network, fmt.Sprintf("old%d", i))
		for a, id := range before {
			if id == fmt.Sprintf("old%d", i) {
				delete(before, a)
			}
		}
	}
	// Machines with blocks fill the rest of the pool.
	got := fillUp(t, network, pool, "new", func(i int) Config { return blockCfg(shared, fmt.Sprintf("new%d", i%3), 64) })
	for a := range got {
		if _, taken := before[a]; taken {
			t.Fatalf("%s handed out again", a)
		}
	}
	if len(got)+len(before) != 253 {
		t.Errorf("%d new and %d old reservations, want 253 in all", len(got), len(before))
	}
	// The old ones are released as before, and handed out again.
	old64 := blockCfg(shared, "old", 64)
	for _, id := range before {
		delAs(t, old64, network, id)
	}
	for i := range len(before) {
		if _, err := addAs(t, old64, network, pool, fmt.Sprintf("again%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := addAs(t, old64, network, pool, "one-too-many"); cnierr.Code(err) != cnierr.NoFreeAddress {
		t.Errorf("ADD to the full pool = %v; want code 100", err)
	}
	// Without blocks now: refused, naming the block size.
	if _, err := Open(old, network); cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("Open with blockSize 0 of a pool with blocks = %v; want code 7", err)
	}
	if _, err := Open(blockCfg(shared, "x", 128), network); cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("Open with another blockSize = %v; want code 7", err)
	}
}

// TestBlocksRoundTrips: the round trips of a machine's calls are the same whether the
// pool holds 0 or 50,000 reservations (other machines'): its first ADD (claims a block),
// its next ADD (in its block), and a DEL.
func TestBlocksRoundTrips(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 50,000-reservation pool")
	}
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	pool := poolOf(t, "10.97.0.0/16", "", "", "")
	measure := func(network string) [3]int {
		cfg := blockCfg(eps, "node-a", 64)
		var rts [3]int
		for i := range 2 {
			s := mustOpen(t, cfg, network)
			if _, err := allocator.Allocate(s, pool, own(fmt.Sprintf("x%d", i), "eth0"), nil); err != nil {
				t.Fatal(err)
			}
			rts[i] = s.RoundTrips()
		}
		s := mustOpen(t, cfg, network)
		if _, _, err := allocator.Release(s, own("x0", "eth0")); err != nil {
			t.Fatal(err)
		}
		rts[2] = s.RoundTrips()
		return rts
	}
	empty := newNetwork()
	// The first call of a network with blocks writes its blocksize record: not counted.
	s := mustOpen(t, blockCfg(eps, "init", 64), empty)
	if err := s.ensureBlocks(); err != nil {
		t.Fatal(err)
	}
	at0 := measure(empty)

	big := newNetwork()
	other := mustOpen(t, blockCfg(eps, "other", 64), big)
	if err := other.ensureBlocks(); err != nil {
		t.Fatal(err)
	}
	reserve50k(t, eps, other, nil)
	at50k := measure(big)
	t.Logf("round trips (first ADD, next ADD, DEL): %v at 0, %v at 50,000", at0, at50k)
	if at0 != at50k {
		t.Errorf("round trips %v at 50,000 reservations, %v at 0: want the same", at50k, at0)
	}
}

// TestBlocksLostClaimLastUnclaimed: after losing a claim, a machine skips a few unclaimed
// blocks to spread out from the other claimers, but never past the last one left: it
// would borrow from other machines' blocks while a block is still unclaimed.
func TestBlocksLostClaimLastUnclaimed(t *testing.T) {
	network := newNetwork()
	cli := etcdtest.Client(t, shared)
	// Blocks of 8 in 10.99.5.0/27: .0 and .8 node-a's, .24 node-b's, .16 unclaimed.
	for node, addrs := range map[string][]string{"node-a": {"10.99.5.2", "10.99.5.9"}, "node-b": {"10.99.5.25"}} {
		s := mustOpen(t, blockCfg(shared, node, 8), network)
		if err := s.ensureBlocks(); err != nil {
			t.Fatal(err)
		}
		var as []netip.Addr
		for _, a := range addrs {
			as = append(as, netip.MustParseAddr(a))
		}
		bulkReserve(t, cli, s, as, func(i int) store.Owner { return own(fmt.Sprintf("%s-%d", node, i), "eth0") })
	}
	from, to := netip.MustParseAddr("10.99.5.1"), netip.MustParseAddr("10.99.5.30")
	for range 20 {
		s := mustOpen(t, blockCfg(shared, "node-c", 8), network)
		s.blk.lost = true
		b, ok, err := s.NextUnclaimed(from, to)
		if err != nil || !ok || b.From != netip.MustParseAddr("10.99.5.16") {
			t.Fatalf("NextUnclaimed after a lost claim = %v, %v, %v; want the unclaimed block 10.99.5.16/29", b, ok, err)
		}
		s.Close()
	}
}
