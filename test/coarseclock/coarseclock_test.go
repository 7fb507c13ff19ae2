package coarseclock

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/fsclock"
	"github.com/local-ipam/local-ipam/internal/mounttest"
)

// A file system to test on: mount puts it on dir (cleaned up with the test), or says why
// it cannot. coarse: two changes can always share a timestamp there (else the file
// system is tested only where they can). mirrored: a directory's ctime only mirrors its
// mtime, so local-ipam's commit moves both back, and host-local's change in the same
// tick is told by the time instead (world.sameTick).
type fileSystem struct {
	name     string
	mount    func(t *testing.T, dir string) error
	coarse   bool
	mirrored bool
}

var fileSystems = []fileSystem{
	{"ramfs", func(_ *testing.T, dir string) error { return mounttest.Ramfs(dir) }, true, false},
	{"ext4-128-byte-inodes", mountSmallInodeExt4, true, false},
	// Even with multigrain timestamps, tmpfs stamps a directory with the removed file's
	// ctime on unlink, which can repeat the directory's last timestamp.
	{"tmpfs", func(_ *testing.T, dir string) error {
		return mounttest.Tmpfs(dir, "size=16m,mode=0755")
	}, false, false},
	// 1 s timestamps and a ctime that mirrors the mtime; umask=0 lets nobody write.
	{"exfat-fuse", mountExfat, true, true},
}

func TestSameTickChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a ramfs, a tmpfs, and an ext4 image (mkfs.ext4 -I 128) on a loop device")
	}
	bins := binaries{li: cniexec.Bin(t, "local-ipam"), hl: cniexec.Bin(t, "host-local")}
	mounted := 0
	for _, fsys := range fileSystems {
		t.Run(fsys.name, func(t *testing.T) {
			mnt := t.TempDir()
			// Reachable by nobody (the non-owner runs): t.TempDir's directories are 0700.
			if err := os.Chmod(filepath.Dir(mnt), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := fsys.mount(t, mnt); err != nil {
				t.Skipf("cannot mount %s: %v", fsys.name, err)
			}
			mounttest.UnmountAtCleanup(t, mnt)
			mounted++
			shared, err := fsclock.SharedTimestamps(mnt, 200)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case !shared && !fsys.coarse:
				t.Skipf("no two changes on %s shared a timestamp in 200 tries: nothing to test here", fsys.name)
			case !shared:
				t.Fatalf("no two changes on %s shared a timestamp in 200 tries: the test would prove nothing here", fsys.name)
			}
			for _, owner := range []bool{true, false} {
				name := "owner"
				if !owner {
					name = "non-owner"
				}
				t.Run(name, func(t *testing.T) {
					rounds := 30
					if !owner && (fsys.name == "ext4-128-byte-inodes" || fsys.name == "exfat-fuse") {
						// Every call that changes the store waits for the next second there.
						rounds = 2
						if testing.Short() {
							rounds = 1
						}
					}
					w := newWorld(t, bins, filepath.Join(mnt, name), owner)
					w.mirrored = fsys.mirrored
					sameTick := 0
					for _, c := range cases {
						wrong, same := 0, 0
						var first []string
						for r := range rounds {
							netName := fmt.Sprintf("%s-%02d", c.name, r)
							w.prepare(netName)
							res := c.run(w, netName)
							if res.sameTick {
								same++
							}
							if res.wrong != "" {
								wrong++
								if len(first) < 3 {
									first = append(first, fmt.Sprintf("round %d: %s", r, res.wrong))
								}
							}
						}
						sameTick += same
						t.Logf("case %s: host-local's change fell in the clock tick of local-ipam's commit in %d of %d rounds; %d rounds went wrong", c.name, same, rounds, wrong)
						if wrong > 0 {
							t.Errorf("case %s (%s): %d of %d rounds went wrong:\n  %s", c.name, c.about, wrong, rounds, strings.Join(first, "\n  "))
						}
					}
					if owner && sameTick == 0 {
						t.Errorf("host-local's change never fell in the clock tick of local-ipam's commit: the interleaving was not exercised")
					}
				})
			}
		})
	}
	if mounted == 0 {
		t.Skip("no file system could be mounted (see the subtests)")
	}
}

