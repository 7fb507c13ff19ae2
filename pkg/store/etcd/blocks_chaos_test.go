package etcd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

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
