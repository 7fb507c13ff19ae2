package main

// A damaged store. Each case starts from a network of four live attachments (d-0..d-3
// holding 10.50.0.2-.5 of a /28, 13 addresses), damages it, then runs ADD, CHECK and DEL,
// DELs everything and fills the range. For both plugins every call must answer (success or
// a CNI error object, within 5 s, no panic) and nothing outside <dataDir>/<network>/ may
// change: a canary directory beside the data dir is the target of every symlink the cases
// plant, and the whole tree but the network directory is compared byte for byte before
// and after. For local-ipam, each case also checks the outcome docs/RELIABILITY.md
// documents (doc); for host-local what it did is reported.

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/fsclock"
	"github.com/local-ipam/local-ipam/internal/mounttest"
)

const damageTimeout = 5 * time.Second

var (
	dmgSubnet = netip.MustParsePrefix("10.50.0.0/28")
	dmgNext   = netip.MustParseAddr("10.50.0.6") // the next address of the round-robin walk
)

// dmg is one damage case being run against one plugin.
type dmg struct {
	*fixture
	informational bool   // a known limitation: outcomes are details
	unmet         bool   // an informational case whose documented outcome did not hold
	why           string // why not
	name          string
	root          string // the case's tree: data/ and canary/
	canary        string
	net           string // the network directory
}

type damageCase struct {
	name      string
	doc       string // local-ipam's outcome, as docs/RELIABILITY.md documents it
	localOnly bool   // damages local-ipam's own index: nothing for host-local
	// coarseTime: the damage is a change right after local-ipam's last commit, which only
	// matters where a directory change may keep the timestamps that commit saw. The case
	// runs on a ramfs (such a file system) when one can be mounted, and reports what a
	// probe found of the file system's timestamps.
	coarseTime bool
	// limitation: a known, documented limit of local-ipam (README, docs/RELIABILITY.md):
	// the outcome is reported, not judged, until it is lifted.
	limitation string
	// damage damages the store; run makes the calls and checks the case's outcome.
	damage func(d *dmg) error
	run    func(d *dmg)
	// undo repairs damage the network cannot live with, before the common finish (DEL of
	// everything, fill); hostUndo only for host-local (which would hang on it).
	undo, hostUndo func(d *dmg) error
	// left: the names the finish expects to remain (the damage itself); usable: the
	// addresses a fresh round of ADDs must then get (local-ipam).
	left   []string
	usable int
}

func (d *dmg) path(name string) string { return filepath.Join(d.net, name) }

// call runs verb for a with the damage timeout; every answer must be clean.
func (d *dmg) call(verb string, a *att, rss bool) outcome {
	var prev []byte
	if verb == "CHECK" {
		prev = a.prev
	}
	o := d.x.call(call{cmd: verb, id: a.id, ifname: a.ifname, stdin: d.x.conf(d.n, prev), timeout: damageTimeout, rss: rss})
	if !o.ok() {
		if _, bad := parseError(o); bad != "" {
			d.x.violate("%s: %s of %s: %s", d.name, verb, a, bad)
		}
	}
	return o
}

// add runs an ADD of a new attachment and returns its address (invalid on failure).
func (d *dmg) add(id string) (netip.Addr, outcome) {
	a := d.att(id)
	o := d.call("ADD", a, false)
	if !o.ok() {
		return netip.Addr{}, o
	}
	addrs, err := parseAdd(o)
	if err != nil {
		d.x.violate("%s: ADD of %s: %v", d.name, a, err)
		return netip.Addr{}, o
	}
	a.live, a.addrs, a.prev = true, addrs, o.stdout
	return addrs[0], o
}

// addAll ADDs the containers ids, in order, and fails on the first that gets no address.
func (d *dmg) addAll(ids ...string) error {
	for _, id := range ids {
		if a, o := d.add(id); !a.IsValid() {
			return fmt.Errorf("ADD of %s: %s", id, errSummary(o))
		}
	}
	return nil
}

func (d *dmg) del(a *att) outcome {
	o := d.call("DEL", a, false)
	if o.ok() {
		a.live, a.addrs, a.lastDel = false, nil, "DELeted"
	}
	return o
}

