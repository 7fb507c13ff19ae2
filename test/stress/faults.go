package main

// Faults of the file system under the store: full (no space, no inodes) at every point of
// an ADD, read-only, not a directory, forbidden. Invariants, for every fault:
//   - every call answers: success, or a CNI error object with a code and a non-zero exit
//     (local-ipam: code 5, "I/O failure on the store", as its README documents);
//   - the records that existed before are intact, byte for byte (unless a DEL of theirs
//     succeeded, which must then really have removed them);
//   - a failed ADD leaves no record once the runtime has DELeted the attachment (local-ipam
//     leaves none even before);
//   - once the fault is gone, ADD, CHECK and DEL work, and the range is whole.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// --- fault-enospc ----------------------------------------------------------------------

// space controls the free space of a tmpfs with a filler file.
type space struct {
	mnt    string
	filler string
	inodes string // directory of inode fillers
}

func (s space) statfs() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	err := unix.Statfs(s.mnt, &st)
	return st, err
}

// leavePages leaves exactly n free pages (blocks).
func (s space) leavePages(n int) error {
	if err := os.Remove(s.filler); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	st, err := s.statfs()
	if err != nil {
		return err
	}
	fill := int64(st.Bavail) - int64(n)
	if fill < 0 {
		return fmt.Errorf("tmpfs too small: %d pages free, want %d", st.Bavail, n)
	}
	f, err := os.Create(s.filler)
	if err != nil {
		return err
	}
	defer f.Close()
	if fill > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, fill*st.Bsize); err != nil {
			return fmt.Errorf("fallocate: %w", err)
		}
	}
	st, err = s.statfs()
	if err != nil {
		return err
	}
	if int(st.Bavail) != n {
		return fmt.Errorf("wanted %d free pages, have %d", n, st.Bavail)
	}
	return nil
}

// leaveInodes leaves exactly n free inodes (the filler file itself counts).
func (s space) leaveInodes(n int) error {
	if err := mkdirAll(s.inodes); err != nil {
		return err
	}
	for i := 0; ; i++ {
		st, err := s.statfs()
		if err != nil {
			return err
		}
		if int(st.Ffree) <= n {
			return nil
		}
		f, err := os.Create(filepath.Join(s.inodes, fmt.Sprint(i)))
		if err != nil {
			return err
		}
		f.Close()
	}
}

func (s space) free() {
	_ = os.Remove(s.filler)
	_ = os.RemoveAll(s.inodes)
}

