package etcd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

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

// TestBlocksBigExistingPoolRoundTrips: in a pool written without blocks, its full old
// pages are not a walk of one round trip per block for every machine claiming its first
// block once blocks are turned on.
func TestBlocksBigExistingPoolRoundTrips(t *testing.T) {
	eps, pool, network := oldPool50k(t)
	worst := 0
	for n := range 8 {
		s := mustOpen(t, blockCfg(eps, fmt.Sprintf("node-%d", n), 64), network)
		if _, err := allocator.Allocate(s, pool, own(fmt.Sprintf("x%d", n), "eth0"), nil); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, s.RoundTrips())
		t.Logf("node-%d: first ADD %d round trips", n, s.RoundTrips())
	}
	if worst > 8 {
		t.Errorf("a machine's first ADD in an old pool of 50,000 took %d round trips; want a few", worst)
	}
}

// TestBlocksTurnedOnUnderOldCall: a call without blocks that opened the pool before the
// first call with blocks wrote the block size must not write the old layout after it:
// a release there would clear the bit in the old page only, and the block's bitmap,
// copied from it, would keep the address taken for ever.
func TestBlocksTurnedOnUnderOldCall(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.1.0/27", "", "", "") // .1 gateway
	old := blockCfg(shared, "old", 0)
	x, err := addAs(t, old, network, pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	slow := mustOpen(t, old, network) // a DEL without blocks, opened before the switch
	// A machine with blocks: its first write records the block size, and a requested
	// address beside x writes the bitmap of x's block.
	s := mustOpen(t, blockCfg(shared, "new", 8), network)
	if _, err := allocator.Allocate(s, pool, own("y", "eth0"), []netip.Addr{x.Next()}); err != nil {
		t.Fatal(err)
	}
	_, _, err = allocator.Release(slow, own("x", "eth0"))
	if cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("release without blocks after blocks were turned on = %v; want code 7", err)
	}
	chk := mustOpen(t, blockCfg(shared, "check", 8), network)
	checkConsistent(t, etcdtest.Client(t, shared), chk)
	if err == nil { // x was released: it must be free again
		if got := fillUp(t, network, pool, "f", func(int) Config { return blockCfg(shared, "new", 8) }); !got[x] {
			t.Errorf("%s released without blocks, never handed out again", x)
		}
	}
}

// TestBlocksFirstWriteAfterOldCall: a call without blocks that writes the old layout
// after the first call with blocks opened the pool (and saw no old pages) makes that
// call's record say the pool has old pages, so that they are read.
func TestBlocksFirstWriteAfterOldCall(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.2.0/27", "", "", "")
	s := mustOpen(t, blockCfg(shared, "new", 8), network) // no old pages yet
	x, err := addAs(t, blockCfg(shared, "old", 0), network, pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := allocator.Allocate(s, pool, own("y", "eth0"), []netip.Addr{x.Next()}); err != nil {
		t.Fatal(err)
	}
	chk := mustOpen(t, blockCfg(shared, "check", 8), network)
	if !chk.blk.legacy {
		t.Errorf("the block size record does not say the pool has old pages")
	}
	if held := checkConsistent(t, etcdtest.Client(t, shared), chk); len(held) != 2 {
		t.Errorf("reservations %v; want x and y", held)
	}
	bs := blocksOf(t, blockCfg(shared, "check", 8), network)
	if len(bs) != 1 || bs[0].InUse != 2 {
		t.Errorf("blocks %+v; want x's block with x and y in use", bs)
	}
}

// TestBlocksBigExistingPoolStatus: STATUS (allocator.Available) of a pool written
// without blocks, once blocks are on, costs a few round trips whatever its size.
func TestBlocksBigExistingPoolStatus(t *testing.T) {
	eps, pool, network := oldPool50k(t)
	if _, err := addAs(t, blockCfg(eps, "new", 64), network, pool, "new"); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, blockCfg(eps, "status", 64), network)
	if ok, err := allocator.Available(s, pool); err != nil || !ok[0] {
		t.Fatalf("Available = %v, %v", ok, err)
	}
	if s.RoundTrips() > 8 {
		t.Errorf("STATUS of an old pool of 50,000 took %d round trips; want a few", s.RoundTrips())
	}
}

