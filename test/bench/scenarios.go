package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// netEnv is one tool's copy of one scenario's network: its data dir and the model of what the
// store holds.
type netEnv struct {
	t       *tool
	net     string
	subnet  string
	dataDir string
	p       *pool
}

func (e *netEnv) conf(prev json.RawMessage) []byte {
	return netConf(e.net, e.t.typ, e.subnet, e.dataDir, prev)
}

type bench struct {
	cfg   config
	tools []*tool // [0] local-ipam slot, [1] host-local slot
	root  string
	res   *results
	log   io.Writer
	ctx   context.Context
	fix50 []*netEnv // the 50k fixture, shared by the 50k and rss groups
	pair  string    // key of the VERSION samples the running loop takes alongside
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// setup writes the model's store (generated once, in memory) into one data dir per tool, so
// both start from identical states, and makes one untimed warm-up call per tool (a DEL of a
// container that does not exist): local-ipam builds its index there, host-local warms the page
// cache.
func (b *bench) setup(scenario, net, subnet string, p *pool) ([]*netEnv, error) {
	start := time.Now()
	var envs []*netEnv
	var dirs []string
	for _, t := range b.tools {
		dir := filepath.Join(b.root, scenario, t.slot)
		envs = append(envs, &netEnv{t: t, net: net, subnet: subnet, dataDir: dir, p: p.clone()})
		dirs = append(dirs, dir)
	}
	if err := writeStores(dirs, net, p); err != nil {
		return nil, fmt.Errorf("%s: writing the store: %w", scenario, err)
	}
	b.logf("%s: store of %d allocations written for each tool in %.1fs", scenario, len(p.owner), time.Since(start).Seconds())
	for _, e := range envs {
		o, err := b.silent(e, "DEL", containerID("warm-up-"+scenario, 0), nil)
		if err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", scenario, err)
		}
		b.logf("%s: %s warm-up call %.0f ms", scenario, e.t.slot, ms(o.dur))
	}
	return envs, nil
}

// prepare lays out the model's store over subnet (layout fills it) and sets it up for
// each tool.
func (b *bench) prepare(scenario, net, subnet string, layout func(v4range) (*pool, error)) ([]*netEnv, error) {
	r, err := newV4Range(subnet)
	if err != nil {
		return nil, err
	}
	p, err := layout(r)
	if err != nil {
		return nil, err
	}
	return b.setup(scenario, net, subnet, p)
}

// loop runs fn(i, e) for i = 0, 1, ... interleaving the tools (so drift affects both alike).
// Each tool stops after cfg.runs iterations, or earlier once it has spent cfg.budget and done
// at least cfg.minRuns. After each iteration it also times a VERSION call of that tool under
// "version@"+name: each scenario's ratio to VERSION is taken against a baseline measured at
// the same time, not minutes earlier on a machine whose load may have changed.
func (b *bench) loop(name string, envs []*netEnv, fn func(i int, e *netEnv) error) error {
	paired := name != "version"
	b.pair = "version@" + name
	defer func() { b.pair = "" }()
	spent := make([]time.Duration, len(envs))
	done := make([]int, len(envs))
	// One tool's runs at a time: interleaved, every local-ipam call would follow a
	// host-local call that has just read 50,000 files through the CPU caches.
	for k, e := range envs {
		for i := 0; done[k] < b.cfg.runs && (done[k] < b.cfg.minRuns || spent[k] < b.cfg.budget); i++ {
			start := time.Now()
			if err := fn(i, e); err != nil {
				return err
			}
			spent[k] += time.Since(start)
			done[k]++
			if paired {
				if err := b.version(e.t, b.pair); err != nil {
					return err
				}
			}
			if err := b.ctx.Err(); err != nil {
				return err
			}
		}
	}
	for k, e := range envs {
		if done[k] < b.cfg.runs {
			b.res.note("%s: %s stopped at %d runs of %d (time budget %v)", name, e.t.slot, done[k], b.cfg.runs, b.cfg.budget)
		}
	}
	return nil
}

// loopVerified runs loop and then checks the stores of group against their models.
func (b *bench) loopVerified(group, name string, envs []*netEnv, fn func(i int, e *netEnv) error) error {
	if err := b.loop(name, envs, fn); err != nil {
		return err
	}
	return b.verify(group, envs)
}

// version times one VERSION call under key.
func (b *bench) version(t *tool, key string) error {
	r := req{cmd: "VERSION", stdin: versionStdin}
	o, err := t.run(b.ctx, r)
	if err != nil {
		return err
	}
	if err := expectVersion(t, r, o); err != nil {
		return err
	}
	b.res.addTime(t.slot, key, o.dur)
	return nil
}

