package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// cutProxy forwards TCP connections to an etcd member until budget bytes have gone from
// the clients to it; from then on it forwards nothing more, either way, and keeps the
// connections open: etcd stops answering in the middle of a command.
type cutProxy struct {
	*etcdtest.Proxy
	budget atomic.Int64
}

func startCutProxy(t *testing.T, target string, budget int64) *cutProxy {
	t.Helper()
	p := &cutProxy{}
	p.budget.Store(budget)
	p.Proxy = etcdtest.StartProxy(t, target,
		func(from, to net.Conn, done <-chan struct{}) { p.pipe(from, to, true, done) },
		func(from, to net.Conn, done <-chan struct{}) { p.pipe(from, to, false, done) })
	return p
}

func (p *cutProxy) cut() bool { return p.budget.Load() < 0 }

// pipe copies from to to until the budget is spent (counted on the clients' side).
func (p *cutProxy) pipe(from, to net.Conn, counted bool, done <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if counted {
				p.budget.Add(-int64(n))
			}
			if p.cut() {
				<-done // hold the connection, answer nothing
				return
			}
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// releaseLine is a line release prints: "releasing" before etcd is asked, "released"
// once it answered; the address and the container.
var releaseLine = regexp.MustCompile(`^(releasing|released) (\S+) \(container (\S+), ifname eth0\)$`)

// TestReleaseLargeNode: release --node of a node holding thousands of reservations, with
// a timeout much shorter than the whole job: each batch has the timeout of its own, every
// address is printed as its batch is released, and when etcd stops answering half-way,
// what was released is printed, the command fails saying how many and that running it
// again goes on, and running it again does.
func TestReleaseLargeNode(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a node with 4,000 reservations")
	}
	// A member process of its own: built without the race detector, it takes the 4,000
	// reservations many times faster than an embedded one under -race.
	eps := etcdtest.StartCluster(t, 1).Endpoints()
	n := newEtcdNet("big", eps, map[string]any{"subnet": "10.57.0.0/16"})
	n.timeout = time.Second
	const writers, each = 4, 1000
	// Reservations of node "gone", as its ADDs made them; each writer in a bitmap page of
	// its own, from 10.57.<16w>.1 on.
	err := storetest.Fill(func() (store.Store, error) {
		return etcd.Open(etcd.Config{Endpoints: eps, Prefix: "/t/" + t.Name(), Node: "gone", Timeout: 5 * time.Minute}, "big")
	}, writers, func(w, i int) (netip.Addr, store.Owner, bool) {
		a := netip.AddrFrom4([4]byte{10, 57, byte(16*w + (i+1)/256), byte(i + 1)})
		return a, store.Owner{ID: fmt.Sprintf("c%d-%d", w, i), IfName: "eth0"}, i < each
	})
	if err != nil {
		t.Fatal(err)
	}
	// A reservation of another node, which must stay.
	wantOK(t, add(t, n, "alive", "keep"), "ADD on node alive")

	released := map[string]bool{}
	take := func(what, stdout string) int {
		k := 0
		for _, l := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
			m := releaseLine.FindStringSubmatch(l)
			if m == nil || m[1] != "released" {
				continue
			}
			if released[m[2]] {
				t.Errorf("%s: %s printed as released twice", what, m[2])
			}
			if !strings.HasPrefix(m[3], "c") {
				t.Errorf("%s: released %s of container %s, not node gone's", what, m[2], m[3])
			}
			released[m[2]] = true
			k++
		}
		return k
	}

	// etcd stops answering after the first few batches.
	p := startCutProxy(t, strings.TrimPrefix(eps[0], "http://"), 40<<10)
	cut := *n
	cut.endpoints = []string{p.Endpoint()}
	start := time.Now()
	o := operator(t, "release", "--conf", writeConf(t, cut.conf(t, "op", nil)), "--node", "gone")
	k := take("release cut short", o.Stdout)
	t.Logf("cut short after %d released, in %v: %s", k, time.Since(start), strings.TrimSpace(o.Stderr))
	if o.Exit != 1 || k == 0 || k >= writers*each {
		t.Fatalf("release with etcd stopping half-way: want exit 1 after some releases, got %d released: %s", k, o)
	}
	if !strings.Contains(o.Stderr, fmt.Sprintf("released %d addresses of node gone", k)) || !strings.Contains(o.Stderr, "run the same command again") || !strings.Contains(o.Stderr, "did not answer within 1s") {
		t.Errorf("the failure does not say what was done and what to do: %q", o.Stderr)
	}
	if l := len(list(t, n)); l != writers*each+1-k {
		t.Errorf("after the cut: %d reservations left, want %d", l, writers*each+1-k)
	}

	// Again, etcd answering: it goes on, with the same 1s timeout, and finishes.
	start = time.Now()
	o = operator(t, "release", "--conf", writeConf(t, n.conf(t, "op", nil)), "--node", "gone")
	k2 := take("release again", o.Stdout)
	t.Logf("released the other %d in %v", k2, time.Since(start))
	wantOK(t, o, "release --node gone again")
	if k+k2 != writers*each || len(released) != writers*each {
		t.Errorf("released %d + %d (%d distinct), want %d", k, k2, len(released), writers*each)
	}
	if !strings.HasSuffix(o.Stdout, "node name gone is no longer bound to a machine in network big\n") {
		t.Errorf("release --node gone did not end with the binding cleared: %.200q", o.Stdout[max(0, len(o.Stdout)-200):])
	}
	if got := listedAs(t, n); len(got) != 1 || !strings.HasPrefix(got[0], "keep@alive=") {
		t.Errorf("left: %v, want only keep@alive", got)
	}
}

