package etcd

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// TestBlocksBigExistingPoolRoundTrips: in a pool written without blocks, its full old
// pages are not a walk of one round trip per block for every machine claiming its first
// block once blocks are turned on.
func TestBlocksBigExistingPoolRoundTrips(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 50,000-reservation pool")
	}
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	pool := poolOf(t, "10.97.0.0/16", "", "", "")
	network := newNetwork()
	old := mustOpen(t, blockCfg(eps, "old", 0), network)
	var addrs []netip.Addr
	for a := netip.MustParseAddr("10.97.0.2"); len(addrs) < 50000; a = a.Next() {
		addrs = append(addrs, a)
	}
	bulkReserve(t, etcdtest.Client(t, eps), old, addrs, func(i int) store.Owner { return own(fmt.Sprintf("c%d", i), "eth0") })
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
