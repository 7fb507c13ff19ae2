package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// TestRandomDamage writes garbage into random keys of a network in use (what a person with
// etcdctl, another program or a bug could leave), then runs every operation the plugin
// uses. Whatever the damage: no panic, every failure a CNI error with a code (not 999),
// and never an address given to two owners (the ip key decides, whatever a page says).
func TestRandomDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	cli := etcdtest.Client(t, shared)
	ctx := context.Background()
	r, err := ranges.New(netip.MustParsePrefix("10.77.0.0/27"), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	pool := ranges.Pool{Sets: []ranges.Set{{r}}}
	pageLen := pageBytes
	if bs := cfgFor(shared, "n").BlockSize; bs > 0 {
		pageLen = bs / 8
	}
	garbage := func(key string) string {
		switch rng.IntN(6) {
		case 0:
			return ""
		case 1:
			return "\xff\x00garbage"
		case 2:
			return strings.Repeat("\xff", pageLen) // a page "all taken"
		case 3:
			return string(make([]byte, pageLen)) // a page "all free"
		case 4:
			return `{"owner":"x\r\ny","node":"n","created":"2026-01-01T00:00:00Z"}`
		}
		return "999.1.2.3"
	}
	codes := map[uint]int{}
	checkErr := func(what string, err error) {
		t.Helper()
		var te *types.Error
		if err != nil && (!errors.As(err, &te) || te.Code == 999 || te.Code == 0) {
			t.Fatalf("%s: %v is not a CNI error with a code", what, err)
		}
		if err != nil {
			codes[te.Code]++
		} else {
			codes[0]++
		}
	}
	for round := range 30 {
		network := newNetwork()
		s := mustOpen(t, cfgFor(shared, "n"), network)
		for i := range 8 {
			if _, err := allocator.Allocate(s, pool, own(fmt.Sprintf("pre%d", i), "eth0"), nil); err != nil {
				t.Fatal(err)
			}
		}
		// Damage: 1 to 3 keys, existing ones or ones of the kinds the store reads.
		resp, err := cli.Get(ctx, s.base, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		keys = append(keys, s.lastKey(0), s.fullKey(func() pageID { p, _ := s.pageOf(netip.MustParseAddr("10.77.0.0")); return p }()), s.ipKey(netip.MustParseAddr("10.77.0.20")))
		var damaged []string
		for range 1 + rng.IntN(3) {
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(4) == 0 {
				if _, err := cli.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
				damaged = append(damaged, "deleted "+k)
				continue
			}
			v := garbage(k)
			etcdtest.Put(t, cli, k, v)
			damaged = append(damaged, fmt.Sprintf("%s = %q", k, v))
		}
		t.Logf("round %d: %s", round, strings.Join(damaged, "; "))

		// Every operation, each in a call of its own as the plugin makes them.
		got := map[netip.Addr]store.Owner{}
		for i := range 6 {
			o := own(fmt.Sprintf("new%d", i), "eth0")
			s = mustOpen(t, cfgFor(shared, "n"), network)
			as, err := allocator.Allocate(s, pool, o, nil)
			checkErr("Allocate", err)
			for _, a := range as {
				if prev, dup := got[a.Addr]; dup {
					t.Fatalf("round %d: %v given to %v and %v (%s)", round, a.Addr, prev, o, damaged)
				}
				got[a.Addr] = o
				if h, ok, err := s.Holder(a.Addr); err == nil && (!ok || h != o) {
					t.Fatalf("round %d: %v given to %v but its ip key says %v %v (%s)", round, a.Addr, o, h, ok, damaged)
				}
			}
		}
		s = mustOpen(t, cfgFor(shared, "n"), network)
		_, _, err = allocator.Release(s, own("pre1", "eth0"))
		checkErr("Release", err)
		_, err = allocator.Held(s, own("pre2", "eth0"))
		checkErr("Held", err)
		_, err = allocator.Available(s, pool)
		checkErr("Available", err)
		_, err = s.CountReserved(r.Start, r.End)
		checkErr("CountReserved", err)
		checkErr("Records", s.Records(func(Record) error { return nil }))
		_, err = s.GC([]types.GCAttachment{{ContainerID: "pre3", IfName: "eth0"}})
		checkErr("GC", err)
		_, err = s.FreeOnReboot(fmt.Sprint("boot", round))
		checkErr("FreeOnReboot", err)
		checkErr("Writable", s.Writable())
	}
	// The damage must have been felt: some operations refused (104, 100...), most went on.
	t.Logf("outcomes by code (0 = success): %v", codes)
	if codes[0] == 0 || len(codes) < 2 {
		t.Errorf("outcomes %v: the damage changed nothing, or everything failed", codes)
	}
}