// reserve50k makes 50,000 reservations in 10.97.0.0/16 from 10.97.0.2 on, as s would,
// skipping the addresses skip says (nil: none).
func reserve50k(t testing.TB, eps []string, s *Store, skip func(netip.Addr) bool) {
	t.Helper()
	var addrs []netip.Addr
	for a := netip.MustParseAddr("10.97.0.2"); len(addrs) < 50000; a = a.Next() {
		if skip == nil || !skip(a) {
			addrs = append(addrs, a)
		}
	}
	bulkReserve(t, etcdtest.Client(t, eps), s, addrs, func(i int) store.Owner { return own(fmt.Sprintf("c%d", i), "eth0") })
}

// oldPool50k starts a member with a network of 50,000 reservations in 10.97.0.0/16,
// written without blocks.
func oldPool50k(t *testing.T) ([]string, ranges.Pool, string) {
	if testing.Short() {
		t.Skip("builds a 50,000-reservation pool")
	}
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	network := newNetwork()
	reserve50k(t, eps, mustOpen(t, blockCfg(eps, "old", 0), network), nil)
	return eps, poolOf(t, "10.97.0.0/16", "", "", ""), network
}

// TestBlocksExclusionsStatus: blocks holding an excluded address are never marked full;
// STATUS (allocator.Available) of a big pool with one in every few blocks reads them many
// at a time: no more round trips than without blocks.
func TestBlocksExclusionsStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two 50,000-reservation pools")
	}
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	pool := poolOf(t, "10.97.0.0/16", "", "", "")
	var excl []netip.Prefix
	for i := range 256 {
		excl = append(excl, netip.MustParsePrefix(fmt.Sprintf("10.97.%d.255/32", i)))
	}
	pool.Exclude = ranges.NewExclusions(excl)
	var rts []int
	for _, bs := range []int{64, 0} {
		network := newNetwork()
		other := mustOpen(t, blockCfg(eps, "other", bs), network)
		if err := other.ensureBlocks(); err != nil {
			t.Fatal(err)
		}
		reserve50k(t, eps, other, func(a netip.Addr) bool { return a.As4()[3] == 255 })
		s := mustOpen(t, blockCfg(eps, "status", bs), network)
		if ok, err := allocator.Available(s, pool); err != nil || !ok[0] {
			t.Fatalf("blockSize %d: Available = %v, %v", bs, ok, err)
		}
		rts = append(rts, s.RoundTrips())
	}
	t.Logf("STATUS round trips: %d with blocks of 64, %d without", rts[0], rts[1])
	if rts[0] > rts[1]+2 {
		t.Errorf("STATUS took %d round trips with blocks, %d without", rts[0], rts[1])
	}
}

// TestBlocksOldPoolManyBlockBitmaps: in a pool written without blocks, once more than
// a read's worth of blocks have bitmaps of their own, STATUS still reads the full ones
// many at a time, not one round trip per block.
func TestBlocksOldPoolManyBlockBitmaps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 16,000-reservation pool")
	}
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	network := newNetwork()
	pool := poolOf(t, "10.95.0.0/16", "", "", "")
	// One old reservation, at the end of the pool.
	old := mustOpen(t, blockCfg(eps, "old", 0), network)
	if _, err := allocator.Allocate(old, pool, own("old", "eth0"), []netip.Addr{netip.MustParseAddr("10.95.255.200")}); err != nil {
		t.Fatal(err)
	}
	// With blocks of 8: 2,000 full blocks from the start of the pool.
	s := mustOpen(t, blockCfg(eps, "new", 8), network)
	if err := s.ensureBlocks(); err != nil {
		t.Fatal(err)
	}
	if !s.blk.legacy {
		t.Fatal("the pool is not read as one with old pages")
	}
	var addrs []netip.Addr
	for a := netip.MustParseAddr("10.95.0.0"); len(addrs) < 16000; a = a.Next() {
		addrs = append(addrs, a)
	}
	bulkReserve(t, etcdtest.Client(t, eps), s, addrs, func(i int) store.Owner { return own(fmt.Sprintf("c%d", i), "eth0") })
	st := mustOpen(t, blockCfg(eps, "status", 8), network)
	if ok, err := allocator.Available(st, pool); err != nil || !ok[0] {
		t.Fatalf("Available = %v, %v", ok, err)
	}
	if st.RoundTrips() > 8 {
		t.Errorf("STATUS past 2,000 full blocks of an old pool took %d round trips; want a few", st.RoundTrips())
	}
}

