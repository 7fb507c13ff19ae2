package main

// The fixture of the fault and damage scenarios: a network with a few live attachments,
// driven one call at a time, and the checks every fault scenario makes of it.

import (
	"fmt"
	"net/netip"
	"path/filepath"
)

// faultNet is a /28 (13 addresses) network in dataDir.
func faultNet(name, dataDir string) (network, []rangeSet) {
	return network{name: name, dataDir: dataDir, ipam: map[string]any{"subnet": "10.40.0.0/28"}},
		[]rangeSet{subnetSet(netip.MustParsePrefix("10.40.0.0/28"))}
}

// fixture is a network with a few live attachments, driven one call at a time.
type fixture struct {
	x    *job
	n    network
	sets []rangeSet
	t    *tracker
	atts []*att
}

func (x *job) newFixture(n network, sets []rangeSet, prefix string, live int) *fixture {
	f := &fixture{x: x, n: n, sets: sets, t: newTracker(x, sets)}
	for i := 0; i < live; i++ {
		a := f.att(fmt.Sprintf("%s-%d", prefix, i))
		if x.doAdd(f.t, n, a, killSpec{}); !a.live {
			x.violate("setting up %s: ADD of %s failed", n.dir(), a)
		}
	}
	return f
}

func (f *fixture) att(id string) *att {
	a := &att{id: id, ifname: "eth0", lastDel: "never ADDed"}
	f.atts = append(f.atts, a)
	return a
}

func (f *fixture) live() []*att {
	var out []*att
	for _, a := range f.atts {
		if a.live {
			out = append(out, a)
		}
	}
	return out
}

// snapshot is the records of the network: name -> content ("<kind>" for non-files).
func (f *fixture) snapshot() map[string]string {
	m := map[string]string{}
	for _, r := range f.x.readRecords(f.n.dir()) {
		if r.regular() {
			m[r.name] = string(r.content)
		} else {
			m[r.name] = "<" + r.kind() + ">"
		}
	}
	return m
}

// intact checks that every record of before is still there with the same bytes, except
// those of attachments in gone (whose DEL succeeded).
func (f *fixture) intact(before map[string]string, when string, gone ...*att) {
	now := f.snapshot()
	freed := map[string]bool{}
	for _, a := range gone {
		freed[a.key()] = true
	}
	for name, content := range before {
		if freed[content] {
			if _, still := now[name]; still {
				f.x.violate("%s: DEL of %s succeeded but its record %s is still there", when, content, filepath.Join(f.n.dir(), name))
			}
			continue
		}
		switch c, ok := now[name]; {
		case !ok:
			f.x.violate("%s: record %s (%q) is gone", when, filepath.Join(f.n.dir(), name), content)
		case c != content:
			f.x.violate("%s: record %s changed from %q to %q", when, filepath.Join(f.n.dir(), name), content, c)
		}
	}
}

// expectClean: o is a success or a clean CNI error; for local-ipam a failure must carry
// one of the codes wantLocal. It returns whether the call succeeded.
func (f *fixture) expectClean(o outcome, what string, wantLocal ...uint) bool {
	if o.ok() {
		return true
	}
	e, bad := parseError(o)
	switch {
	case bad != "":
		f.x.violate("%s: %s", what, bad)
	case f.x.isLocal() && len(wantLocal) > 0 && !containsAddr(wantLocal, e.Code):
		f.x.violate("%s: want code %v, got %s", what, wantLocal, errSummary(o))
	}
	return false
}

// failedAddLeavesNothing: a failed ADD of a leaves no record naming it (local-ipam: at
// once; both plugins: after the runtime's DEL, which must succeed even while the fault
// lasts for local-ipam, whose README says a DEL works on a full disk).
func (f *fixture) failedAdd(a *att, when string, delMustWork bool) {
	x := f.x
	if x.isLocal() {
		for _, r := range x.readRecords(f.n.dir()) {
			if string(r.content) == a.key() {
				x.violate("%s: the failed ADD of %s left record %s", when, a, filepath.Join(f.n.dir(), r.name))
			}
		}
	}
	o := x.doDelNoViolation(f.t, f.n, a)
	if !o.ok() {
		if delMustWork && x.isLocal() {
			x.violate("%s: the runtime's DEL of %s (after its failed ADD) failed: %s", when, a, describe(o))
		} else {
			f.expectClean(o, when+": DEL of "+a.String())
		}
	}
	if o.ok() {
		for _, r := range x.readRecords(f.n.dir()) {
			if string(r.content) == a.key() {
				x.violate("%s: DEL of %s succeeded but record %s naming it remains", when, a, filepath.Join(f.n.dir(), r.name))
			}
		}
	}
}

