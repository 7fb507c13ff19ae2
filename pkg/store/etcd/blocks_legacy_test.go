package etcd

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

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
