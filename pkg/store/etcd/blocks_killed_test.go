package etcd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

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
