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

	"github.com/local-ipam/local-ipam/internal/fsclock"
	"github.com/local-ipam/local-ipam/internal/mounttest"
	"golang.org/x/sys/unix"
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

// The damage cases: what each does to the store, what local-ipam must then do
// (docs/RELIABILITY.md), and the helpers that damage files in place.

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// verbsAnswer: ADD, CHECK and DEL all answer with code want (local-ipam), and the live
// attachments' records are untouched.
func verbsAnswer(want uint) func(d *dmg) {
	return func(d *dmg) {
		_, oa := d.add("e-1")
		oc := d.call("CHECK", d.attByID("d-0"), false)
		od := d.call("DEL", d.attByID("d-1"), false)
		for verb, o := range map[string]outcome{"ADD": oa, "CHECK": oc, "DEL": od} {
			e, bad := parseError(o)
			d.want(bad == "" && e.Code == want, "%s: want code %d, got %s", verb, want, errSummary(o))
		}
		d.saw("ADD %s; CHECK %s; DEL %s", errSummary(oa), errSummary(oc), errSummary(od))
	}
}

// addsNext: the ADD gets want (or, want invalid, any address but the damaged ones) and the
// CHECK and DEL of the live attachments work.
func addsNext(want netip.Addr, not ...string) func(d *dmg) {
	return func(d *dmg) {
		got, oa := d.add("e-1")
		switch {
		case want.IsValid():
			d.want(got == want, "ADD: want %s, got %s", want, orErr(got, oa))
		default:
			d.want(got.IsValid() && !slices.Contains(not, got.String()), "ADD: want an address other than %v, got %s", not, orErr(got, oa))
		}
		oc := d.call("CHECK", d.attByID("d-0"), false)
		d.want(oc.ok(), "CHECK of d-0: %s", errSummary(oc))
		od := d.del(d.attByID("d-1"))
		d.want(od.ok() && !d.exists("10.50.0.3"), "DEL of d-1: %s, record 10.50.0.3 still there: %v", errSummary(od), d.exists("10.50.0.3"))
		d.saw("ADD %s; CHECK %s; DEL %s", orErr(got, oa), errSummary(oc), errSummary(od))
	}
}

func orErr(a netip.Addr, o outcome) string {
	if a.IsValid() {
		return a.String()
	}
	return errSummary(o)
}