// want records a local-ipam expectation: a violation when it does not hold, a detail for
// host-local (and for a known limitation).
func (d *dmg) want(ok bool, format string, a ...any) {
	switch {
	case ok || !d.x.isLocal():
	case d.informational:
		d.unmet = true
		d.x.detail("%s: (not judged: %s) "+format, append([]any{d.name, d.why}, a...)...)
	default:
		d.x.violate("%s: "+format, append([]any{d.name}, a...)...)
	}
}

// saw records what happened, for the case-by-case list.
func (d *dmg) saw(format string, a ...any) {
	d.x.detail("%s: "+format, append([]any{d.name}, a...)...)
}

func (d *dmg) exists(name string) bool {
	_, err := os.Lstat(d.path(name))
	return err == nil
}

func (d *dmg) content(name string) []byte {
	b, _ := readNoFollow(d.path(name), 1<<16)
	return b
}

// idxFile is the path of a file of local-ipam's current index generation.
func (d *dmg) idxFile(name string) string {
	matches, _ := filepath.Glob(filepath.Join(d.net, ".local-ipam", "idx.*"))
	slices.Sort(matches)
	if len(matches) == 0 {
		return filepath.Join(d.net, ".local-ipam", "idx.0", name)
	}
	return filepath.Join(matches[len(matches)-1], name)
}

func (d *dmg) attByID(id string) *att {
	for _, a := range d.atts {
		if a.id == id {
			return a
		}
	}
	panic("no attachment " + id)
}

// coarseRoot mounts a ramfs on root when it can (root must be empty), and says where the
// case runs and whether two changes to a directory can share its timestamps there, by
// trying (fsclock). unmount is nil when nothing was mounted.
func coarseRoot(root string) (where string, unmountIt func(), err error) {
	if err := mkdirAll(root); err != nil {
		return "", nil, err
	}
	where = "on the stress directory"
	if os.Geteuid() == 0 && mounttest.Ramfs(root) == nil {
		where, unmountIt = "on a ramfs", func() { unmount(root) }
	} else {
		var st unix.Statfs_t
		if unix.Statfs(root, &st) == nil {
			where += " (" + fsName(st.Type) + ")"
		}
	}
	shared, err := fsclock.SharedTimestamps(root, 200)
	if err != nil {
		if unmountIt != nil {
			unmountIt()
		}
		return "", nil, err
	}
	if shared {
		return where + ", where two changes to a directory can share its timestamps", unmountIt, nil
	}
	return where + ", where no two changes to a directory shared its timestamps in 200 tries", unmountIt, nil
}

func damageScenario(x *job) error {
	var failed, unjudged []string
	for i, c := range damageCases {
		if x.Err() != nil {
			return x.Err()
		}
		if c.localOnly && !x.isLocal() {
			continue
		}
		before := x.res.violationCount()
		unmet, err := x.damageCase(i, c)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if n := x.res.violationCount() - before; n > 0 {
			failed = append(failed, fmt.Sprintf("%s (%d)", c.name, n))
		}
		if unmet {
			unjudged = append(unjudged, c.name)
		}
	}
	if len(failed) > 0 {
		x.note("violations in %d cases: %s", len(failed), strings.Join(failed, "; "))
	}
	if len(unjudged) > 0 {
		x.note("documented outcome not met but not judged (a known limitation) in %d cases: %s", len(unjudged), strings.Join(unjudged, "; "))
	}
	local := 0
	for _, c := range damageCases {
		if c.localOnly {
			local++
		}
	}
	if x.isLocal() {
		x.note("%d damage cases (%d of them to its own index); each: ADD, CHECK, DEL, then DEL of everything and a fill of the /28, the tree outside the network directory compared byte for byte", len(damageCases), local)
	} else {
		x.note("%d damage cases (those to local-ipam's index do not apply)", len(damageCases)-local)
	}
	return nil
}

