package main

// What a container runtime does with one attachment, and what the harness learns from it.
// Shared by the load and crash scenarios.

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// killSpec says whether and when to SIGKILL a call.
type killSpec struct {
	kill  bool
	after time.Duration
}

// doAdd runs an ADD for a. A success makes a live; a kill or a failure leaves it dirty (the
// runtime will DEL it). Unexpected failures are violations.
func (x *job) doAdd(t *tracker, n network, a *att, k killSpec) outcome {
	op := t.addStart(a)
	o := x.call(call{cmd: "ADD", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), nil), kill: k.kill, killAfter: k.after})
	t.took("ADD", a, o)
	switch {
	case o.ok():
		addrs, err := parseAdd(o)
		if err != nil {
			x.violate("t=%v: ADD of %s: %v", t.now(), a, err)
			t.addDone(op, nil, -1)
			a.dirty = true
			return o
		}
		a.live, a.addrs, a.prev, a.dirty = true, addrs, o.stdout, false
		t.addDone(op, addrs, -1)
	case o.killedByUs():
		a.dirty = true
		t.addDone(op, nil, -1)
	default:
		a.dirty = true
		e, bad := parseError(o)
		if bad != "" {
			x.violate("t=%v: ADD of %s: %s", t.now(), a, bad)
			t.addDone(op, nil, -1)
			return o
		}
		if s, ex := exhaustedSet(x.p, e); ex {
			t.addDone(op, nil, s)
			return o
		}
		t.addDone(op, nil, -1)
		if tryAgain(x.p, e) {
			t.countTryAgain()
			return o
		}
		x.violate("t=%v: ADD of %s failed: %s", t.now(), a, errSummary(o))
	}
	return o
}

// doDupAdd runs a second ADD for a live attachment: it must be refused as a duplicate
// allocation, and leave what a holds alone.
func (x *job) doDupAdd(t *tracker, n network, a *att) outcome {
	t.countDup()
	op := t.addStart(a)
	o := x.call(call{cmd: "ADD", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), nil)})
	if o.ok() {
		addrs, _ := parseAdd(o)
		x.violate("t=%v: a second ADD of %s (which holds %v) succeeded with %v instead of being refused as a duplicate", t.now(), a, a.addrs, addrs)
		t.addDone(op, addrs, -1)
		for _, ad := range addrs {
			if setOf(t.sets, ad) >= 0 && !containsAddr(a.addrs, ad) {
				a.addrs = append(a.addrs, ad)
			}
		}
		return o
	}
	t.addDone(op, nil, -1)
	e, bad := parseError(o)
	switch {
	case bad != "":
		x.violate("t=%v: second ADD of %s: %s", t.now(), a, bad)
	case !isDuplicate(x.p, e):
		x.violate("t=%v: second ADD of %s: expected a duplicate-allocation refusal, got %s", t.now(), a, errSummary(o))
	}
	return o
}

// doDel runs a DEL for a. A success frees it; a kill leaves it dirty; a failure is a
// violation (and leaves it dirty).
func (x *job) doDel(t *tracker, n network, a *att, k killSpec) outcome {
	t.delStart(a)
	a.live = false
	o := x.call(call{cmd: "DEL", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), nil), kill: k.kill, killAfter: k.after})
	t.took("DEL", a, o)
	switch {
	case o.ok():
		t.delDone(a, true)
		a.addrs, a.prev, a.dirty = nil, nil, false
		a.lastDel = fmt.Sprintf("its DEL returned at t=%v", t.now())
	case o.killedByUs():
		t.delDone(a, false)
		a.dirty = true
	default:
		t.delDone(a, false)
		a.dirty = true
		if e, bad := parseError(o); bad == "" && tryAgain(x.p, e) {
			t.countTryAgain() // the runtime retries the DEL later
			return o
		}
		x.violate("t=%v: DEL of %s failed: %s", t.now(), a, describe(o))
	}
	return o
}

// tryAgain: local-ipam's code 11, the network's lock was not free within its 60 s: the
// documented answer to a store too busy, which the runtime retries.
func tryAgain(p *plugin, e cniexec.CNIError) bool { return p.isLocal() && e.Code == 11 }

// doCheck runs a CHECK of a live attachment with its ADD result as prevResult: it must pass.
func (x *job) doCheck(t *tracker, n network, a *att, k killSpec) outcome {
	t.countCheck()
	o := x.call(call{cmd: "CHECK", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), a.prev), kill: k.kill, killAfter: k.after})
	t.took("CHECK", a, o)
	if e, bad := parseError(o); !o.ok() && bad == "" && tryAgain(x.p, e) {
		t.countTryAgain()
		return o
	}
	if !o.ok() && !o.killedByUs() {
		x.violate("t=%v: CHECK of %s (holding %v) failed: %s", t.now(), a, a.addrs, describe(o))
	}
	return o
}

// nextVerb is what the runtime of the crash scenarios does next with a: DEL it when dirty,
// or live three times in four, CHECK it when live otherwise, ADD it when free.
func nextVerb(rng *rand.Rand, a *att) string {
	switch {
	case a.dirty || (a.live && rng.Float64() < 0.75):
		return "DEL"
	case a.live:
		return "CHECK"
	}
	return "ADD"
}

// do runs verb (ADD, DEL or CHECK) for a.
func (x *job) do(verb string, t *tracker, n network, a *att, k killSpec) outcome {
	switch verb {
	case "ADD":
		return x.doAdd(t, n, a, k)
	case "DEL":
		return x.doDel(t, n, a, k)
	case "CHECK":
		return x.doCheck(t, n, a, k)
	}
	panic("no such verb " + verb)
}

// inRounds runs rounds 1 to rounds, each of workers goroutines: work(r, w, rng) is worker
// w's part of round r, rng its own (x.worker(w*stride + r)). After every round, unless
// the job was stopped (then it returns why), after(r) runs.
func (x *job) inRounds(rounds, workers, stride int, work func(r, w int, rng *rand.Rand), after func(r int)) error {
	for r := 1; r <= rounds; r++ {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				work(r, w, x.worker(w*stride+r))
			}()
		}
		wg.Wait()
		if err := x.Err(); err != nil {
			return err
		}
		after(r)
	}
	return nil
}

// settle DELs every dirty attachment, as the runtime retries a DEL until it succeeds.
func (x *job) settle(t *tracker, n network, atts []*att) {
	for _, a := range atts {
		for try := 0; a.dirty && try < 5; try++ {
			x.doDel(t, n, a, killSpec{})
		}
	}
}

func containsAddr[T comparable](s []T, v T) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}