// startSlowProxy forwards TCP connections to an etcd member, delaying all the member
// sends by delay: a request is applied at once, and its answer reaches the client late.
func startSlowProxy(t *testing.T, target string, delay time.Duration) *etcdtest.Proxy {
	t.Helper()
	return etcdtest.StartProxy(t, target, etcdtest.Copy, func(from, to net.Conn, done <-chan struct{}) {
		type chunk struct {
			b   []byte
			due time.Time
		}
		q := make(chan chunk, 4096)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { // from the member, into the queue
			defer close(q)
			for {
				buf := make([]byte, 32<<10)
				n, err := from.Read(buf)
				if n > 0 {
					q <- chunk{buf[:n], time.Now().Add(delay)}
				}
				if err != nil {
					return
				}
			}
		})
		for ch := range q { // from the queue, to the client when due
			select {
			case <-time.After(time.Until(ch.due)):
			case <-done:
				return
			}
			if _, err := to.Write(ch.b); err != nil {
				return
			}
		}
	})
}

// TestReleaseNodeKilled: release --node killed (SIGKILL) after etcd applied a batch and
// before its answer came: every address it may have released was printed before, as
// "releasing". Before, the batch was printed only once released, and a kill in between
// left up to 25 released addresses that no run printed.
func TestReleaseNodeKilled(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("killed", eps, map[string]any{"subnet": "10.61.0.0/24"})
	const total = 60 // three batches
	s, err := etcd.Open(etcd.Config{Endpoints: eps, Prefix: "/t/" + t.Name(), Node: "gone", Timeout: time.Minute}, n.name)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]bool{}
	for i := range total {
		a := netip.AddrFrom4([4]byte{10, 61, 0, byte(2 + i)})
		if ok, err := s.Reserve(a, store.Owner{ID: fmt.Sprintf("c%d", i), IfName: "eth0"}); err != nil || !ok {
			t.Fatalf("Reserve(%s) = %v, %v", a, ok, err)
		}
		all[a.String()] = true
	}
	s.Close()
	cli := etcdtest.Client(t, eps)
	held := func() int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, "/t/"+t.Name()+"/"+n.name+"/node/gone/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Count
	}

	// The answers come half a second late: once etcd has applied the first batch, the
	// command is killed while it waits for the answer.
	p := startSlowProxy(t, strings.TrimPrefix(eps[0], "http://"), 500*time.Millisecond)
	slow := *n
	slow.endpoints = []string{p.Endpoint()}
	cmd := exec.Command(cniexec.Bin(t, "local-ipam"), "release", "--conf", writeConf(t, slow.conf(t, "op", nil)), "--node", "gone")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for held() == total {
		if time.Since(start) > 30*time.Second {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("release --node released nothing in 30s: %s %s", stdout.String(), stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	left := held()
	t.Logf("killed after %v with %d of %d released; it printed %d lines", time.Since(start), total-left, total, strings.Count(stdout.String(), "\n"))
	if left == total || left == 0 {
		t.Fatalf("%d of %d left after the kill: the test killed at the wrong time", left, total)
	}

	o := operator(t, "release", "--conf", writeConf(t, n.conf(t, "op", nil)), "--node", "gone")
	wantOK(t, o, "release --node gone again")
	printed := map[string]bool{}
	again := 0
	for _, out := range []string{stdout.String(), o.Stdout} {
		for _, l := range strings.Split(out, "\n") {
			if m := releaseLine.FindStringSubmatch(l); m != nil {
				printed[m[2]] = true
				if out == o.Stdout && m[1] == "released" {
					again++
				}
			}
		}
	}
	if again != int(left) {
		t.Errorf("the second run printed %d as released, want the %d left", again, left)
	}
	for a := range all {
		if !printed[a] {
			t.Errorf("%s was released, and printed by neither run", a)
		}
	}
	if h := held(); h != 0 {
		t.Errorf("%d left after the second run", h)
	}
}