// afterFirstFree is a Store that runs a hook once, right after its first FirstFree:
// what another machine does between an ADD's search and its reservation.
type afterFirstFree struct {
	*Store
	hook func()
}

func (h *afterFirstFree) FirstFree(from, to netip.Addr) (netip.Addr, bool, error) {
	a, ok, err := h.Store.FirstFree(from, to)
	if f := h.hook; f != nil {
		h.hook = nil
		f()
	}
	return a, ok, err
}

// TestBlocksOldReleaseBeforeFirstWrite: the first ADD with blocks of a pool written
// without blocks reads an old page; a DEL without blocks frees an address of it before
// that ADD's reservation records the block size. The block's bitmap that reservation
// writes must not keep the freed address taken.
func TestBlocksOldReleaseBeforeFirstWrite(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.3.0/29", "", "", "") // one block of 8
	old := blockCfg(shared, "old", 0)
	x, err := addAs(t, old, network, pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	s := &afterFirstFree{Store: mustOpen(t, blockCfg(shared, "new", 8), network), hook: func() { delAs(t, old, network, "x") }}
	if _, err := allocator.Allocate(s, pool, own("y", "eth0"), nil); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, etcdtest.Client(t, shared), mustOpen(t, blockCfg(shared, "check", 8), network))
	if got := fillUp(t, network, pool, "f", func(int) Config { return blockCfg(shared, "new", 8) }); !got[x] {
		t.Errorf("%s, released without blocks before the first write with blocks, never handed out again (got %v)", x, got)
	}
}

// TestBlocksChaos: machines ADD, DEL, request addresses and release each other at once on
// a small pool of small blocks; afterwards the keys are consistent, and the pool fills up
// to exactly its allocatable addresses before answering code 100.
func TestBlocksChaos(t *testing.T) {
	for _, c := range []struct {
		subnet, start, end, gw string
		size, old              int
	}{
		{"10.98.0.0/26", "", "", "", 8, 0},
		{"10.98.1.0/25", "10.98.1.13", "10.98.1.77", "10.98.1.40", 8, 0},
		{"fd00:98::/122", "", "", "", 16, 0},
		{"fd00:98::/121", "fd00:98::5", "fd00:98::70", "fd00:98::33", 8, 0},
		{"10.98.2.0/26", "", "", "", 8, 30}, // 30 reservations made without blocks first
	} {
		t.Run(fmt.Sprintf("%s_old%d", c.subnet, c.old), func(t *testing.T) { blocksChaos(t, c.subnet, c.start, c.end, c.gw, c.size, c.old) })
	}
}

func blocksChaos(t *testing.T, subnet, start, end, gw string, size, old int) {
	network := newNetwork()
	pool := poolOf(t, subnet, start, end, gw)
	want := len(fillUp(t, newNetwork(), pool, "x", func(int) Config { return blockCfg(shared, "solo", size) }))
	set := pool.Sets[0]
	for i := range old {
		if _, err := addAs(t, blockCfg(shared, fmt.Sprintf("m%d", i%3), 0), network, pool, fmt.Sprintf("old%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < old; i += 2 {
		delAs(t, blockCfg(shared, fmt.Sprintf("m%d", i%3), 0), network, fmt.Sprintf("old%d", i))
	}
	const nodes = 6
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("m%d", n)
			cfg := blockCfg(shared, node, size)
			var mine []string
			for i := range 60 {
				s, err := Open(cfg, network)
				if err != nil {
					t.Error(err)
					return
				}
				switch r := rand.N(10); {
				case r < 5:
					id := fmt.Sprintf("%s-%d", node, i)
					_, err = allocator.Allocate(s, pool, own(id, "eth0"), nil)
					if err == nil {
						mine = append(mine, id)
					}
				case r < 6:
					id := fmt.Sprintf("%s-r%d", node, i)
					a := set[0].Start
					for range rand.N(70) {
						if a != set[0].End {
							a = a.Next()
						}
					}
					if a == set[0].Gateway {
						a = a.Next()
					}
					_, err = allocator.Allocate(s, pool, own(id, "eth0"), []netip.Addr{a})
					if err == nil {
						mine = append(mine, id)
					}
				case r < 9 && len(mine) > 0:
					j := rand.N(len(mine))
					_, _, err = allocator.Release(s, own(mine[j], "eth0"))
					mine = append(mine[:j], mine[j+1:]...)
				case r == 9:
					_, _, err = s.ReleaseNode(fmt.Sprintf("m%d", rand.N(nodes)), func([]Record) {}, func([]Record) {})
				}
				s.Close()
				if err != nil && cnierr.Code(err) != cnierr.NoFreeAddress && cnierr.Code(err) != cnierr.AddressInUse {
					t.Errorf("%s: %v", node, err)
				}
			}
		}()
	}
	wg.Wait()
	s := mustOpen(t, blockCfg(shared, "check", size), network)
	before := len(checkConsistent(t, etcdtest.Client(t, shared), s))
	got := fillUp(t, network, pool, "fill", func(i int) Config { return blockCfg(shared, fmt.Sprintf("m%d", i%nodes), size) })
	held := checkConsistent(t, etcdtest.Client(t, shared), s)
	if len(held) != want {
		t.Errorf("%d reserved before the fill, %d added, %d in all: want %d before code 100", before, len(got), len(held), want)
	}
	_ = store.Owner{}
}

