package main

// Crashes: plugin processes SIGKILLed at random instants (crash-random) or at each file
// read, write or open in the store (crash-io). After the storm the runtime DELs every attachment
// whose ADD or DEL was killed or failed, as a real runtime does, and then:
//   - no empty or torn record, no record of an attachment that holds nothing, no
//     attachment with two addresses in one range set, every live attachment's address is
//     in a record naming it (checkRecords);
//   - CHECK of every live attachment with its ADD result as prevResult passes (local-ipam's
//     CHECK reads its index and the records: they must agree);
//   - DEL of everything leaves no record, and a fresh round of ADDs gets every address of
//     the /26 (an index that still marked a freed address taken would lose it).

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// killStats counts kills by verb.
type killStats struct {
	mu       sync.Mutex
	sent     map[string]int
	landed   map[string]int
	early    int // delays under 100 µs
	points   map[string]int
	unkilled map[string]time.Duration // EWMA of unkilled call durations
}

func newKillStats() *killStats {
	return &killStats{sent: map[string]int{}, landed: map[string]int{}, points: map[string]int{}, unkilled: map[string]time.Duration{}}
}

func (k *killStats) record(verb string, sent bool, o outcome, delay time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sent {
		k.sent[verb]++
		if delay < 100*time.Microsecond {
			k.early++
		}
	}
	if o.killedByUs() {
		k.landed[verb]++
	} else if o.ok() {
		if d := k.unkilled[verb]; d == 0 {
			k.unkilled[verb] = o.dur
		} else {
			k.unkilled[verb] = (d*7 + o.dur) / 8
		}
	}
}

func (k *killStats) typical(verb string) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d := k.unkilled[verb]; d > 0 {
		return d
	}
	return 3 * time.Millisecond
}

func (k *killStats) total() (sent, landed int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, v := range k.sent {
		sent += v
	}
	for _, v := range k.landed {
		landed += v
	}
	return
}

func (k *killStats) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var parts []string
	for _, v := range []string{"ADD", "DEL", "CHECK"} {
		if k.sent[v] > 0 || k.landed[v] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d/%d", v, k.landed[v], k.sent[v]))
		}
	}
	return strings.Join(parts, ", ")
}

// crashNetwork is the network both crash scenarios run on: two range sets, an IPv4 /26
// and an IPv6 /64, so that a kill can fall between the two reservations of an ADD (and
// between its two releases).
func crashNetwork(dataDir string) (network, []rangeSet) {
	ranges := [][]map[string]string{{{"subnet": "10.33.0.0/26"}}, {{"subnet": "fd00:33::/64"}}}
	return network{name: "stress-crash", dataDir: dataDir, ipam: map[string]any{"ranges": ranges}},
		[]rangeSet{subnetSet(netip.MustParsePrefix("10.33.0.0/26")), subnetSet(netip.MustParsePrefix("fd00:33::/64"))}
}

// logUniform draws from [lo, hi] evenly on a log scale: as many kills in the first 10 µs
// as between 300 µs and 3 ms.
func logUniform(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	return time.Duration(math.Exp(l + rng.Float64()*(h-l)))
}

// stormSpec is a crash-random storm: workers at a time, perWorker attachments each, kills
// drawn log-uniform from 1 µs to maxDelay (half of them; the other half uniform from
// lateFrom to 1.2 times a typical call of the verb).
type stormSpec struct {
	prefix             string
	workers, perWorker int
	target, rounds     int // SIGKILLs sent, quiescent checks
	shortTarget        int // in one round
	maxDelay           time.Duration
	lateFrom           float64 // the uniform half: from lateFrom to 1.2 times a typical call
}

func crashRandom(x *job) error {
	n, sets := crashNetwork(x.dir + "/data")
	return x.killStorm(n, sets, stormSpec{prefix: "cr", workers: 6, perWorker: 12, target: 900, rounds: 3, shortTarget: 150, maxDelay: 3 * time.Millisecond})
}