func faultENOSPC(x *job) error {
	mnt := x.dir + "/mnt"
	if err := mountTmpfs(mnt, "size=16m,nr_inodes=4096,mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", mnt, err)
	}
	defer unmount(mnt)
	sp := space{mnt: mnt, filler: mnt + "/filler", inodes: mnt + "/inode-fillers"}
	data := mnt + "/data"
	// local-ipam's first ADD of a network writes its index too (about 20 pages).
	maxPages := 48
	var outcomes []string

	// A: the first ADD of a new network, with 0, 1, 2, ... pages free.
	okInARow := 0
	for k := 0; k <= maxPages && okInARow < 3 && x.Err() == nil; k++ {
		n, sets := faultNet(fmt.Sprintf("new-%d", k), data)
		f := x.newFixture(n, sets, "", 0)
		if err := sp.leavePages(k); err != nil {
			return err
		}
		x.fault(1)
		when := fmt.Sprintf("first ADD of a network with %d pages free", k)
		a := f.addUnderFault(fmt.Sprintf("new%d", k), when, true)
		okInARow = countInARow(okInARow, a.live)
		outcomes = append(outcomes, fmt.Sprintf("%d:%s", k, x.outcomeWord(a)))
		sp.free()
		f.recovered(when + ", space freed")
		x.delAll(n, f.atts, 2)
		x.expectNoRecords(n.records(), when+", all DELeted")
		if err := os.RemoveAll(n.dir()); err != nil {
			return err
		}
	}
	x.detail("first ADD of a new network with k pages free (k:outcome): %s", strings.Join(outcomes, " "))

	// B: an ADD into a network of 5 attachments, with 0, 1, 2, ... pages free; its index
	// current, or stale (changed behind it: the ADD must rebuild it).
	n, sets := faultNet("existing", data)
	f := x.newFixture(n, sets, "ex", 5)
	for _, stale := range []bool{false, true} {
		outcomes = nil
		okInARow = 0
		for k := 0; k <= maxPages && okInARow < 3 && x.Err() == nil; k++ {
			if stale {
				if err := touchDir(n.dir()); err != nil {
					return err
				}
			}
			before := f.snapshot()
			if err := sp.leavePages(k); err != nil {
				return err
			}
			x.fault(1)
			when := fmt.Sprintf("ADD into a network of %d attachments (index stale: %v) with %d pages free", len(f.live()), stale, k)
			a := f.addUnderFault(fmt.Sprintf("ex-add%d-%v", k, stale), when, true)
			okInARow = countInARow(okInARow, a.live)
			f.intact(before, when)
			outcomes = append(outcomes, fmt.Sprintf("%d:%s", k, x.outcomeWord(a)))
			sp.free()
			f.recovered(when + ", space freed")
			if live := f.live(); len(live) > 5 {
				x.doDel(f.t, n, live[len(live)-1], killSpec{}) // keep the store small
			}
		}
		x.detail("ADD into a network of 5 attachments, index stale: %v, k pages free (k:outcome): %s", stale, strings.Join(outcomes, " "))
	}

	// C: DEL on a full disk, index stale: must release (README).
	for _, stale := range []bool{false, true} {
		live := f.live()
		if len(live) < 2 {
			break
		}
		if stale {
			if err := touchDir(n.dir()); err != nil {
				return err
			}
		}
		before := f.snapshot()
		if err := sp.leavePages(0); err != nil {
			return err
		}
		x.fault(1)
		when := fmt.Sprintf("DEL on a full disk (index stale: %v)", stale)
		o := x.doDelNoViolation(f.t, n, live[0])
		if !o.ok() {
			if x.isLocal() {
				x.violate("%s: DEL of %s failed: %s (README: a DEL still releases on a full disk)", when, live[0], describe(o))
			} else {
				f.expectClean(o, when)
			}
			f.intact(before, when)
		} else {
			f.intact(before, when, live[0])
		}
		x.detail("%s: %s", when, errSummary(o))
		sp.free()
		f.recovered(when + ", space freed")
	}

	// D: no inode left.
	before := f.snapshot()
	if err := sp.leaveInodes(0); err != nil {
		return err
	}
	x.fault(1)
	when := "ADD with no free inode"
	a := f.addUnderFault("st-noinode", when, true)
	x.detail("%s: %s", when, x.outcomeWord(a))
	if live := f.live(); len(live) > 0 {
		o := x.doDelNoViolation(f.t, n, live[0])
		if !o.ok() && x.isLocal() {
			x.violate("DEL with no free inode: DEL of %s failed: %s", live[0], describe(o))
		}
		x.detail("DEL with no free inode: %s", errSummary(o))
		if o.ok() {
			f.intact(before, when, live[0])
		} else {
			f.intact(before, when)
		}
	}
	sp.free()
	f.recovered(when + ", inodes freed")
	f.finish("after the full-disk faults")
	x.note("tmpfs of 16 MiB: the first ADD of a network and an ADD that must rebuild the index, each with 0, 1, 2, ... pages free, DEL on a full disk, no free inode")
	return nil
}

// touchDir changes a directory behind the plugins' backs (an entry created and removed), so
// that local-ipam's index is stale and the next call must rebuild it.
func touchDir(dir string) error {
	p := filepath.Join(dir, "touch")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return err
	}
	return os.Remove(p)
}

// --- fault-readonly ----------------------------------------------------------------------