// rec records a timed call of the running loop, paired with its VERSION samples.
func (b *bench) rec(e *netEnv, key string, d time.Duration) {
	b.res.addTime(e.t.slot, key, d)
	b.res.setPair(key, b.pair)
}

// add does a timed dynamic ADD for container id, checks that it returns the address the model
// predicts (host-local's round-robin choice) and that the store file is right, and updates the
// model.
func (b *bench) add(e *netEnv, id string) (outcome, json.RawMessage, uint32, error) {
	want, _, ok := e.p.next()
	if !ok {
		return outcome{}, nil, 0, fmt.Errorf("%s: model says the range is full", e.t.slot)
	}
	r := req{cmd: "ADD", id: id, stdin: e.conf(nil)}
	o, err := e.t.run(b.ctx, r)
	if err != nil {
		return o, nil, 0, err
	}
	got, err := expectAdd(e.t, r, o, e.p.r, want)
	if err != nil {
		return o, nil, 0, err
	}
	e.p.reserve(got, id, benchIfname)
	if err := checkFile(e, got, id); err != nil {
		return o, nil, 0, callError(e.t, r, o, "%v", err)
	}
	return o, json.RawMessage(append([]byte(nil), o.stdout...)), got, nil
}

// silent does a timed call of cmd (DEL or CHECK; prev is CHECK's prevResult) for container
// id, which must succeed with nothing on stdout.
func (b *bench) silent(e *netEnv, cmd, id string, prev json.RawMessage) (outcome, error) {
	r := req{cmd: cmd, id: id, stdin: e.conf(prev)}
	o, err := e.t.run(b.ctx, r)
	if err != nil {
		return o, err
	}
	return o, expectSilentOK(e.t, r, o)
}

// del does a timed DEL of a container that holds address a, and checks the file is gone.
func (b *bench) del(e *netEnv, id string, a uint32) (outcome, error) {
	o, err := b.silent(e, "DEL", id, nil)
	if err != nil {
		return o, err
	}
	e.p.release(a)
	if _, err := os.Stat(filepath.Join(e.dataDir, e.net, addr4(a).String())); !errors.Is(err, os.ErrNotExist) {
		return o, callError(e.t, req{cmd: "DEL", id: id}, o, "address file %s still there after DEL (%v)", addr4(a), err)
	}
	return o, nil
}

// cycle does a timed ADD of a new container id, with check a timed CHECK of it (its ADD
// result as prevResult), and a timed DEL, recorded under key-add, key-check and key-del:
// the store is as before.
func (b *bench) cycle(e *netEnv, id, key string, check bool) error {
	o, prev, a, err := b.add(e, id)
	if err != nil {
		return err
	}
	b.rec(e, key+"-add", o.dur)
	if check {
		if o, err = b.silent(e, "CHECK", id, prev); err != nil {
			return err
		}
		b.rec(e, key+"-check", o.dur)
	}
	if o, err = b.del(e, id, a); err != nil {
		return err
	}
	b.rec(e, key+"-del", o.dur)
	return nil
}

// checkFile: the address file exists with host-local's content.
func checkFile(e *netEnv, a uint32, id string) error {
	data, err := os.ReadFile(filepath.Join(e.dataDir, e.net, addr4(a).String()))
	if err != nil {
		return fmt.Errorf("address file: %w", err)
	}
	if want := id + lineBreak + benchIfname; string(data) != want {
		return fmt.Errorf("address file %s holds %q, want %q", addr4(a), data, want)
	}
	return nil
}

func (b *bench) verify(scenario string, envs []*netEnv) error {
	for _, e := range envs {
		if err := verifyStore(e.dataDir, e.net, e.p); err != nil {
			return fmt.Errorf("%s: %s: %w", scenario, e.t.slot, err)
		}
	}
	return nil
}

// ---- groups ----

func (b *bench) groupVersion() error {
	// The process-start floor on its own, interleaved between the tools.
	err := b.loop("version", b.plainEnvs(), func(i int, e *netEnv) error {
		return b.version(e.t, "version")
	})
	b.res.setPair("version", "version")
	return err
}

func (b *bench) plainEnvs() []*netEnv {
	var envs []*netEnv
	for _, t := range b.tools {
		envs = append(envs, &netEnv{t: t})
	}
	return envs
}

func (b *bench) groupEmpty() error {
	envs, err := b.prepare("empty", "bench-empty", "10.1.0.0/16", func(r v4range) (*pool, error) { return newPool(r), nil })
	if err != nil {
		return err
	}
	return b.loopVerified("empty", "empty ADD/DEL", envs, func(i int, e *netEnv) error {
		return b.cycle(e, containerID("empty-"+e.t.slot, i), "empty", false)
	})
}