// TestBlocksKilledMachines: machines (worker processes with node names of their own)
// claiming small blocks at once are SIGKILLed at random instants, again and again; every
// address is then either reserved once or free: the pool fills to exactly its addresses.
func TestBlocksKilledMachines(t *testing.T) {
	network := newNetwork()
	const subnet = "10.99.3.0/25" // .1 gateway: 125 addresses, 16 blocks of 8
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 8 {
				node := fmt.Sprintf("machine%d", i)
				job, _ := json.Marshal(workerJob{Endpoints: shared, Network: network, Node: node, Subnet: subnet, Owner: fmt.Sprintf("%s-%d", node, round), BlockSize: 8})
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), workerEnv+"="+string(job))
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rand.N(60000)) * time.Microsecond)
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}()
	}
	wg.Wait()
	s := mustOpen(t, blockCfg(shared, "check", 8), network)
	before := len(checkConsistent(t, etcdtest.Client(t, shared), s))
	pool := poolOf(t, subnet, "", "", "")
	got := fillUp(t, network, pool, "fill", func(i int) Config { return blockCfg(shared, fmt.Sprintf("machine%d", i%6), 8) })
	if held := checkConsistent(t, etcdtest.Client(t, shared), s); len(held) != 125 {
		t.Errorf("%d left by the killed machines, %d added, %d in all: want 125 before code 100", before, len(got), len(held))
	}
	t.Logf("%d reservations left by the killed machines", before)
}

// TestBlocksDamagedBlockKey: a block key whose value names no node (damage: every claim
// writes a node's name) is refused with code 104 when an ADD needs that block, at once,
// not retried until the call's deadline.
func TestBlocksDamagedBlockKey(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.0.0/27", "", "", "") // .1 gateway: 29 addresses, 4 blocks of 8
	a := blockCfg(shared, "node-a", 8)
	got := fillUp(t, network, pool, "a", func(int) Config { return a })
	if len(got) != 29 {
		t.Fatalf("filled %d, want 29", len(got))
	}
	delAs(t, a, network, "a3")
	s := mustOpen(t, a, network)
	cli := etcdtest.Client(t, shared)
	for _, b := range blocksOf(t, a, network) {
		p, _ := s.pageOf(b.Prefix.Addr())
		etcdtest.Put(t, cli, s.blockKey(p), "")
	}
	start := time.Now()
	_, err := addAs(t, blockCfg(shared, "node-b", 8), network, pool, "b0")
	if cnierr.Code(err) != cnierr.StoreCorrupt || time.Since(start) > 5*time.Second {
		t.Errorf("ADD with damaged block keys = %v after %v; want code 104 at once", err, time.Since(start))
	}
	if _, err := s.Blocks(); cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Errorf("Blocks with damaged block keys = %v; want code 104", err)
	}
}