type result struct {
	wrong    string // what went wrong, "" when nothing did
	sameTick bool   // host-local's change kept the directory's ctime of local-ipam's commit
}

// The cases: each runs on a network of its own, freshly created.
var cases = []struct {
	name, about string
	run         func(w *world, net string) result
}{
	{"a", "local-ipam ADD c1, host-local ADD c2, local-ipam DEL c2 must remove c2's record", func(w *world, net string) result {
		conf := w.conf(net, subnet)
		began := time.Now()
		w.mustOK(w.li, "ADD", "c1", conf)
		before := w.stat(net)
		c2 := w.addr(w.mustOK(w.hl, "ADD", "c2", conf))
		res := result{sameTick: w.sameTick(before, w.stat(net), began)}
		if o := w.call(w.li, "DEL", "c2", conf); !o.OK() {
			res.wrong = fmt.Sprintf("DEL c2: %s", o)
		} else if w.exists(net, c2) {
			res.wrong = fmt.Sprintf("DEL c2 answered 0 and left c2's record %s", c2)
		}
		return res
	}},
	{"b", "local-ipam ADD c1, host-local ADD c2, local-ipam ADD c2 must fail with code 103", func(w *world, net string) result {
		conf := w.conf(net, subnet)
		began := time.Now()
		w.mustOK(w.li, "ADD", "c1", conf)
		before := w.stat(net)
		w.mustOK(w.hl, "ADD", "c2", conf)
		res := result{sameTick: w.sameTick(before, w.stat(net), began)}
		o := w.call(w.li, "ADD", "c2", conf)
		if e, _ := o.Error(); e.Code != 103 {
			res.wrong = fmt.Sprintf("ADD c2 again: %s, want code 103 (c2 already holds an address)", o)
		}
		return res
	}},
	{"c", "local-ipam ADD c2 and c1 fill two addresses, host-local DEL c2, local-ipam STATUS must succeed and ADD c3 get c2's address", func(w *world, net string) result {
		conf := w.conf(net, twoAddrs)
		c2 := w.addr(w.mustOK(w.li, "ADD", "c2", conf))
		began := time.Now()
		w.mustOK(w.li, "ADD", "c1", conf)
		before := w.stat(net)
		w.mustOK(w.hl, "DEL", "c2", conf)
		res := result{sameTick: w.sameTick(before, w.stat(net), began)}
		if w.exists(net, c2) {
			w.t.Fatalf("host-local DEL c2 left its record %s", c2)
		}
		var wrong []string
		if o := w.call(w.li, "STATUS", "", conf); !o.OK() {
			wrong = append(wrong, fmt.Sprintf("STATUS with %s free: %s", c2, o))
		}
		if o := w.call(w.li, "ADD", "c3", conf); !o.OK() {
			wrong = append(wrong, fmt.Sprintf("ADD c3 with %s free: %s", c2, o))
		} else if got := w.addr(o); got != c2 {
			wrong = append(wrong, fmt.Sprintf("ADD c3 got %s, want %s (the only free address)", got, c2))
		}
		res.wrong = strings.Join(wrong, "; ")
		return res
	}},
}

const (
	subnet   = `{"subnet": "10.77.0.0/24"}`
	twoAddrs = `{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.2", "rangeEnd": "10.77.0.3"}`
)

type binaries struct{ li, hl string }

// world is a data directory on a coarse file system and the plugins that work on it.
type world struct {
	t *testing.T
	binaries
	dataDir  string
	owner    bool // the plugins run as root (else as nobody, who does not own the network directories and so cannot set their timestamps)
	mirrored bool // see fileSystem
}

func newWorld(t *testing.T, bins binaries, dataDir string, owner bool) *world {
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &world{t: t, binaries: bins, dataDir: dataDir, owner: owner}
}

// prepare creates a network directory for a non-owner run: root's, writable by all.
func (w *world) prepare(net string) {
	if w.owner {
		return
	}
	dir := filepath.Join(w.dataDir, net)
	if err := os.Mkdir(dir, 0o777); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // whatever the umask
		w.t.Fatal(err)
	}
}