// crashEtcd is crash-random on a network kept in etcd, used by 4 machines. An etcd call
// lasts several times a disk call (two programs started, round trips to the member):
// the kills are drawn up to 20 ms, and half of them over the last 70% of a typical call,
// where its etcd work is.
func crashEtcd(x *job) error {
	ranges := [][]map[string]string{{{"subnet": "10.34.0.0/26"}}, {{"subnet": "fd00:34::/64"}}}
	n := network{name: "stress-crash-etcd", dataDir: x.dir + "/data", ipam: map[string]any{"ranges": ranges}}
	sets := []rangeSet{subnetSet(netip.MustParsePrefix("10.34.0.0/26")), subnetSet(netip.MustParsePrefix("fd00:34::/64"))}
	n, err := x.etcdNetwork(n, 4)
	if err != nil {
		return err
	}
	return x.killStorm(n, sets, stormSpec{prefix: "ce", workers: 8, perWorker: 9, target: 900, rounds: 3, shortTarget: 100, maxDelay: 20 * time.Millisecond, lateFrom: 0.5})
}

// killStorm: workers ADD, DEL and CHECK their attachments, most calls SIGKILLed at a
// random instant; after each round the runtime settles (afterStorm), and at the end DEL of
// everything and a fill of the first set (endOfCrash).
func (x *job) killStorm(n network, sets []rangeSet, spec stormSpec) error {
	workers, perWorker := spec.workers, spec.perWorker
	target, rounds := spec.target, spec.rounds
	if x.short {
		target, rounds = spec.shortTarget, 1
	}
	t := newTracker(x, sets)
	ks := newKillStats()
	var all []*att
	own := make([][]*att, workers)
	for w := range own {
		for j := 0; j < perWorker; j++ {
			a := &att{id: fmt.Sprintf("%s-w%d-c%02d", spec.prefix, w, j), ifname: "eth0", lastDel: "never ADDed", node: n.machine(w)}
			own[w] = append(own[w], a)
			all = append(all, a)
		}
	}
	var sent atomic.Int64
	err := x.inRounds(rounds, workers, 10, func(r, w int, rng *rand.Rand) {
		end := int64(target * r / rounds)
		for sent.Load() < end && x.Err() == nil {
			a := own[w][rng.IntN(perWorker)]
			verb := nextVerb(rng, a)
			k := killSpec{kill: rng.Float64() < 0.7}
			if k.kill {
				sent.Add(1)
				if rng.IntN(2) == 0 {
					k.after = logUniform(rng, time.Microsecond, spec.maxDelay)
				} else {
					k.after = time.Duration((spec.lateFrom + rng.Float64()*(1.2-spec.lateFrom)) * float64(ks.typical(verb)))
				}
			}
			ks.record(verb, k.kill, x.do(verb, t, n, a, k), k.after)
		}
	}, func(r int) {
		x.afterStorm(t, n, sets, all, fmt.Sprintf("after crash round %d of %d", r, rounds))
	})
	if err != nil {
		return err
	}
	x.endOfCrash(t, n, sets, all, spec.prefix)
	s, landed := ks.total()
	x.fault(landed)
	if len(n.nodes) > 0 {
		x.note("%d machines; %d attachments whose ADD was killed held reservations before the runtime's DEL freed them", len(n.nodes), t.leftByKills)
	}
	x.note("%d SIGKILLs sent, %d landed before exit (by verb, landed/sent: %s); %d%% of the delays under 100 µs; %s",
		s, landed, ks, 100*ks.early/max(s, 1), t.summary())
	return nil
}

// afterStorm: the runtime DELs what is dirty, then the records and CHECK must agree with
// what the harness knows.
func (x *job) afterStorm(t *tracker, n network, sets []rangeSet, all []*att, when string) {
	if n.etcd != nil {
		// How many killed ADDs had reserved before dying (dirty without a result: its
		// ADD, or a DEL after it, was killed), before the runtime's DEL frees them.
		killedAdd := map[string]bool{}
		for _, a := range all {
			if a.dirty && a.addrs == nil {
				killedAdd[a.key()] = true
			}
		}
		reserved := map[string]bool{}
		for _, r := range n.records().read(x) {
			if k := string(r.content); killedAdd[k] {
				reserved[k] = true
			}
		}
		t.mu.Lock()
		t.leftByKills += len(reserved)
		t.mu.Unlock()
	}
	x.settle(t, n, all)
	x.checkRecords(n.records(), sets, all, when)
	for _, a := range all {
		if a.live {
			x.doCheck(t, n, a, killSpec{})
		}
	}
}

