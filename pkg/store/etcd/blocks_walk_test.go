package etcd

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

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