func (w *world) conf(net, rng string) []byte {
	return fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": %q, "type": "bridge", "ipam": {"type": "local-ipam", "dataDir": %q, "ranges": [[%s]]}}`, net, w.dataDir, rng)
}

// call runs one CNI command of the plugin at bin as a runtime does (as nobody in a
// non-owner run).
func (w *world) call(bin, command, id string, conf []byte) cniexec.Out {
	w.t.Helper()
	c := cniexec.Call{Cmd: command, ID: id, IfName: "eth0", Conf: conf}
	if !w.owner {
		c.UID = cniexec.Nobody
	}
	o, err := cniexec.CNIExec(bin, c)
	if err != nil {
		w.t.Fatalf("%s %s %s: %v", filepath.Base(bin), command, id, err)
	}
	return o
}

func (w *world) mustOK(bin, command, id string, conf []byte) cniexec.Out {
	w.t.Helper()
	o := w.call(bin, command, id, conf)
	if !o.OK() {
		w.t.Fatalf("%s %s %s: %s", filepath.Base(bin), command, id, o)
	}
	return o
}

// addr is the one address of an ADD's result.
func (w *world) addr(o cniexec.Out) netip.Addr {
	w.t.Helper()
	addrs := o.Addrs(w.t)
	if len(addrs) != 1 {
		w.t.Fatalf("ADD gave %v, want one address", addrs)
	}
	p, err := netip.ParsePrefix(addrs[0])
	if err != nil {
		w.t.Fatal(err)
	}
	return p.Addr()
}

func (w *world) exists(net string, a netip.Addr) bool {
	_, err := os.Lstat(filepath.Join(w.dataDir, net, a.String()))
	return err == nil
}

// stat is the network directory's status. In a non-owner run it also checks the set-up:
// the directory's mtime must still equal its ctime after local-ipam's commit (it could
// not set the mtime, and waited for the clock instead). Where the ctime mirrors the
// mtime that tells nothing: there sameTick checks the mtime was not set back.
func (w *world) stat(net string) unix.Stat_t {
	w.t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(w.dataDir, net), &st); err != nil {
		w.t.Fatal(err)
	}
	if !w.owner && st.Mtim != st.Ctim {
		w.t.Fatalf("non-owner run: the mtime of %s was set (%v, ctime %v): local-ipam ran as its owner", net, st.Mtim, st.Ctim)
	}
	return st
}

// sameTick tells whether host-local's change (after) fell in the clock tick of local-ipam's
// commit (before, the directory as the commit left it; began, when that call started):
// the change kept the ctime of the commit. Where the ctime mirrors the mtime, the commit
// set both back, and the timestamps are whole seconds: the change shared the second of
// the commit's own change when it got the second the call began in.
func (w *world) sameTick(before, after unix.Stat_t, began time.Time) bool {
	w.t.Helper()
	if !w.mirrored {
		return after.Ctim == before.Ctim
	}
	if !w.owner && before.Mtim.Sec < began.Unix() {
		w.t.Fatalf("non-owner run: local-ipam's commit set the mtime back (%v, the call began at %v): it ran as the owner", before.Mtim, began)
	}
	return after.Mtim.Sec == began.Unix()
}

func mountExfat(t *testing.T, dir string) error {
	return mounttest.Exfat(t, dir, "umask=0")
}

// mountSmallInodeExt4 mounts a fresh ext4 made with 128-byte inodes (no room for the
// nanoseconds: 1 s timestamps) on a loop device.
func mountSmallInodeExt4(t *testing.T, dir string) error {
	mkfs, err := mounttest.Tool("mkfs.ext4", "e2fsprogs")
	if err != nil {
		return err
	}
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := mounttest.Image(img, 64<<20, mkfs, "-q", "-F", "-I", "128"); err != nil {
		return err
	}
	dev, err := mounttest.Loop(t, img)
	if err != nil {
		return err
	}
	if err := unix.Mount(dev, dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s (ext4): %w", dev, err)
	}
	return nil
}
