package main

// The etcd store's figures: local-ipam (which hands etcd networks to local-ipam-etcd)
// against one etcd member on loopback, started here. There is no host-local counterpart;
// the table shows latency, 8-way throughput at 0 and 50,000 allocations, and what the
// separate binary saves the node-local path.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

const etcdSlot = "etcd"

type etcdEnv struct {
	net       string
	endpoints []string
	t         *tool // the binary the runtime runs
	typ       string
	blockSize int    // store.blockSize: 0 (one cluster-wide round robin) unless set
	subnet    string // 10.9.0.0/16 unless set
	node      string // "bench" unless set
	dataDir   string // the plugin's default unless set
	timeout   string // store.timeout: the default unless set
}

func (e etcdEnv) conf() []byte {
	subnet, node := cmp.Or(e.subnet, "10.9.0.0/16"), cmp.Or(e.node, "bench")
	ipam := map[string]any{"type": e.typ, "subnet": subnet,
		"store": map[string]any{"type": "etcd", "endpoints": e.endpoints, "node": node, "prefix": "/bench", "blockSize": e.blockSize}}
	if e.dataDir != "" {
		ipam["dataDir"] = e.dataDir
	}
	if e.timeout != "" {
		ipam["store"].(map[string]any)["timeout"] = e.timeout
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": e.net, "type": "bridge", "ipam": ipam})
	return b
}

func (b *bench) etcdCall(e etcdEnv, cmd, id string) (outcome, error) {
	r := req{cmd: cmd, id: id, stdin: e.conf()}
	o, err := e.t.run(b.ctx, r)
	if err != nil {
		return o, err
	}
	if cmd == "ADD" {
		var res struct {
			IPs []struct{ Address string } `json:"ips"`
		}
		if o.code != 0 || json.Unmarshal(o.stdout, &res) != nil || len(res.IPs) != 1 {
			return o, callError(e.t, r, o, "etcd ADD did not succeed")
		}
		return o, nil
	}
	return o, expectSilentOK(e.t, r, o)
}

// fillEtcd reserves n addresses of 10.9.0.0/16 from .0.2 on, as n ADDs would have, with
// 16 writers (each its own client, as machines are).
func fillEtcd(endpoints []string, net string, n int) error {
	base := netip.MustParseAddr("10.9.0.2")
	addrs := make([]netip.Addr, n)
	a := base
	for i := range addrs {
		addrs[i] = a
		a = a.Next()
	}
	const writers = 16
	err := storetest.Fill(func() (store.Store, error) {
		return etcd.Open(etcd.Config{Endpoints: endpoints, Prefix: "/bench", Node: "bench", Timeout: 10 * time.Minute}, net)
	}, writers, func(w, i int) (netip.Addr, store.Owner, bool) {
		k := w + i*writers
		if k >= n {
			return netip.Addr{}, store.Owner{}, false
		}
		return addrs[k], store.Owner{ID: containerID("etcd-fill", k), IfName: benchIfname}, true
	})
	if err != nil {
		return fmt.Errorf("filling etcd: %w", err)
	}
	st, err := etcd.Open(etcd.Config{Endpoints: endpoints, Prefix: "/bench", Node: "bench", Timeout: time.Minute}, net)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.SetLastReserved(0, addrs[n-1])
}

func (b *bench) groupEtcd() error {
	etcdBin := filepath.Join(filepath.Dir(b.tools[0].bin), "local-ipam-etcd")
	et, err := newTool("local-ipam-etcd", etcdBin, b.cfg.timeout)
	if err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	li := b.tools[0]

	// VERSION: what linking the etcd client costs a process (why it is a second binary).
	for i := 0; i < b.cfg.runs; i++ {
		if err := b.version(li, "etcd-li-version"); err != nil {
			return err
		}
		if err := b.version(et, "etcd-bin-version"); err != nil {
			return err
		}
	}
	for _, v := range []string{"etcd-li-version", "etcd-bin-version"} {
		slot := li.slot
		if v == "etcd-bin-version" {
			slot = et.slot
		}
		for _, d := range b.res.times[slot][v] {
			b.res.addTime(etcdSlot, v, d)
		}
	}

	// One member in this process, then a cluster of three member processes (every write
	// replicated to a quorum before it is answered), both fsyncing as in production.
	dir := filepath.Join(b.root, "etcd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	eps, stop, err := etcdtest.StartEmbeddedServer(dir)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	err = b.etcdRuns("1m", eps, li, et)
	if err == nil {
		err = b.etcdBlocks(eps, li)
	}
	stop()
	if err != nil {
		return err
	}
	c, err := etcdtest.NewClusterFsync(filepath.Join(b.root, "etcd3"), 3)
	if err != nil {
		return fmt.Errorf("starting a 3-member etcd cluster: %w", err)
	}
	defer c.Close()
	return b.etcdRuns("3m", c.Endpoints(), li, et)
}

// etcdRuns measures one etcd deployment; its results are keyed by label.
func (b *bench) etcdRuns(label string, eps []string, li, et *tool) error {
	latency := func(key string, e etcdEnv) error {
		for i := 0; i < b.cfg.runs; i++ {
			id := containerID("etcd-"+label+key, i)
			o, err := b.etcdCall(e, "ADD", id)
			if err != nil {
				return err
			}
			b.res.addTime(etcdSlot, label+"-"+key+"-add", o.dur)
			if o, err = b.etcdCall(e, "DEL", id); err != nil {
				return err
			}
			b.res.addTime(etcdSlot, label+"-"+key+"-del", o.dur)
		}
		return nil
	}
	rate := func(key string, e etcdEnv) error {
		n, w := b.cfg.parallelN, b.cfg.parallel
		wall, err := b.parallel(n, w, func(i int) error {
			_, err := b.etcdCall(e, "ADD", containerID("etcd-par-"+label+key, i))
			return err
		})
		if err != nil {
			return err
		}
		b.res.setRate(etcdSlot, label+"-"+key+"-par-add", float64(n)/wall.Seconds())
		b.logf("etcd %s: %s: %d ADDs by %d callers in %.2fs", label, key, n, w, wall.Seconds())
		return nil
	}

	empty := etcdEnv{net: "bench-etcd-empty", endpoints: eps, t: li, typ: "local-ipam"}
	if _, err := b.etcdCall(empty, "DEL", "warm-up"); err != nil {
		return err
	}
	if err := latency("0", empty); err != nil {
		return err
	}
	if err := rate("0", etcdEnv{net: "bench-etcd-par0", endpoints: eps, t: li, typ: "local-ipam"}); err != nil {
		return err
	}

	start := time.Now()
	for _, net := range []string{"bench-etcd-big", "bench-etcd-par-big"} {
		if err := fillEtcd(eps, net, b.cfg.allocs); err != nil {
			return err
		}
	}
	b.logf("etcd %s: two pools of %d allocations written in %.1fs", label, b.cfg.allocs, time.Since(start).Seconds())
	// The fill is 100,000 writes in a burst. A production cluster compacts its history
	// (auto-compaction, as the README asks); do the same, defragment, and let the members
	// settle, so that the figures are of a pool at rest rather than of etcd digesting
	// the burst.
	if err := compactEtcd(eps); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	big := etcdEnv{net: "bench-etcd-big", endpoints: eps, t: li, typ: "local-ipam"}
	if err := latency("big", big); err != nil {
		return err
	}
	direct := etcdEnv{net: "bench-etcd-big", endpoints: eps, t: et, typ: "local-ipam-etcd"}
	if err := latency("big-direct", direct); err != nil {
		return err
	}
	return rate("big", etcdEnv{net: "bench-etcd-par-big", endpoints: eps, t: li, typ: "local-ipam"})
}

// compactEtcd compacts the cluster's history up to now and defragments every member.
func compactEtcd(eps []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		return err
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("compacting etcd: %w", err)
	}
	for _, ep := range eps {
		if _, err := cli.Defragment(ctx, ep); err != nil {
			return fmt.Errorf("defragmenting %s: %w", ep, err)
		}
	}
	return nil
}

// etcdTable is the etcd group's table (empty when it did not run).
func etcdTable(r *results, cfg config) table {
	k := allocLabel(cfg.allocs)
	t := table{
		title: "etcd store (fsync on): one member in-process, and a cluster of 3 member processes; local-ipam hands each call to local-ipam-etcd; store.blockSize 0",
		cols:  []string{"call", "1 member median ms", "p90", "3 members median ms", "p90", "runs"},
	}
	for _, d := range []struct{ key, label string }{
		{"etcd-li-version", "VERSION, local-ipam"},
		{"etcd-bin-version", "VERSION, local-ipam-etcd (links the etcd client)"},
	} {
		if s, ok := r.stat(etcdSlot, d.key); ok {
			t.rows = append(t.rows, []string{d.label, fmtMS(s.med), fmtMS(s.p90), "", "", fmt.Sprint(s.n)})
		}
	}
	for _, d := range []struct{ key, label string }{
		{"0-add", "ADD, empty pool"},
		{"0-del", "DEL, empty pool"},
		{"big-add", "ADD at " + k + " allocations"},
		{"big-del", "DEL at " + k},
		{"big-direct-add", "ADD at " + k + ", type local-ipam-etcd (no hand-off)"},
		{"big-direct-del", "DEL at " + k + ", type local-ipam-etcd"},
	} {
		one, ok1 := r.stat(etcdSlot, "1m-"+d.key)
		three, ok3 := r.stat(etcdSlot, "3m-"+d.key)
		if !ok1 && !ok3 {
			continue
		}
		row := []string{d.label, "-", "-", "-", "-", fmt.Sprintf("%d/%d", one.n, three.n)}
		if ok1 {
			row[1], row[2] = fmtMS(one.med), fmtMS(one.p90)
		}
		if ok3 {
			row[3], row[4] = fmtMS(three.med), fmtMS(three.p90)
		}
		t.rows = append(t.rows, row)
	}
	for _, d := range []struct{ key, label string }{{"0-par-add", "empty pool"}, {"big-par-add", "at " + k}} {
		one, ok1 := r.rate(etcdSlot, "1m-"+d.key)
		three, ok3 := r.rate(etcdSlot, "3m-"+d.key)
		if !ok1 && !ok3 {
			continue
		}
		row := []string{fmt.Sprintf("%d ADDs by %d callers, %s: calls/s", cfg.parallelN, cfg.parallel, d.label), "-", "", "-", "", ""}
		if ok1 {
			row[1] = fmt.Sprintf("%.0f", one)
		}
		if ok3 {
			row[3] = fmt.Sprintf("%.0f", three)
		}
		t.rows = append(t.rows, row)
	}
	return t
}