// TestBlocksDamagedOldPage: in a pool written without blocks, an old page that is not a
// bitmap page is damage (code 104) for a call with blocks that reads a block of it, as
// it is for a call without blocks: not read as all free.
func TestBlocksDamagedOldPage(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.6.0/27", "", "", "")
	old := blockCfg(shared, "old", 0)
	x, err := addAs(t, old, network, pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, old, network)
	p, _ := s.pageOf(x)
	etcdtest.Put(t, etcdtest.Client(t, shared), s.pageKey(p), "garbage")
	for _, cfg := range []Config{old, blockCfg(shared, "new", 8)} {
		_, err := allocator.Allocate(mustOpen(t, cfg, network), pool, own("y", "eth0"), []netip.Addr{x.Next()})
		if cnierr.Code(err) != cnierr.StoreCorrupt {
			t.Errorf("blockSize %d: ADD of %s beside a damaged old page = %v; want code 104", cfg.BlockSize, x.Next(), err)
		}
	}
}

// TestBlocksDamagedBlockSizeRecord: a block size record that is not local-ipam's makes
// every write fail with code 104 naming it; STATUS (Writable) says so too, rather than
// that an ADD could succeed.
func TestBlocksDamagedBlockSizeRecord(t *testing.T) {
	network := newNetwork()
	pool := poolOf(t, "10.99.7.0/27", "", "", "")
	cfg := blockCfg(shared, "node-a", 8)
	if _, err := addAs(t, cfg, network, pool, "a0"); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, cfg, network)
	etcdtest.Put(t, etcdtest.Client(t, shared), s.blockSizeKey(), "garbage")
	if _, err := addAs(t, cfg, network, pool, "a1"); cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Errorf("ADD with a damaged block size record = %v; want code 104", err)
	}
	if err := mustOpen(t, cfg, network).Writable(); cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Errorf("Writable with a damaged block size record = %v; want code 104", err)
	}
}

// TestBlocksTurnedOnUnderLostAnswer: a call without blocks whose transaction went
// through but whose answer was lost, and which retries after the first call with blocks
// recorded the block size, answers what its first attempt did: an ADD its address (not
// code 7 with the address left reserved for an attachment told it failed), a DEL that
// it released.
func TestBlocksTurnedOnUnderLostAnswer(t *testing.T) {
	defer loseAnswers.Store(0)
	defer func() { afterLost = nil }()
	network := newNetwork()
	pool := poolOf(t, "10.99.4.0/27", "", "", "")
	old := blockCfg(shared, "old", 0)
	if _, err := addAs(t, old, network, pool, "w"); err != nil { // the old layout exists
		t.Fatal(err)
	}
	s := &afterFirstFree{Store: mustOpen(t, old, network), hook: func() {
		loseAnswers.Store(1) // the reservation's transaction: FirstFree read its page
		afterLost = recordBlocks(t, network)
	}}
	as, err := allocator.Allocate(s, pool, own("x", "eth0"), nil)
	loseAnswers.Store(0)
	chk := mustOpen(t, blockCfg(shared, "check", 8), network)
	held := checkConsistent(t, etcdtest.Client(t, shared), chk)
	switch {
	case err == nil && held[as[0].Addr] == "":
		t.Errorf("ADD answered %s, which is not reserved", as[0].Addr)
	case err != nil:
		t.Errorf("ADD with its answer lost across the switch = %v (reservations %v); want the address its first attempt reserved", err, held)
	}
	// A DEL without blocks, its answer lost, retried after the switch.
	network = newNetwork()
	x, err := addAs(t, old, network, pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, old, network)
	if _, err := d.Owned(own("x", "eth0")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.FirstFree(x, x); err != nil { // x's page is cached: the DEL is one txn
		t.Fatal(err)
	}
	loseAnswers.Store(1)
	afterLost = recordBlocks(t, network)
	ok, err := d.Release(x, own("x", "eth0"))
	loseAnswers.Store(0)
	if err != nil || !ok {
		t.Errorf("DEL with its answer lost across the switch = %v, %v; want released", ok, err)
	}
	wantLeft(t, mustOpen(t, blockCfg(shared, "check", 8), network), 0)
}

// recordBlocks records a block size of 8 in network, once, as afterLost.
func recordBlocks(t *testing.T, network string) func() {
	return func() {
		afterLost = nil
		if err := mustOpen(t, blockCfg(shared, "new", 8), network).ensureBlocks(); err != nil {
			t.Error(err)
		}
	}
}