func faultReadOnly(x *job) error {
	mnt := x.dir + "/mnt"
	if err := mountTmpfs(mnt, "size=4m,mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", mnt, err)
	}
	defer unmount(mnt)
	n, sets := faultNet("stress-ro", mnt+"/data")
	f := x.newFixture(n, sets, "ro", 5)
	for _, stale := range []bool{false, true} {
		if stale {
			if err := touchDir(n.dir()); err != nil {
				return err
			}
		}
		before := f.snapshot()
		if err := remount(mnt, true); err != nil {
			return fmt.Errorf("remount %s read-only: %w", mnt, err)
		}
		x.fault(1)
		when := fmt.Sprintf("read-only data dir (index stale: %v)", stale)
		a := f.addMustFail(fmt.Sprintf("ro-new-%v", stale), when)
		live := f.live()
		oc := x.call(call{cmd: "CHECK", id: live[1].id, ifname: live[1].ifname, stdin: x.conf(n, live[1].prev)})
		if x.isLocal() && !oc.ok() {
			// CHECK only reads: it must work on a read-only store (from the index when
			// it is current, from one rebuilt in memory when it is not).
			x.violate("%s: CHECK of %s: want success, got %s", when, live[1], errSummary(oc))
		} else {
			f.expectClean(oc, when+": CHECK of "+live[1].String(), 5)
		}
		od := x.doDelNoViolation(f.t, n, live[0])
		if od.ok() {
			f.lyingDel(live[0], when)
		} else {
			f.expectClean(od, when+": DEL", 5)
		}
		var status string
		if x.isLocal() {
			st := x.call(call{cmd: "STATUS", stdin: x.conf(n, nil)})
			if e, bad := parseError(st); bad != "" || e.Code != 50 {
				x.violate("%s: STATUS: want code 50, got %s", when, errSummary(st))
			}
			status = ", STATUS " + errSummary(st)
		}
		f.intact(before, when)
		x.detail("%s: ADD %s, CHECK %s, DEL %s%s", when, errSummary(a.last), errSummary(oc), errSummary(od), status)
		if err := remount(mnt, false); err != nil {
			return fmt.Errorf("remount %s read-write: %w", mnt, err)
		}
		f.recovered(when + ", read-write again")
	}
	f.finish("after the read-only faults")
	x.note("ADD, CHECK, DEL (and local-ipam's STATUS) on a read-only tmpfs, with the index current and stale; then read-write again")
	return nil
}

// --- fault-notdir ----------------------------------------------------------------------

func faultNotDir(x *job) error {
	cases := []struct {
		name  string
		setup func(root string) (dataDir string, undo func() error, err error)
	}{
		{"the data dir is a regular file", func(root string) (string, func() error, error) {
			p := root + "/data"
			err := os.WriteFile(p, []byte("not a directory\n"), 0o644)
			return p, func() error { return os.Remove(p) }, err
		}},
		{"a parent of the data dir is a regular file", func(root string) (string, func() error, error) {
			p := root + "/parent"
			err := os.WriteFile(p, []byte("not a directory\n"), 0o644)
			return p + "/data", func() error { return os.Remove(p) }, err
		}},
		{"the data dir is a symlink to a regular file", func(root string) (string, func() error, error) {
			p, target := root+"/data", root+"/target"
			if err := os.WriteFile(target, []byte("not a directory\n"), 0o644); err != nil {
				return "", nil, err
			}
			err := os.Symlink("target", p)
			return p, func() error { return os.Remove(p) }, err
		}},
	}
	for i, c := range cases {
		root := filepath.Join(x.dir, fmt.Sprint(i))
		if err := mkdirAll(root); err != nil {
			return err
		}
		dataDir, undo, err := c.setup(root)
		if err != nil {
			return err
		}
		before, err := treeSnapshot(root, "")
		if err != nil {
			return err
		}
		x.fault(1)
		n, sets := faultNet("stress-nd", dataDir)
		f := x.newFixture(n, sets, "", 0)
		a := f.addMustFail(fmt.Sprintf("nd%d", i), c.name)
		od := x.doDelNoViolation(f.t, f.n, a)
		f.expectClean(od, c.name+": DEL", 5)
		after, err := treeSnapshot(root, "")
		if err != nil {
			return err
		}
		for _, d := range diffTrees(before, after) {
			x.violate("%s: %s", c.name, d)
		}
		x.detail("%s: ADD %s, DEL %s", c.name, errSummary(a.last), errSummary(od))
		if err := undo(); err != nil {
			return err
		}
		f.recovered(c.name + ", fixed")
		x.delAll(n, f.atts, 2)
		x.expectNoRecords(n.records(), c.name+", fixed, all DELeted")
	}
	x.note("ADD and DEL with a data dir that is a file, under a file, or a symlink to a file; then fixed")
	return nil
}

// --- fault-perm ------------------------------------------------------------------------

