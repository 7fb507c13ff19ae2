package etcd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// shared is the embedded etcd most tests use, each in a network of its own.
var shared []string

// workerEnv makes the test binary a worker process: one "machine" allocating from a pool
// (see TestProcessesAllocateFromOnePool).
const workerEnv = "LOCAL_IPAM_ETCD_TEST_WORKER"

type workerJob struct {
	Endpoints []string
	Network   string
	Node      string
	Subnet    string
	Owner     string
	BlockSize int
}

func TestMain(m *testing.M) {
	if job := os.Getenv(workerEnv); job != "" {
		os.Exit(worker(job))
	}
	dir, err := os.MkdirTemp("", "etcd-store-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	eps, stop, err := etcdtest.StartEmbeddedServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = eps
	code := m.Run()
	stop()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "shared etcd's log is kept in %s\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// worker allocates one address a call, each call a Store of its own, until the pool is
// exhausted, and prints "<addr> <owner ID>" for each.
func worker(spec string) int {
	var job workerJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := ranges.New(netip.MustParsePrefix(job.Subnet), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool := ranges.Pool{Sets: []ranges.Set{{r}}}
	for i := 0; ; i++ {
		s, err := Open(Config{Endpoints: job.Endpoints, Node: job.Node, BlockSize: job.BlockSize}, job.Network)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return 1
		}
		o := store.Owner{ID: fmt.Sprintf("%s-%d", job.Owner, i), IfName: "eth0"}
		as, err := allocator.Allocate(s, pool, o, nil)
		s.Close()
		if cnierr.Code(err) == cnierr.NoFreeAddress {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "allocate:", err)
			return 1
		}
		fmt.Printf("%s %s\n", as[0].Addr, o.ID)
	}
}
