package etcd

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// TestClusterMemberLoss runs a 3-member cluster of processes: allocation goes on with one
// member killed; with two killed every call fails with code 11 within its timeout and
// leaves nothing half-written; once they are back, nothing is lost.
func TestClusterMemberLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of etcd processes")
	}
	c := etcdtest.StartCluster(t, 3)
	const timeout = 3 * time.Second
	cfg := Config{Endpoints: c.Endpoints(), Node: "n1", Timeout: timeout}
	const network = "cluster"
	r, err := ranges.New(netip.MustParsePrefix("10.60.0.0/24"), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	pool := ranges.Pool{Sets: []ranges.Set{{r}}}
	held := map[string]netip.Addr{}
	seen := map[netip.Addr]string{}
	n := 0
	alloc := func() error {
		n++
		id := "c" + string(rune('a'+n/26)) + string(rune('a'+n%26))
		s, err := Open(cfg, network)
		if err != nil {
			return err
		}
		defer s.Close()
		as, err := allocator.Allocate(s, pool, own(id, "eth0"), nil)
		if err != nil {
			return err
		}
		a := as[0].Addr
		if prev, dup := seen[a]; dup {
			t.Errorf("%s handed out twice: %s and %s", a, prev, id)
		}
		seen[a], held[id] = id, a
		return nil
	}
	allocN := func(k int, when string) {
		t.Helper()
		for range k {
			if err := alloc(); err != nil {
				t.Fatalf("%s: %v", when, err)
			}
		}
	}
	allocN(10, "all members up")

	// The leader goes first: the harder loss (an election happens under the calls).
	leader := leaderOf(t, c)
	other := (leader + 1) % 3
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	allocN(10, "the leader killed")
	// Opened while there is a quorum, used after it is gone.
	early, err := Open(cfg, network)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	early2, err := Open(cfg, network)
	if err != nil {
		t.Fatal(err)
	}
	defer early2.Close()

	if err := c.Kill(other); err != nil {
		t.Fatal(err)
	}
	within := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		if d := time.Since(start); d > timeout+2*time.Second {
			t.Errorf("%s without quorum took %s (timeout %s)", what, d, timeout)
		}
		if cnierr.Code(err) != cnierr.TryAgainLater {
			t.Errorf("%s without quorum = %v; want code 11", what, err)
		}
	}
	within("ADD", alloc)
	within("Reserve", func() error {
		_, err := early.Reserve(netip.MustParseAddr("10.60.0.200"), own("late", "eth0"))
		return err
	})
	within("Writable", early2.Writable)
	within("Open", func() error {
		s, err := Open(cfg, network)
		if err == nil {
			s.Close()
		}
		return err
	})

	if err := c.Restart(other); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, Config{Endpoints: c.Endpoints(), Node: "n1", Timeout: 10 * time.Second}, network)
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable after restart: %v", err)
	}
	got := checkConsistent(t, etcdtest.Client(t, c.Endpoints()), s)
	for id, a := range held {
		if got[a] != own(id, "eth0").Key() {
			t.Errorf("after restart, %s holds %q; want %s", a, got[a], id)
		}
	}
	// Anything beyond what was handed out can only be a reservation whose answer was lost
	// with the quorum; it is whole (checkConsistent) and its owner's.
	for a, k := range got {
		if _, ok := seen[a]; !ok {
			t.Logf("reservation made while the quorum was going: %s for %q", a, k)
		}
	}
	allocN(10, "members restarted")
}

// leaderOf returns the index of the cluster's leader.
func leaderOf(t *testing.T, c *etcdtest.Cluster) int {
	t.Helper()
	cli := etcdtest.Client(t, c.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, ep := range c.Endpoints() {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}
