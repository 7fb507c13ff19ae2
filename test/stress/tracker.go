package main

// The tracker follows, from ADD results and DEL completions, which attachment owns which
// address while calls run concurrently, and checks two invariants as they happen:
//
//   - at no moment does one address belong to two live attachments: an attachment
//     definitely holds an address from the return of its successful ADD to the start of
//     its DEL; a successful ADD that returns an address another attachment definitely
//     holds is a violation;
//   - "no free address" only when the pool really is full: an attachment may hold an
//     address of every range set from the start of its ADD to the return of its
//     successful DEL; an ADD that answers "no free address" in set s, although during the
//     whole call fewer other attachments than s has addresses could have held one, is a
//     violation.

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

type tracker struct {
	x    *job
	sets []rangeSet
	t0   time.Time

	mu       sync.Mutex
	holder   map[netip.Addr]holding
	possible int // attachments that may hold an address (of every set)
	inflight map[*addOp]bool
	// statistics
	adds, addOK, exhausted, dels, checks, dups int
	peakLive, live                             int
	tryAgain                                   int           // code 11: the lock was not free within local-ipam's 60 s
	leftByKills                                int           // etcd crashes: killed ADDs that had reserved, seen before the runtime's DEL
	slowest                                    time.Duration // the longest call
	slowestWhat                                string
}

// took records a call's duration.
func (t *tracker) took(verb string, a *att, o outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o.dur > t.slowest {
		t.slowest, t.slowestWhat = o.dur, verb+" of "+a.String()
	}
}

func (t *tracker) countTryAgain() { t.mu.Lock(); t.tryAgain++; t.mu.Unlock() }

type holding struct {
	a  *att
	at time.Duration
}

type addOp struct {
	a   *att
	max int // the most attachments that could have held an address during the call
}

func newTracker(x *job, sets []rangeSet) *tracker {
	return &tracker{x: x, sets: sets, t0: time.Now(), holder: map[netip.Addr]holding{}, inflight: map[*addOp]bool{}}
}

func (t *tracker) now() time.Duration { return time.Since(t.t0).Round(time.Microsecond) }

// addStart is called before the ADD process starts.
func (t *tracker) addStart(a *att) *addOp {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.adds++
	if !a.counted {
		a.counted = true
		t.possible++
		for op := range t.inflight {
			op.max = max(op.max, t.possible)
		}
	}
	op := &addOp{a: a, max: t.possible}
	t.inflight[op] = true
	return op
}

// addDone is called when the ADD process has exited. addrs is what a successful ADD
// returned; exhausted is the range set of a "no free address" failure (-1 otherwise).
func (t *tracker) addDone(op *addOp, addrs []netip.Addr, exhausted int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, op)
	a := op.a
	now := t.now()
	if addrs != nil {
		t.addOK++
		t.live++
		t.peakLive = max(t.peakLive, t.live)
		perSet := map[int]netip.Addr{}
		for _, ad := range addrs {
			s := setOf(t.sets, ad)
			switch {
			case s < 0:
				t.x.violate("t=%v: ADD of %s returned %s, outside every range set", now, a, ad)
			case perSet[s].IsValid():
				t.x.violate("t=%v: ADD of %s returned two addresses of range set %d: %s and %s", now, a, s, perSet[s], ad)
			case ad == t.sets[s].gw:
				t.x.violate("t=%v: ADD of %s returned the gateway %s", now, a, ad)
			}
			if s >= 0 {
				perSet[s] = ad
			}
			if h, ok := t.holder[ad]; ok && h.a != a {
				t.x.violate("t=%v: ADD of %s returned %s, which %s holds (its ADD returned it at t=%v and no DEL of it has started)", now, a, ad, h.a, h.at)
			}
			t.holder[ad] = holding{a: a, at: now}
		}
		if len(perSet) != len(t.sets) {
			t.x.violate("t=%v: ADD of %s returned %v: not one address per range set", now, a, addrs)
		}
		return
	}
	if exhausted >= 0 {
		t.exhausted++
		if exhausted >= len(t.sets) {
			t.x.violate("t=%v: ADD of %s: no free address in range set %d, which does not exist", now, a, exhausted)
			return
		}
		others := op.max - 1
		if s := t.sets[exhausted]; uint64(others) < s.size {
			t.x.violate("t=%v: ADD of %s answered no free address in range set %d (%s, %d addresses) while at most %d other attachments could have held one during the call",
				now, a, exhausted, s.desc, s.size, others)
		}
	}
}

// delStart is called before a DEL process starts: from now on the attachment's addresses
// may be free at any moment.
func (t *tracker) delStart(a *att) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dels++
	if a.live {
		t.live--
	}
	for _, ad := range a.addrs {
		if h, ok := t.holder[ad]; ok && h.a == a {
			delete(t.holder, ad)
		}
	}
}

// delDone is called when a DEL returned; ok: it succeeded, so the attachment holds nothing.
func (t *tracker) delDone(a *att, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok && a.counted {
		a.counted = false
		t.possible--
	}
}

func (t *tracker) countCheck() { t.mu.Lock(); t.checks++; t.mu.Unlock() }
func (t *tracker) countDup()   { t.mu.Lock(); t.dups++; t.adds--; t.mu.Unlock() } // counted by addStart too

func (t *tracker) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := fmt.Sprintf("%d ADD (%d ok, %d no free address), %d DEL, %d CHECK, %d repeated ADD; peak %d live; slowest call %v",
		t.adds, t.addOK, t.exhausted, t.dels, t.checks, t.dups, t.peakLive, t.slowest.Round(time.Millisecond))
	if t.tryAgain > 0 {
		s += fmt.Sprintf("; %d answered try again later (code 11)", t.tryAgain)
	}
	return s
}
