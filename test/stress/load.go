package main

// Load: 32 processes at once on one network, mixed ADD/DEL/CHECK and repeated ADD. The
// tracker checks "never one address for two live attachments" and "no free address only
// when the pool is full" as calls return; between rounds (every process finished) the
// records on disk are compared with what the harness knows, and local-ipam's STATUS (which
// reads its index) must agree with the records about whether the pool is full. At the end
// every attachment is DELeted: no record may remain, and a fresh round of ADDs must get
// every address of a small range.
//
// load-etcd runs the same on a network kept in etcd, the workers spread over machines
// (store nodes); its records are the reservations `local-ipam list` shows (etcd.go).

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

type loadSpec struct {
	name          string
	subnets       []string // one range set each
	workers       int
	attsPerWorker int
	ops, shortOps int
	rounds        int
	fill          bool // small first set: check that a fresh round of ADDs fills it
	machines      int  // > 0: the network is kept in etcd, the workers spread over this many machines
}

var (
	load16   = loadSpec{name: "ld16", subnets: []string{"10.16.0.0/16"}, workers: 32, attsPerWorker: 8, ops: 4000, shortOps: 640, rounds: 5}
	load26   = loadSpec{name: "ld26", subnets: []string{"10.26.0.0/26"}, workers: 32, attsPerWorker: 4, ops: 4000, shortOps: 640, rounds: 5, fill: true}
	loadDual = loadSpec{name: "ldd", subnets: []string{"10.27.0.0/26", "fd00:27::/64"}, workers: 32, attsPerWorker: 4, ops: 3000, shortOps: 480, rounds: 4, fill: true}
	loadEtcd = loadSpec{name: "lde", subnets: []string{"10.28.0.0/26", "fd00:28::/64"}, workers: 32, attsPerWorker: 4, ops: 3000, shortOps: 320, rounds: 4, fill: true, machines: 4}
)

func (s loadSpec) network(dataDir string) (network, []rangeSet) {
	var rs [][]map[string]string
	var sets []rangeSet
	for _, sn := range s.subnets {
		rs = append(rs, []map[string]string{{"subnet": sn}})
		sets = append(sets, subnetSet(netip.MustParsePrefix(sn)))
	}
	return network{name: "stress-" + s.name, dataDir: dataDir, ipam: map[string]any{"ranges": rs}}, sets
}

func loadScenario(spec loadSpec) func(x *job) error {
	return func(x *job) error {
		n, sets := spec.network(x.dir + "/data")
		if spec.machines > 0 {
			var err error
			if n, err = x.etcdNetwork(n, spec.machines); err != nil {
				return err
			}
		}
		ops, rounds := spec.ops, spec.rounds
		if x.short {
			ops, rounds = spec.shortOps, 2
		}
		t := newTracker(x, sets)
		workers := make([][]*att, spec.workers)
		var all []*att
		for w := range workers {
			for j := 0; j < spec.attsPerWorker; j++ {
				a := &att{id: fmt.Sprintf("%s-w%02d-c%d", spec.name, w, j/2), ifname: []string{"eth0", "net1"}[j%2], lastDel: "never ADDed", node: n.machine(w)}
				workers[w] = append(workers[w], a)
				all = append(all, a)
			}
		}
		var done atomic.Int64
		err := x.inRounds(rounds, spec.workers, 100, func(r, w int, rng *rand.Rand) {
			end := int64(ops * r / rounds)
			mine := workers[w]
			for done.Add(1) <= end && x.Err() == nil {
				a := mine[rng.IntN(len(mine))]
				p := rng.Float64()
				switch {
				case a.live && p < 0.25:
					x.doCheck(t, n, a, killSpec{})
				case a.live && p < 0.33:
					x.doDupAdd(t, n, a)
				case a.live:
					x.doDel(t, n, a, killSpec{})
				case p < 0.08:
					x.doDel(t, n, a, killSpec{}) // DEL of nothing: must succeed
				default:
					if x.doAdd(t, n, a, killSpec{}); a.dirty {
						x.doDel(t, n, a, killSpec{}) // the runtime cleans up a failed ADD
					}
				}
			}
		}, func(r int) {
			done.Store(int64(ops * r / rounds))
			when := fmt.Sprintf("after round %d of %d", r, rounds)
			nrec := x.checkRecords(n.records(), sets, all, when)
			x.logf("%s: %d records; %s", when, nrec, t.summary())
			if x.isLocal() {
				x.checkStatus(n, sets, when)
			}
		})
		if err != nil {
			return err
		}
		x.delAll(n, all, spec.workers)
		x.expectNoRecords(n.records(), "after DEL of every attachment")
		if spec.fill {
			x.fillCheck(n, sets, int(sets[0].size), spec.name+"-fill", "after the load", 8)
		}
		if x.isLocal() {
			x.checkStatus(n, sets, "at the end")
		}
		if len(n.nodes) > 0 {
			x.note("%d machines; %s; %d quiescent checks of the reservations (local-ipam list)", len(n.nodes), t.summary(), rounds)
			return nil
		}
		x.note("%s; %d quiescent checks of the records", t.summary(), rounds)
		return nil
	}
}

// checkStatus: local-ipam's STATUS, which walks its index, must say "full" (code 50)
// exactly when the records fill a range set.
func (x *job) checkStatus(n network, sets []rangeSet, when string) {
	count := make([]uint64, len(sets))
	for _, r := range n.records().read(x) {
		if s := setOf(sets, r.addr); s >= 0 {
			count[s]++
		}
	}
	full := false
	for i, s := range sets {
		full = full || count[i] >= s.size
	}
	o := x.call(call{cmd: "STATUS", stdin: x.conf(n, nil)})
	switch {
	case full && o.ok():
		x.violate("%s: STATUS says an ADD could succeed, but the records fill the range set (%v of %v addresses)", when, count, sizes(sets))
	case !full && !o.ok():
		x.violate("%s: STATUS failed (%s) while the records leave addresses free (%v of %v in use)", when, errSummary(o), count, sizes(sets))
	case full:
		if e, bad := parseError(o); bad != "" || e.Code != 50 {
			x.violate("%s: STATUS on a full pool: want code 50, got %s", when, errSummary(o))
		}
	}
}

func sizes(sets []rangeSet) []uint64 {
	out := make([]uint64, len(sets))
	for i, s := range sets {
		out[i] = s.size
	}
	return out
}