// lyingDel reports a DEL that answered success although its record could not be removed:
// the runtime forgets the attachment, the address is lost (counted once with the leak the
// later record check finds).
func (f *fixture) lyingDel(a *att, when string) {
	for _, r := range f.x.readRecords(f.n.dir()) {
		if string(r.content) == a.key() {
			path := filepath.Join(f.n.dir(), r.name)
			f.x.violateOnce("leak "+path+string(r.content), "%s: DEL of %s answered success but could not remove its record %s: the runtime forgets it, the address is lost", when, a, path)
		}
	}
}

// doDelNoViolation is doDel for calls expected to fail under a fault: the caller judges.
func (x *job) doDelNoViolation(t *tracker, n network, a *att) outcome {
	t.delStart(a)
	a.live = false
	o := x.call(call{cmd: "DEL", id: a.id, ifname: a.ifname, stdin: x.conf(n, nil)})
	t.delDone(a, o.ok())
	if o.ok() {
		a.addrs, a.prev, a.dirty = nil, nil, false
		a.lastDel = "its DEL succeeded"
	} else {
		a.dirty = true
	}
	return o
}

// recovered: with the fault gone, every live attachment passes CHECK, a new ADD works, and
// the records agree with the harness.
func (f *fixture) recovered(when string) {
	x := f.x
	x.settle(f.t, f.n, f.atts)
	for _, a := range f.live() {
		x.doCheck(f.t, f.n, a, killSpec{})
	}
	a := f.att(fmt.Sprintf("%s-after%d", f.n.name, len(f.atts)))
	if x.doAdd(f.t, f.n, a, killSpec{}); !a.live {
		x.violate("%s: with the fault gone, ADD of %s still fails", when, a)
	} else {
		x.doCheck(f.t, f.n, a, killSpec{})
	}
	x.checkRecords(f.n.records(), f.sets, f.atts, when)
}

// finish DELs everything, expects no record, and fills the range.
func (f *fixture) finish(when string) {
	f.x.delAll(f.n, f.atts, 4)
	f.x.expectNoRecords(f.n.records(), when)
	f.x.fillCheck(f.n, f.sets, int(f.sets[0].size), f.n.name+"-fill", when, 4)
}

// addUnderFault runs an ADD of a new attachment id while a fault lasts: it may succeed; a
// failure must be a clean CNI error (code 5 for local-ipam) and leave no record once the
// runtime DELs it (a DEL that must succeed, for local-ipam, with delMustWork).
func (f *fixture) addUnderFault(id, when string, delMustWork bool) *att {
	a := f.att(id)
	f.x.doAddQuiet(f.t, f.n, a)
	if !a.live {
		f.expectClean(a.last, when+": ADD", 5)
		f.failedAdd(a, when, delMustWork)
	}
	return a
}

// addMustFail runs an ADD of a new attachment id that the fault must make fail, with a
// clean CNI error (code 5 for local-ipam).
func (f *fixture) addMustFail(id, when string) *att {
	a := f.att(id)
	f.x.doAddQuiet(f.t, f.n, a)
	if a.live {
		f.x.violate("%s: ADD of %s succeeded", when, a)
	} else {
		f.expectClean(a.last, when+": ADD", 5)
	}
	return a
}

// doAddQuiet runs an ADD expected to fail under a fault: the caller judges the outcome
// (doAdd would call a clean I/O error an unexpected failure).
func (x *job) doAddQuiet(t *tracker, n network, a *att) {
	op := t.addStart(a)
	o := x.call(call{cmd: "ADD", id: a.id, ifname: a.ifname, stdin: x.conf(n, nil)})
	a.last = o
	if o.ok() {
		addrs, err := parseAdd(o)
		if err != nil {
			x.violate("ADD of %s: %v", a, err)
			t.addDone(op, nil, -1)
			a.dirty = true
			return
		}
		a.live, a.addrs, a.prev, a.dirty = true, addrs, o.stdout, false
		t.addDone(op, addrs, -1)
		return
	}
	a.dirty = true
	t.addDone(op, nil, -1)
}

// countInARow counts the successes in a row, ok the latest.
func countInARow(n int, ok bool) int {
	if ok {
		return n + 1
	}
	return 0
}

func (x *job) outcomeWord(a *att) string {
	if a.live {
		return "ok"
	}
	e, bad := parseError(a.last)
	if bad != "" {
		return "BAD(" + bad + ")"
	}
	return fmt.Sprintf("code-%d", e.Code)
}