var damageCases = []damageCase{
	{
		name: "empty record", doc: "a free address: the next ADD takes it over (atomically) and the range stays whole",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.6"), nil) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "whitespace-only record", doc: "as an empty record: free",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.6"), []byte(" \r\n\t ")) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "garbage record", doc: "held by an unknown owner: never handed out, never removed, left byte for byte",
		damage: func(d *dmg) error {
			return writeFile(d.path("10.50.0.6"), []byte("\x00\xffgarbage\r\n\x01\x02 \xfe"))
		},
		run: addsNext(netip.MustParseAddr("10.50.0.7")), left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "torn record (a prefix of d-1's)", doc: "held by an unknown owner (not d-1): d-1's DEL leaves it",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.6"), []byte("d-1\r\neth")) },
		run:    addsNext(netip.MustParseAddr("10.50.0.7")), left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "a second record naming d-0", doc: "d-0 holds both: CHECK of d-0 passes, its DEL frees both",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.9"), []byte("d-0\r\neth0")) },
		run: func(d *dmg) {
			oc := d.call("CHECK", d.attByID("d-0"), false)
			d.want(oc.ok(), "CHECK of d-0: %s", errSummary(oc))
			od := d.del(d.attByID("d-0"))
			d.want(od.ok() && !d.exists("10.50.0.2") && !d.exists("10.50.0.9"), "DEL of d-0: %s; 10.50.0.2 left: %v, 10.50.0.9 left: %v",
				errSummary(od), d.exists("10.50.0.2"), d.exists("10.50.0.9"))
			d.saw("CHECK %s; DEL %s, 10.50.0.2 left: %v, 10.50.0.9 left: %v", errSummary(oc), errSummary(od), d.exists("10.50.0.2"), d.exists("10.50.0.9"))
		},
		usable: 13,
	},
	{
		name: "an ID-only record of d-2 (old host-local format)", doc: "released with the container: the first DEL of d-2/eth0 frees its own record, the next one the ID-only record (as host-local)",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.9"), []byte("d-2")) },
		run: func(d *dmg) {
			a := d.attByID("d-2")
			o1 := d.del(a)
			first := !d.exists("10.50.0.4")
			o2 := d.del(a)
			d.want(o1.ok() && o2.ok() && first && !d.exists("10.50.0.9"), "two DELs of d-2: %s, %s; 10.50.0.4 freed by the first: %v; 10.50.0.9 left: %v",
				errSummary(o1), errSummary(o2), first, d.exists("10.50.0.9"))
			d.saw("first DEL %s (freed 10.50.0.4: %v), second DEL %s, 10.50.0.9 left: %v", errSummary(o1), first, errSummary(o2), d.exists("10.50.0.9"))
		},
		usable: 13,
	},
	{
		name: "a directory named like an address, holding a file with d-1's key", doc: "blocks the address, never entered: d-1's DEL frees only its own record",
		damage: func(d *dmg) error {
			if err := os.Mkdir(d.path("10.50.0.6"), 0o755); err != nil {
				return err
			}
			return writeFile(d.path("10.50.0.6/inner"), []byte("d-1\r\neth0"))
		},
		run: func(d *dmg) {
			addsNext(netip.MustParseAddr("10.50.0.7"))(d)
			inner := d.exists("10.50.0.6/inner")
			d.want(inner, "DEL of d-1 removed 10.50.0.6/inner, inside a directory named like an address")
			d.saw("10.50.0.6/inner still there after d-1's DEL: %v", inner)
		},
		left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "a symlink named like an address, to a canary file holding d-2's key", doc: "blocks the address, never followed: d-2's DEL frees only its own record and leaves the link",
		damage: func(d *dmg) error {
			if err := writeFile(filepath.Join(d.canary, "rec"), []byte("d-2\r\neth0")); err != nil {
				return err
			}
			return os.Symlink("../../canary/rec", d.path("10.50.0.6"))
		},
		run: func(d *dmg) {
			addsNext(netip.MustParseAddr("10.50.0.7"))(d)
			oc := d.call("CHECK", d.attByID("d-2"), false)
			od := d.del(d.attByID("d-2"))
			link := d.exists("10.50.0.6")
			d.want(oc.ok() && od.ok() && link && !d.exists("10.50.0.4"), "CHECK of d-2 %s, DEL of d-2 %s, link left: %v, 10.50.0.4 left: %v", errSummary(oc), errSummary(od), link, d.exists("10.50.0.4"))
			d.saw("DEL of d-2 %s; the link is still there: %v", errSummary(od), link)
		},
		left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "a dangling symlink named like the next address", doc: "blocks the address; its target is never created",
		damage: func(d *dmg) error { return os.Symlink("../../canary/nothing", d.path("10.50.0.6")) },
		run:    addsNext(netip.MustParseAddr("10.50.0.7")), left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "a FIFO named like an address", doc: "blocks the address, never opened for reading (no call hangs)",
		damage: func(d *dmg) error { return unix.Mkfifo(d.path("10.50.0.6"), 0o600) },
		run:    addsNext(netip.MustParseAddr("10.50.0.7")), left: []string{"10.50.0.6"}, usable: 12,
		hostUndo: func(d *dmg) error { return os.Remove(d.path("10.50.0.6")) },
	},
	{
		name: "a 256 MiB (sparse) file named like an address", doc: "an unknown owner: blocks the address; at most 4 KiB of it is read",
		damage: func(d *dmg) error {
			f, err := os.Create(d.path("10.50.0.6"))
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(256 << 20)
		},
		run: func(d *dmg) {
			_, oa := d.add("e-1")
			od := d.call("DEL", d.attByID("d-1"), true)
			d.want(od.maxrss < 64<<10, "DEL: peak RSS %d KiB", od.maxrss)
			d.saw("ADD %s in %v; DEL %s in %v, peak RSS %d MiB", errSummary(oa), oa.dur.Round(time.Millisecond), errSummary(od), od.dur.Round(time.Millisecond), od.maxrss>>10)
		},
		left: []string{"10.50.0.6"}, usable: 12,
	},
	{
		name: "the network directory is a symlink to a canary directory", doc: "code 104 for ADD, CHECK and DEL; nothing in the target is created or read",
		damage: func(d *dmg) error {
			return netDirAside(d, func() error {
				if err := os.Mkdir(filepath.Join(d.canary, "netdir"), 0o755); err != nil {
					return err
				}
				return os.Symlink("../canary/netdir", d.net)
			})
		},
		run:    verbsAnswer(104),
		undo:   restoreNetDir,
		usable: 13,
	},
	{
		name: "the network directory is a regular file", doc: "code 104; the file is left as it is",
		damage: func(d *dmg) error {
			return netDirAside(d, func() error { return writeFile(d.net, []byte("not a directory\n")) })
		},
		run:    verbsAnswer(104),
		undo:   restoreNetDir,
		usable: 13,
	},
	{
		name: "lock is a dangling symlink out of the data dir", doc: "code 104; the target is never created",
		damage: lockReplacedBy(func(lock string) error { return os.Symlink("../../canary/lock", lock) }),
		run:    verbsAnswer(104),
		undo:   removeLock,
		usable: 13,
	},
	{
		name: "lock is a symlink to a canary file", doc: "code 104; the target is not opened",
		damage: func(d *dmg) error { return symlinkToCanary(d, d.path("lock"), "lockfile", []byte("canary\n")) },
		run:    verbsAnswer(104),
		undo:   removeLock,
		usable: 13,
	},
	{
		name: "lock is a directory", doc: "code 104",
		damage: lockReplacedBy(func(lock string) error { return os.Mkdir(lock, 0o755) }),
		run:    verbsAnswer(104),
		undo:   removeLock,
		usable: 13,
	},
	{
		name: "last_reserved_ip.0 is a symlink to a canary file", doc: "the cursor is ignored (the walk starts over) and replaced by a regular file; the target is neither read nor written",
		damage: func(d *dmg) error {
			return symlinkToCanary(d, d.path("last_reserved_ip.0"), "last", []byte("10.50.0.9"))
		},
		run: func(d *dmg) {
			addsNext(dmgNext)(d)
			fi, err := os.Lstat(d.path("last_reserved_ip.0"))
			regular := err == nil && fi.Mode().IsRegular()
			d.want(regular, "last_reserved_ip.0 is still not a regular file")
			d.saw("last_reserved_ip.0 is now a regular file: %v", regular)
		},
		usable: 13,
	},
	{
		name: "last_reserved_ip.0 holds garbage", doc: "the walk starts over from the range start",
		damage: func(d *dmg) error { return writeFile(d.path("last_reserved_ip.0"), []byte("\x00garbage\xff")) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "stray .local-ipam.tmp holding d-3's key", doc: "not a record: ignored (and removed with the next rebuild); d-3's DEL frees its record",
		damage: func(d *dmg) error { return writeFile(d.path(".local-ipam.tmp"), []byte("d-3\r\neth0")) },
		run: func(d *dmg) {
			addsNext(dmgNext)(d)
			od := d.del(d.attByID("d-3"))
			d.want(od.ok() && !d.exists("10.50.0.5"), "DEL of d-3 %s, 10.50.0.5 left: %v", errSummary(od), d.exists("10.50.0.5"))
		},
		usable: 13,
	},
	// local-ipam's index (.local-ipam/): damaged, missing, symlinked.
	{
		name: "index missing (.local-ipam removed)", doc: "rebuilt from the records by the next call", localOnly: true,
		damage: func(d *dmg) error { return os.RemoveAll(d.path(".local-ipam")) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index state holds garbage", doc: "rebuilt", localOnly: true,
		damage: func(d *dmg) error { return writeFile(d.path(".local-ipam/state"), bytes.Repeat([]byte{0xa5}, 68)) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index owner table truncated", doc: "rebuilt", localOnly: true,
		damage: func(d *dmg) error { return os.Truncate(d.idxFile("owners"), 100) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index owner table zeroed after its header", doc: "must not lose an attachment: d-0's CHECK passes, d-1's DEL frees its record", localOnly: true,
		damage: func(d *dmg) error { return zeroFrom(d.idxFile("owners"), 4096) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index bitmap page zeroed (every address free)", doc: "no address given twice: the record is the arbiter, the ADD gets the next really free one", localOnly: true,
		damage: func(d *dmg) error { return zeroFrom(d.idxFile("p4-0a320000"), 0) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index bitmap page all ones (every address taken)", doc: "must not lose addresses: the ADD gets the next free one", localOnly: true,
		damage: func(d *dmg) error { return fillFile(d.idxFile("p4-0a320000"), 0xff) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index owner table rolled back to an earlier copy (a lost write)", localOnly: true,
		doc: "must not lose an attachment: e-0, added after the copy, passes CHECK and its DEL frees its record",
		damage: func(d *dmg) error {
			old, err := os.ReadFile(d.idxFile("owners"))
			if err != nil {
				return err
			}
			if err := d.addAll("e-0", "e-9"); err != nil {
				return err
			}
			return overwrite(d.idxFile("owners"), 0, old)
		},
		run: func(d *dmg) {
			a := d.attByID("e-0")
			rec := a.addrs[0].String()
			oc := d.call("CHECK", a, false)
			d.want(oc.ok(), "CHECK of e-0 (holding %s): %s", rec, errSummary(oc))
			od := d.del(a)
			d.want(od.ok() && !d.exists(rec), "DEL of e-0: %s; its record %s still there: %v", errSummary(od), rec, d.exists(rec))
			d.saw("CHECK of e-0 %s; DEL of e-0 %s, its record %s left: %v", errSummary(oc), errSummary(od), rec, d.exists(rec))
		},
		usable: 13,
	},
	{
		name: "index bitmap page rolled back to an earlier copy (a lost write)", localOnly: true,
		doc: "must not lose addresses: the two addresses freed after the copy are given out again",
		damage: func(d *dmg) error {
			if err := d.addAll("e-7", "e-8"); err != nil {
				return err
			}
			old, err := os.ReadFile(d.idxFile("p4-0a320000"))
			if err != nil {
				return err
			}
			for _, a := range []*att{d.attByID("e-7"), d.attByID("e-8")} {
				if o := d.del(a); !o.ok() {
					return fmt.Errorf("DEL of %s: %s", a, errSummary(o))
				}
			}
			return overwrite(d.idxFile("p4-0a320000"), 0, old)
		},
		run:    addsNext(netip.MustParseAddr("10.50.0.8")),
		usable: 13,
	},
	{
		name: "a record created behind the index's back within the clock tick of its last commit", localOnly: true, coarseTime: true,
		doc: "noticed like any change behind its back: the runtime's DEL of its container frees it. " +
			"The record is created right after local-ipam's last commit (the set-up's last ADD), on a ramfs when " +
			"one can be mounted: there it falls in the clock tick of that commit, as host-local's or a person's " +
			"change can wherever two changes can share a directory's timestamps",
		damage: func(d *dmg) error { return writeFile(d.path("10.50.0.9"), []byte("k-1\r\neth0")) },
		run: func(d *dmg) {
			a := d.att("k-1")
			od := d.del(a)
			d.want(od.ok() && !d.exists("10.50.0.9"), "DEL of k-1, whose record 10.50.0.9 was created behind the index's back: %s; 10.50.0.9 still there: %v", errSummary(od), d.exists("10.50.0.9"))
			d.saw("DEL of k-1 %s, its record 10.50.0.9 left: %v", errSummary(od), d.exists("10.50.0.9"))
			addsNext(dmgNext)(d)
		},
		usable: 13,
	},
	{
		name: "index bitmap page truncated", doc: "rebuilt", localOnly: true,
		damage: func(d *dmg) error { return os.Truncate(d.idxFile("p4-0a320000"), 10) },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: ".local-ipam is a symlink to a canary directory", doc: "code 104; the target is untouched", localOnly: true,
		damage: func(d *dmg) error {
			if err := os.Rename(d.path(".local-ipam"), d.net+".meta"); err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(d.canary, "meta"), 0o755); err != nil {
				return err
			}
			return os.Symlink("../../canary/meta", d.path(".local-ipam"))
		},
		run:    verbsAnswer(104),
		undo:   func(d *dmg) error { return os.Remove(d.path(".local-ipam")) },
		usable: 13,
	},
	{
		name: ".local-ipam is a regular file", doc: "code 104", localOnly: true,
		damage: func(d *dmg) error {
			if err := os.RemoveAll(d.path(".local-ipam")); err != nil {
				return err
			}
			return writeFile(d.path(".local-ipam"), []byte("x"))
		},
		run:    verbsAnswer(104),
		undo:   func(d *dmg) error { return os.Remove(d.path(".local-ipam")) },
		usable: 13,
	},
	{
		name: "index state is a symlink to a canary file", doc: "never followed; the index is rebuilt", localOnly: true,
		damage: func(d *dmg) error { return replaceBySymlink(d, d.path(".local-ipam/state"), "state") },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index generation directory is a symlink to a canary directory", doc: "never followed; the index is rebuilt", localOnly: true,
		damage: func(d *dmg) error {
			gen := filepath.Dir(d.idxFile("owners"))
			if err := os.RemoveAll(gen); err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(d.canary, "gen"), 0o755); err != nil {
				return err
			}
			return os.Symlink(relTo(gen, filepath.Join(d.canary, "gen")), gen)
		},
		run: addsNext(dmgNext), usable: 13,
	},
	{
		name: "index owner table is a symlink to a canary file", doc: "never followed; the index is rebuilt", localOnly: true,
		damage: func(d *dmg) error { return replaceBySymlink(d, d.idxFile("owners"), "owners") },
		run:    addsNext(dmgNext), usable: 13,
	},
	{
		name: "index bitmap page is a symlink to a canary file", doc: "never followed; the index is rebuilt", localOnly: true,
		damage: func(d *dmg) error { return replaceBySymlink(d, d.idxFile("p4-0a320000"), "page") },
		run:    addsNext(dmgNext), usable: 13,
	},
}

// replaceBySymlink replaces path by a symlink to a canary file of the same content.
func replaceBySymlink(d *dmg, path, name string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return symlinkToCanary(d, path, name, b)
}

// symlinkToCanary replaces path by a symlink to the canary file name, holding b.
func symlinkToCanary(d *dmg, path, name string, b []byte) error {
	target := filepath.Join(d.canary, name)
	if err := writeFile(target, b); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return os.Symlink(relTo(path, target), path)
}

// netDirAside moves the network directory aside (restoreNetDir puts it back), then puts
// what put makes in its place.
func netDirAside(d *dmg, put func() error) error {
	if err := os.Rename(d.net, d.net+".real"); err != nil {
		return err
	}
	return put()
}

func restoreNetDir(d *dmg) error {
	if err := os.Remove(d.net); err != nil {
		return err
	}
	return os.Rename(d.net+".real", d.net)
}

// lockReplacedBy is the damage that removes the lock file and puts what put makes there.
func lockReplacedBy(put func(lock string) error) func(d *dmg) error {
	return func(d *dmg) error {
		if err := os.Remove(d.path("lock")); err != nil {
			return err
		}
		return put(d.path("lock"))
	}
}

func removeLock(d *dmg) error { return os.Remove(d.path("lock")) }

func relTo(link, target string) string {
	r, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return target
	}
	return r
}

// overwrite writes b over path from offset off on, in place (no truncation, no new
// inode): as a lost write would leave it, without touching the directory.
func overwrite(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(b, off)
	return err
}

// zeroFrom zeroes a file from off to its end, in place (same size).
func zeroFrom(path string, off int64) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= off {
		return err
	}
	return overwrite(path, off, make([]byte, fi.Size()-off))
}

// fillFile sets every byte of a file to b, in place.
func fillFile(path string, b byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return overwrite(path, 0, bytes.Repeat([]byte{b}, int(fi.Size())))
}
