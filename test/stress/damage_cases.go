package main

// The damage cases: what each does to the store, what local-ipam must then do
// (docs/RELIABILITY.md), and the helpers that damage files in place.

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

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