func faultPerm(x *job) error {
	data := x.dir + "/data"
	if err := mkdirAll(data); err != nil {
		return err
	}
	n, sets := faultNet("stress-perm", data)
	f := x.newFixture(n, sets, "pm", 6)

	// The plugin as an unprivileged uid on root's 0755 store.
	before := f.snapshot()
	x.fault(1)
	when := "the plugin as uid 65534 on root's 0755 store"
	live := f.live()
	oa := x.call(call{cmd: "ADD", id: "pm-nobody", stdin: x.conf(n, nil), uid: cniexec.Nobody})
	if oa.ok() {
		x.violate("%s: ADD succeeded", when)
	} else {
		f.expectClean(oa, when+": ADD", 5)
	}
	oc := x.call(call{cmd: "CHECK", id: live[0].id, ifname: live[0].ifname, stdin: x.conf(n, live[0].prev), uid: cniexec.Nobody})
	f.expectClean(oc, when+": CHECK", 5)
	od := x.call(call{cmd: "DEL", id: live[0].id, ifname: live[0].ifname, stdin: x.conf(n, nil), uid: cniexec.Nobody})
	if od.ok() {
		x.violate("%s: DEL of %s reported success but cannot have removed its record", when, live[0])
	} else {
		f.expectClean(od, when+": DEL", 5)
	}
	n2 := n
	n2.name = "stress-perm-new"
	on := x.call(call{cmd: "ADD", id: "pm-nobody", stdin: x.conf(n2, nil), uid: cniexec.Nobody})
	if on.ok() {
		x.violate("%s: ADD into a new network succeeded", when)
	} else {
		f.expectClean(on, when+": ADD into a new network", 5)
	}
	f.intact(before, when)
	x.detail("%s: ADD %s; CHECK %s; DEL %s; ADD into a new network %s", when, errSummary(oa), errSummary(oc), errSummary(od), errSummary(on))
	f.recovered(when + ", as root again")

	// chattr +i on the network directory.
	before = f.snapshot()
	if err := setFlag(n.dir(), flagImmutable, true); err != nil {
		return fmt.Errorf("chattr +i %s: %w", n.dir(), err)
	}
	x.fault(1)
	when = "chattr +i on the network directory"
	a := f.addMustFail("pm-immutable", when)
	live = f.live()
	od = x.doDelNoViolation(f.t, n, live[0])
	if od.ok() {
		f.lyingDel(live[0], when)
	} else {
		f.expectClean(od, when+": DEL", 5)
	}
	oc = x.call(call{cmd: "CHECK", id: live[1].id, ifname: live[1].ifname, stdin: x.conf(n, live[1].prev)})
	f.expectClean(oc, when+": CHECK", 5)
	f.intact(before, when)
	x.detail("%s: ADD %s; DEL %s; CHECK %s", when, errSummary(a.last), errSummary(od), errSummary(oc))
	if err := setFlag(n.dir(), flagImmutable, false); err != nil {
		return err
	}
	f.recovered(when + ", cleared")

	// chattr +i on one record: its DEL cannot remove it, the others' can.
	live = f.live()
	rec := filepath.Join(n.dir(), live[0].addrs[0].String())
	before = f.snapshot()
	if err := setFlag(rec, flagImmutable, true); err != nil {
		return fmt.Errorf("chattr +i %s: %w", rec, err)
	}
	x.fault(1)
	when = "chattr +i on the record " + live[0].addrs[0].String()
	od = x.doDelNoViolation(f.t, n, live[0])
	if od.ok() {
		f.lyingDel(live[0], when)
	} else {
		f.expectClean(od, when+": DEL of its attachment", 5)
	}
	od2 := x.doDelNoViolation(f.t, n, live[1])
	if !od2.ok() {
		x.violate("%s: DEL of %s (another record) failed: %s", when, live[1], describe(od2))
		f.intact(before, when)
	} else {
		f.intact(before, when, live[1])
	}
	x.detail("%s: DEL of its attachment %s; DEL of another %s", when, errSummary(od), errSummary(od2))
	if err := setFlag(rec, flagImmutable, false); err != nil {
		return err
	}
	f.recovered(when + ", cleared")

	// chattr +a on the cursor: it can no longer be rewritten.
	cursor := filepath.Join(n.dir(), "last_reserved_ip.0")
	before = f.snapshot()
	if err := setFlag(cursor, flagAppend, true); err != nil {
		return fmt.Errorf("chattr +a %s: %w", cursor, err)
	}
	x.fault(1)
	when = "chattr +a on last_reserved_ip.0"
	a = f.addUnderFault("pm-append", when, false)
	f.intact(before, when)
	x.detail("%s: ADD %s", when, x.outcomeWord(a))
	if err := setFlag(cursor, flagAppend, false); err != nil {
		return err
	}
	f.recovered(when + ", cleared")
	f.finish("after the permission faults")
	x.note("the plugin as uid 65534 on root's store (existing and new network); chattr +i on the network directory and on one record; chattr +a on the cursor")
	return nil
}
