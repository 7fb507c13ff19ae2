package main

// Node-affine blocks against one cluster-wide round robin (store.blockSize 0), side by
// side on the same member: raft proposals per successful ADD and the latency of bursts
// of machines allocating at once, and the latency of one ADD alone.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// blockSizes are the two settings compared: the default blocks, and none.
var blockSizes = []int{64, 0}

// burstMachines: how many machines allocate at once; burstEach: ADDs per machine.
var burstMachines = []int{1, 16, 64}

const burstEach = 20

// proposals reads etcd_server_proposals_committed_total from the member's /metrics.
func proposals(ctx context.Context, ep string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_server_proposals_committed_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics: no etcd_server_proposals_committed_total", ep)
}

func blkKey(bs int, what string) string { return fmt.Sprintf("blk%d-%s", bs, what) }

// etcdBlocks runs the comparison against the member at eps (one member: its proposals
// are the cluster's).
func (b *bench) etcdBlocks(eps []string, li *tool) error {
	for _, n := range burstMachines {
		for _, bs := range blockSizes {
			if err := b.etcdBurst(eps, li, bs, n); err != nil {
				return err
			}
		}
	}
	// ADD alone, the two settings interleaved call by call (so that a change of the
	// machine's load weighs on both alike), on a compacted member at rest, as in
	// etcdRuns.
	alone := func(key string, net func(bs int) string) error {
		if err := compactEtcd(eps); err != nil {
			return err
		}
		time.Sleep(5 * time.Second)
		for i := 0; i < b.cfg.runs; i++ {
			for _, bs := range blockSizes {
				e := etcdEnv{net: net(bs), endpoints: eps, t: li, typ: "local-ipam", blockSize: bs}
				if err := b.etcdLatency(blkKey(bs, key), e, i); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := alone("0", func(bs int) string { return fmt.Sprintf("bench-blk%d-empty", bs) }); err != nil {
		return err
	}
	big := func(bs int) string { return fmt.Sprintf("bench-blk%d-big", bs) }
	for _, bs := range blockSizes {
		start := time.Now()
		fill := fillEtcd // blockSize 0: as the other big pools
		if bs > 0 {
			fill = func(eps []string, net string, n int) error { return fillEtcdAllocating(eps, net, bs, n) }
		}
		if err := fill(eps, big(bs), b.cfg.allocs); err != nil {
			return err
		}
		b.logf("etcd blocks %d: a pool of %d allocations written in %.1fs", bs, b.cfg.allocs, time.Since(start).Seconds())
	}
	return alone("big", big)
}

// etcdLatency times the i-th ADD (and DEL) of one machine alone.
func (b *bench) etcdLatency(key string, e etcdEnv, i int) error {
	id := containerID("etcd-"+key, i)
	o, err := b.etcdCall(e, "ADD", id)
	if err != nil {
		return err
	}
	b.res.addTime(etcdSlot, key+"-add", o.dur)
	_, err = b.etcdCall(e, "DEL", id)
	return err
}

// etcdBurst: n machines (their own node names and data dirs) each make burstEach ADDs in
// a row, all at once, on a /20 of a network of their own.
func (b *bench) etcdBurst(eps []string, li *tool, bs, n int) error {
	net := fmt.Sprintf("bench-burst-%d-%d", bs, n)
	before, err := proposals(b.ctx, eps[0])
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var durs []time.Duration
	failed := 0
	err = fanOut(b.ctx, n, n, func(m int) error {
		// A timeout long enough for the slowest burst: a call that fails is counted, not
		// retried.
		e := etcdEnv{net: net, endpoints: eps, t: li, typ: "local-ipam", blockSize: bs, subnet: "10.12.0.0/20", timeout: "60s",
			node: fmt.Sprintf("machine%d", m), dataDir: b.root + fmt.Sprintf("/burst-%d-%d-m%d", bs, n, m)}
		for i := range burstEach {
			o, err := e.t.run(b.ctx, req{cmd: "ADD", id: containerID(fmt.Sprintf("burst-%d-m%d", bs, m), i), stdin: e.conf()})
			if err != nil {
				return err
			}
			mu.Lock()
			if o.code == 0 {
				durs = append(durs, o.dur)
			} else {
				failed++
			}
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(durs) == 0 {
		return fmt.Errorf("etcd blockSize %d: every ADD of %d machines failed", bs, n)
	}
	after, err := proposals(b.ctx, eps[0])
	if err != nil {
		return err
	}
	slices.Sort(durs)
	q := func(p float64) float64 { return ms(durs[min(len(durs)-1, int(p*float64(len(durs))))]) }
	key := blkKey(bs, fmt.Sprintf("burst%d", n))
	b.res.setRate(etcdSlot, key+"-prop", (after-before)/float64(len(durs)))
	b.res.setRate(etcdSlot, key+"-p50", q(0.50))
	b.res.setRate(etcdSlot, key+"-p99", q(0.99))
	b.res.setRate(etcdSlot, key+"-max", ms(durs[len(durs)-1]))
	b.res.setRate(etcdSlot, key+"-failed", float64(failed))
	b.logf("etcd blockSize %d: %d machines x %d ADDs: %.2f proposals/ADD, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d failed",
		bs, n, burstEach, (after-before)/float64(len(durs)), q(0.50), q(0.99), ms(durs[len(durs)-1]), failed)
	return nil
}

// fillEtcdAllocating reserves n addresses of 10.9.0.0/16 as ADDs of 16 machines do (the
// allocator, each machine a node of its own: with blocks, each claims blocks as it goes).
func fillEtcdAllocating(endpoints []string, net string, bs, n int) error {
	r, err := ranges.New(netip.MustParsePrefix("10.9.0.0/16"), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		return err
	}
	pool := ranges.Pool{Sets: []ranges.Set{{r}}}
	const writers = 16
	return fanOut(context.Background(), writers, writers, func(w int) error {
		st, err := etcd.Open(etcd.Config{Endpoints: endpoints, Prefix: "/bench", Node: fmt.Sprintf("fill%d", w), Timeout: 10 * time.Minute, BlockSize: bs}, net)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := w; i < n; i += writers {
			if _, err := allocator.Allocate(st, pool, store.Owner{ID: containerID("etcd-fill", i), IfName: benchIfname}, nil); err != nil {
				return fmt.Errorf("filling etcd: %v", err)
			}
		}
		return nil
	})
}

// etcdBlocksTable is the comparison's table (empty when it did not run).
func etcdBlocksTable(r *results, cfg config) table {
	t := table{
		title: fmt.Sprintf("etcd store, one member (fsync on): node-affine blocks of 64 against blockSize 0; bursts of machines making %d ADDs each at once on a /20", burstEach),
		cols:  []string{"", "blocks 64", "blockSize 0"},
	}
	val := func(bs int, key string, f func(float64) string) (string, bool) {
		v, ok := r.rate(etcdSlot, blkKey(bs, key))
		if !ok {
			return "-", false
		}
		return f(v), true
	}
	f2 := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, n := range burstMachines {
		for _, d := range []struct{ key, label string }{
			{"prop", "raft proposals per ADD"}, {"p50", "p50 ms"}, {"p99", "p99 ms"}, {"max", "max ms"}, {"failed", "ADDs failed"},
		} {
			key := fmt.Sprintf("burst%d-%s", n, d.key)
			f := f2
			if d.key == "prop" {
				f = func(v float64) string { return fmt.Sprintf("%.2f", v) }
			} else if d.key != "failed" {
				f = func(v float64) string { return fmt.Sprintf("%.0f", v) }
			}
			a, okA := val(64, key, f)
			z, okZ := val(0, key, f)
			if okA || okZ {
				t.rows = append(t.rows, []string{fmt.Sprintf("%d machines: %s", n, d.label), a, z})
			}
		}
	}
	for _, d := range []struct{ key, label string }{{"0-add", "ADD alone, empty pool: median ms"}, {"big-add", "ADD alone at " + allocLabel(cfg.allocs) + ": median ms"}} {
		a, okA := r.stat(etcdSlot, blkKey(64, d.key))
		z, okZ := r.stat(etcdSlot, blkKey(0, d.key))
		if okA || okZ {
			t.rows = append(t.rows, []string{d.label, fmtMS(a.med), fmtMS(z.med)})
		}
	}
	return t
}

// etcdBlocksTargets: proposals per ADD at 16 and 64 machines at most 1.10 with blocks,
// and an ADD alone no slower with blocks than without, within 5%.
func etcdBlocksTargets(r *results, cfg config) []target {
	var ts []target
	for _, n := range []int{16, 64} {
		v, ok := r.rate(etcdSlot, blkKey(64, fmt.Sprintf("burst%d-prop", n)))
		ts = append(ts, target{name: fmt.Sprintf("etcd blocks: raft proposals per ADD, %d machines at once ≤ 1.10", n), value: v, limit: 1.10, atMost: true, have: ok,
			unitFmt: func(v float64) string { return fmt.Sprintf("%.2f", v) }})
	}
	for _, d := range []struct{ key, label string }{{"0-add", "empty pool"}, {"big-add", "at " + allocLabel(cfg.allocs)}} {
		a, okA := r.stat(etcdSlot, blkKey(64, d.key))
		z, okZ := r.stat(etcdSlot, blkKey(0, d.key))
		ts = append(ts, target{name: "etcd blocks: ADD alone, " + d.label + " ≤ 1.05× blockSize 0", value: a.med / z.med, limit: 1.05, atMost: true, have: okA && okZ, unitFmt: fmtX})
	}
	return ts
}