// fixture50k is the store with cfg.allocs allocations in 10.1.0.0/16, made once.
func (b *bench) fixture50k() ([]*netEnv, error) {
	if b.fix50 != nil {
		return b.fix50, nil
	}
	envs, err := b.prepare("50k", "bench-50k", "10.1.0.0/16", func(r v4range) (*pool, error) {
		return layoutFilled(r, b.cfg.allocs, "bench-50k")
	})
	if err != nil {
		return nil, err
	}
	b.fix50 = envs
	return envs, nil
}

func (b *bench) group50k() error {
	envs, err := b.fixture50k()
	if err != nil {
		return err
	}
	// ADD a new container, CHECK it (prevResult from the ADD), DEL it: each timed, and the
	// store is back at cfg.allocs allocations after each iteration.
	err = b.loop(allocLabel(b.cfg.allocs)+" ADD/CHECK/DEL", envs, func(i int, e *netEnv) error {
		return b.cycle(e, containerID("50k-new-"+e.t.slot, i), "50k", true)
	})
	if err != nil {
		return err
	}
	// DEL of a container from the generated store (not one this run just added, which an
	// implementation might still have at hand), then ADD it back, untimed, to stay at
	// cfg.allocs allocations.
	err = b.loop(allocLabel(b.cfg.allocs)+" DEL old", envs, func(i int, e *netEnv) error {
		id := containerID("bench-50k", (i*7919)%b.cfg.allocs)
		a, ok := e.p.find(id + lineBreak + benchIfname)
		if !ok {
			return fmt.Errorf("%s: container %s not in the model", e.t.slot, shortID(id))
		}
		o, err := b.del(e, id, a)
		if err != nil {
			return err
		}
		b.rec(e, "50k-del-old", o.dur)
		_, _, _, err = b.add(e, id)
		return err
	})
	if err != nil {
		return err
	}
	return b.loopVerified("50k", allocLabel(b.cfg.allocs)+" DEL unknown", envs, func(i int, e *netEnv) error {
		o, err := b.silent(e, "DEL", containerID("50k-unknown-"+e.t.slot, i), nil)
		if err != nil {
			return err
		}
		b.rec(e, "50k-del-unknown", o.dur)
		return nil
	})
}

func (b *bench) groupFull() error {
	envs, err := b.prepare("full16", "bench-full", "10.1.0.0/16", func(r v4range) (*pool, error) {
		return layoutFilled(r, r.usable(), "bench-full")
	})
	if err != nil {
		return err
	}
	return b.loopVerified("full16", "full /16 ADD", envs, func(i int, e *netEnv) error {
		r := req{cmd: "ADD", id: containerID("full-"+e.t.slot, i)}
		r.stdin = e.conf(nil)
		o, err := e.t.run(b.ctx, r)
		if err != nil {
			return err
		}
		ce, err := expectFailure(e.t, r, o)
		if err != nil {
			return err
		}
		if i == 0 {
			b.res.note("full /16 ADD error from %s: code %d, %q", e.t.slot, ce.Code, ce.Msg)
		}
		b.rec(e, "full16-add", o.dur)
		return nil
	})
}

func (b *bench) groupWalk() error {
	var hole, last uint32
	envs, err := b.prepare("walk20", "bench-walk", "10.2.0.0/20", func(r v4range) (p *pool, err error) {
		p, hole, last, err = layoutOneHole(r, "bench-walk")
		return p, err
	})
	if err != nil {
		return err
	}
	p := envs[0].p
	b.res.note("/20 walk: %d of %d addresses taken, last_reserved_ip %s, the free one %s",
		len(p.owner), p.r.usable(), addr4(last), addr4(hole))
	// Iteration 0 starts from exactly that state; after it the cursor sits on the hole
	// itself, and after the untimed DEL the walk from there is one step longer (it starts at
	// X rather than X+1): still all the way round.
	return b.loopVerified("walk20", "/20 walk ADD", envs, func(i int, e *netEnv) error {
		id := containerID("walk-"+e.t.slot, i)
		o, _, a, err := b.add(e, id)
		if err != nil {
			return err
		}
		if a != hole {
			return fmt.Errorf("%s: /20 walk ADD got %s, want the only free address %s", e.t.slot, addr4(a), addr4(hole))
		}
		b.rec(e, "walk20-add", o.dur)
		_, err = b.del(e, id, a) // reset, untimed
		return err
	})
}

// parallel runs n calls from w concurrent callers and returns the wall time.
func (b *bench) parallel(n, w int, call func(i int) error) (time.Duration, error) {
	start := time.Now()
	err := fanOut(b.ctx, n, w, call)
	return time.Since(start), err
}