// endOfCrash: DEL of everything leaves no record, and the whole range is usable again.
func (x *job) endOfCrash(t *tracker, n network, sets []rangeSet, all []*att, prefix string) {
	x.delAll(n, all, 4)
	left, empty := x.expectNoRecords(n.records(), "after the crashes, DEL of every attachment")
	if left > 0 {
		x.note("%d records left after DEL of everything (%d of them empty records of killed ADDs): %d addresses blocked for good", left, empty, left)
	}
	x.fillCheck(n, sets, int(sets[0].size), prefix+"-fill", "after the crashes", 4)
}

func crashIO(x *job) error {
	data := x.dir + "/data"
	if err := mkdirAll(data); err != nil {
		return err
	}
	if err := bindMount(data); err != nil {
		return fmt.Errorf("bind mount %s: %w", data, err)
	}
	defer unmount(data)
	killer, err := newIOKiller(data)
	if err != nil {
		return fmt.Errorf("fanotify on %s: %w", data, err)
	}
	defer killer.close()

	n, sets := crashNetwork(data)
	iters, checkEvery := 1500, 250
	if x.short {
		iters, checkEvery = 120, 60
	}
	t := newTracker(x, sets)
	ks := newKillStats()
	var all []*att
	for j := 0; j < 48; j++ {
		all = append(all, &att{id: fmt.Sprintf("co-c%02d", j), ifname: "eth0", lastDel: "never ADDed"})
	}
	// Kill points per verb, learnt from the calls that ran to the end: the most seen (a
	// call that rebuilds the index reads every record) and the last seen (a typical call).
	maxOpens := map[string]int{"ADD": 16, "DEL": 16, "CHECK": 16}
	lastOpens := map[string]int{"ADD": 16, "DEL": 16, "CHECK": 16}
	rng := x.rng
	for i := 1; i <= iters && x.Err() == nil; i++ {
		a := all[rng.IntN(len(all))]
		verb := nextVerb(rng, a)
		kth := 0
		switch p := rng.Float64(); {
		case p < 0.55:
			kth = 1 + rng.IntN(lastOpens[verb]+1)
		case p < 0.85:
			kth = 1 + rng.IntN(maxOpens[verb]+1)
		}
		killer.arm(kth)
		o := x.do(verb, t, n, a, killSpec{})
		opens, hit := killer.disarm()
		ks.record(verb, kth > 0, o, time.Second)
		if hit != "" && o.killedByUs() {
			ks.mu.Lock()
			ks.points[verb+" at "+hit]++
			ks.mu.Unlock()
		}
		if !o.killedByUs() && o.exit >= 0 {
			maxOpens[verb] = max(maxOpens[verb], opens)
			lastOpens[verb] = opens
		}
		if i%checkEvery == 0 {
			killer.arm(0)
			x.afterStorm(t, n, sets, all, fmt.Sprintf("after %d calls with kills at file operations", i))
		}
	}
	killer.arm(0)
	if err := x.Err(); err != nil {
		return err
	}
	x.afterStorm(t, n, sets, all, "after the kills at file operations")
	x.endOfCrash(t, n, sets, all, "co")
	s, landed := ks.total()
	x.fault(landed)
	points := make([]string, 0, len(ks.points))
	for p, c := range ks.points {
		points = append(points, fmt.Sprintf("%s ×%d", p, c))
	}
	sort.Strings(points)
	what := "open"
	if killer.preAccess {
		what = "open, read or write"
	}
	x.note("%d kills armed, %d landed (each while blocked in its k-th %s of a store file; by verb, landed/armed: %s); kill points per call up to ADD %d, DEL %d, CHECK %d; %d distinct (verb, operation, file) kill points hit; %s",
		s, landed, what, ks, maxOpens["ADD"], maxOpens["DEL"], maxOpens["CHECK"], len(points), t.summary())
	x.detail("crash-io kill points hit (verb, operation, file ×count): %s", strings.Join(points, ", "))
	return nil
}
