package etcd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

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
