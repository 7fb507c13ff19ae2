package main

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// cutProxy forwards TCP connections to an etcd member until budget bytes have gone from
// the clients to it; from then on it forwards nothing more, either way, and keeps the
// connections open: etcd stops answering in the middle of a command.
type cutProxy struct {
	ln     net.Listener
	budget atomic.Int64
	done   chan struct{}
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string, budget int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, done: make(chan struct{})}
	p.budget.Store(budget)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, u, true)
			go p.pipe(u, c, false)
		}
	}()
	return p
}

func (p *cutProxy) cut() bool { return p.budget.Load() < 0 }

// pipe copies from to to until the budget is spent (counted on the clients' side).
func (p *cutProxy) pipe(from, to net.Conn, counted bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if counted {
				p.budget.Add(-int64(n))
			}
			if p.cut() {
				<-p.done // hold the connection, answer nothing
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

func (p *cutProxy) endpoint() string { return "http://" + p.ln.Addr().String() }

var releasedLine = regexp.MustCompile(`^released (\S+) \(container (\S+), ifname eth0\)$`)

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
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Reservations of node "gone", as its ADDs made them; each writer in a
			// bitmap page of its own.
			s, err := etcd.Open(etcd.Config{Endpoints: eps, Prefix: "/t/" + t.Name(), Node: "gone", Timeout: 5 * time.Minute}, "big")
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			a := netip.AddrFrom4([4]byte{10, 57, byte(16 * w), 0})
			for i := range each {
				a = a.Next()
				if ok, err := s.Reserve(a, store.Owner{ID: fmt.Sprintf("c%d-%d", w, i), IfName: "eth0"}); err != nil || !ok {
					errs <- fmt.Errorf("Reserve(%s) = %v, %v", a, ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A reservation of another node, which must stay.
	wantOK(t, add(t, n, "alive", "keep"), "ADD on node alive")

	released := map[string]bool{}
	take := func(what, stdout string) int {
		k := 0
		for _, l := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
			m := releasedLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if released[m[1]] {
				t.Errorf("%s: %s printed as released twice", what, m[1])
			}
			if !strings.HasPrefix(m[2], "c") {
				t.Errorf("%s: released %s of container %s, not node gone's", what, m[1], m[2])
			}
			released[m[1]] = true
			k++
		}
		return k
	}

	// etcd stops answering after the first few batches.
	p := startCutProxy(t, strings.TrimPrefix(eps[0], "http://"), 40<<10)
	cut := *n
	cut.endpoints = []string{p.endpoint()}
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