func (b *bench) groupParallel() error {
	const subnet = "10.1.0.0/16"
	r, err := newV4Range(subnet)
	if err != nil {
		return err
	}
	n, w := b.cfg.parallelN, b.cfg.parallel
	if n > r.usable() {
		return fmt.Errorf("parallel: %d ADDs do not fit in %s", n, subnet)
	}
	envs, err := b.setup("parallel", "bench-par", subnet, newPool(r))
	if err != nil {
		return err
	}
	// The tools run one after the other: their parallel phases must not overlap.
	for _, e := range envs {
		got := make([]uint32, n)
		ids := make([]string, n)
		wall, err := b.parallel(n, w, func(i int) error {
			ids[i] = containerID("par-"+e.t.slot, i)
			r := req{cmd: "ADD", id: ids[i], stdin: e.conf(nil)}
			o, err := e.t.run(b.ctx, r)
			if err != nil {
				return err
			}
			a, err := expectAdd(e.t, r, o, e.p.r, 0)
			got[i] = a
			return err
		})
		if err != nil {
			return fmt.Errorf("parallel ADD: %w", err)
		}
		b.res.setRate(e.t.slot, "par-add", float64(n)/wall.Seconds())
		b.logf("parallel: %s %d ADDs by %d callers in %.2fs", e.t.slot, n, w, wall.Seconds())

		seen := make(map[uint32]string, n)
		for i, a := range got {
			if prev, dup := seen[a]; dup {
				return fmt.Errorf("parallel ADD: %s gave %s to both %s and %s", e.t.slot, addr4(a), shortID(prev), shortID(ids[i]))
			}
			seen[a] = ids[i]
			e.p.owner[a] = ids[i] + lineBreak + benchIfname
		}
		// From an empty store, serialised by the lock, round robin hands out exactly the
		// first n addresses, whatever the interleaving; the cursor ends on the n-th.
		ord := r.order()[:n]
		e.p.last, e.p.hasLast = ord[n-1], true
		for _, a := range ord {
			if _, ok := seen[a]; !ok {
				return fmt.Errorf("parallel ADD: %s's %d addresses are not the first %d of the range (%s missing), unlike host-local's round robin", e.t.slot, n, n, addr4(a))
			}
		}
		if err := verifyStore(e.dataDir, e.net, e.p); err != nil {
			return fmt.Errorf("parallel: %s: %w", e.t.slot, err)
		}

		wall, err = b.parallel(n, w, func(i int) error {
			r := req{cmd: "VERSION", stdin: versionStdin}
			o, err := e.t.run(b.ctx, r)
			if err != nil {
				return err
			}
			return expectVersion(e.t, r, o)
		})
		if err != nil {
			return fmt.Errorf("parallel VERSION: %w", err)
		}
		b.res.setRate(e.t.slot, "par-version", float64(n)/wall.Seconds())
		b.logf("parallel: %s %d VERSIONs by %d callers in %.2fs", e.t.slot, n, w, wall.Seconds())
	}
	return nil
}

func (b *bench) groupRSS() error {
	envs, err := b.fixture50k()
	if err != nil {
		return err
	}
	helper, warn := cniexec.BuildMiddleman(b.root)
	if warn != "" {
		b.res.note("peak RSS: %s", warn)
	}
	for _, e := range envs {
		for i := 0; i < b.cfg.rssRuns; i++ {
			id := containerID("rss-"+e.t.slot, i)
			want, _, _ := e.p.next()
			r := req{cmd: "ADD", id: id, stdin: e.conf(nil)}
			o, floor, err := e.t.runRSS(b.ctx, helper, r)
			if err != nil {
				return err
			}
			a, err := expectAdd(e.t, r, o, e.p.r, want)
			if err != nil {
				return err
			}
			e.p.reserve(a, id, benchIfname)
			b.res.addRSS(e.t.slot, "rss-add", o.maxrss, floor)
			if _, err := b.del(e, id, a); err != nil {
				return err
			}

			r = req{cmd: "VERSION", stdin: versionStdin}
			o, floor, err = e.t.runRSS(b.ctx, helper, r)
			if err != nil {
				return err
			}
			if err := expectVersion(e.t, r, o); err != nil {
				return err
			}
			b.res.addRSS(e.t.slot, "rss-version", o.maxrss, floor)
		}
		if v, ok := b.res.rssMedian(e.t.slot, "rss-version"); ok && v <= float64(b.res.rssFloor)*1.05 {
			b.res.note("peak RSS: %s's VERSION (%.0f KiB) is at the measurement floor (%d KiB, the helper's own RSS): the ratio understates ADD's growth", e.t.slot, v, b.res.rssFloor)
		}
	}
	return b.verify("rss", envs)
}