func (x *job) damageCase(i int, c damageCase) (unmet bool, err error) {
	root := filepath.Join(x.dir, fmt.Sprintf("case%02d", i))
	d := &dmg{name: c.name, root: root, canary: filepath.Join(root, "canary")}
	if c.coarseTime {
		where, unmountIt, err := coarseRoot(root)
		if err != nil {
			return false, err
		}
		if unmountIt != nil {
			defer unmountIt()
		}
		x.detail("%s: runs %s", c.name, where)
	}
	if c.limitation != "" && x.isLocal() {
		d.why, d.informational = c.limitation, true
	}
	if err := mkdirAll(d.canary); err != nil {
		return false, err
	}
	if err := writeFile(filepath.Join(d.canary, "file"), []byte("canary\n")); err != nil {
		return false, err
	}
	n := network{name: "dmg", dataDir: filepath.Join(root, "data"), ipam: map[string]any{"subnet": dmgSubnet.String()}}
	sets := []rangeSet{subnetSet(dmgSubnet)}
	d.net = n.dir()
	d.fixture = x.newFixture(n, sets, "d", 4)
	for j, a := range d.atts {
		if want := netip.MustParseAddr(fmt.Sprintf("10.50.0.%d", j+2)); len(a.addrs) != 1 || a.addrs[0] != want {
			return false, fmt.Errorf("set-up: %s got %v, want %s", a, a.addrs, want)
		}
	}
	if err := c.damage(d); err != nil {
		return false, fmt.Errorf("damaging the store: %w", err)
	}
	x.fault(1)
	before, err := treeSnapshot(root, d.net)
	if err != nil {
		return false, err
	}
	left := map[string][]byte{}
	for _, name := range c.left {
		left[name] = d.content(name)
	}
	c.run(d)
	after, err := treeSnapshot(root, d.net)
	if err != nil {
		return false, err
	}
	for _, diff := range diffTrees(before, after) {
		x.violate("%s: outside the network directory, %s", c.name, diff)
	}
	undo := c.undo
	if c.hostUndo != nil && !x.isLocal() {
		undo = c.hostUndo
	}
	if undo != nil {
		if err := undo(d); err != nil {
			return false, fmt.Errorf("repairing the store: %w", err)
		}
	}
	mid, err := treeSnapshot(root, d.net)
	if err != nil {
		return false, err
	}
	d.finish(c, left, undo != nil)
	final, err := treeSnapshot(root, d.net)
	if err != nil {
		return false, err
	}
	for _, diff := range diffTrees(mid, final) {
		x.violate("%s: outside the network directory (during the clean-up calls), %s", c.name, diff)
	}
	return d.unmet, nil
}

// finish DELs every attachment, checks what is left (only the damage itself, unchanged, for
// local-ipam), and fills the range.
func (d *dmg) finish(c damageCase, left map[string][]byte, repaired bool) {
	x := d.x
	for _, a := range d.atts {
		d.del(a)
	}
	var leftNames []string
	for _, r := range x.readRecords(d.net) {
		leftNames = append(leftNames, r.name)
		want, expected := left[r.name]
		if repaired {
			expected = false
		}
		switch {
		case !expected:
			d.want(false, "%s left after DEL of every attachment (%s %s)", filepath.Join(d.net, r.name), r.kind(), quoteClip(r.content, 60))
		case r.regular() && !bytes.Equal(r.content, want):
			d.want(false, "the damaged %s was changed to %s", r.name, quoteClip(r.content, 60))
		}
	}
	if !repaired {
		for name := range left {
			d.want(slices.Contains(leftNames, name), "the damaged %s was removed (it is not ours to remove)", name)
		}
	}
	got := d.fillCount()
	want := c.usable
	d.want(got == want, "a fresh round of ADDs got %d addresses, want %d", got, want)
	d.saw("after DEL of everything: left %v; a fresh round of ADDs got %d of 13 addresses", leftNames, got)
}

// fillCount ADDs fresh attachments until one fails, checks they got distinct addresses,
// DELs them, and returns how many succeeded.
func (d *dmg) fillCount() int {
	seen := map[netip.Addr]bool{}
	var fresh []*att
	n := 0
	for i := 0; i < 14; i++ {
		a := d.att(fmt.Sprintf("fill-%02d", i))
		o := d.call("ADD", a, false)
		if !o.ok() {
			break
		}
		addrs, err := parseAdd(o)
		if err != nil {
			d.x.violate("%s: fill: %v", d.name, err)
			break
		}
		if seen[addrs[0]] {
			d.x.violate("%s: fill: %s given twice", d.name, addrs[0])
		}
		seen[addrs[0]] = true
		a.live, a.addrs = true, addrs
		fresh = append(fresh, a)
		n++
	}
	for _, a := range fresh {
		d.del(a)
	}
	return n
}
