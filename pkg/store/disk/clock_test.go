package disk_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/fsclock"
	"github.com/local-ipam/local-ipam/internal/mounttest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// coarseDir mounts a ramfs (its timestamps follow the kernel's clock tick, with no
// multigrain timestamps) for the test, and checks that two changes can share a timestamp
// there; it skips the test, saying why, when it cannot.
func coarseDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a ramfs (a file system where two changes can share a timestamp)")
	}
	dir := mounttest.TempRamfs(t)
	shared, err := fsclock.SharedTimestamps(dir, 200)
	if err != nil {
		t.Fatal(err)
	}
	if !shared {
		t.Fatalf("no two changes on the ramfs shared a timestamp in 200 tries: the test would prove nothing")
	}
	return dir
}

func statDir(t *testing.T, dir string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A record created or removed behind the index's back right after a commit, in the same
// clock tick, is noticed by the next call: with the directory's mtime set back at the
// commit, with the commit waiting for the clock when that is refused (as for a process
// that does not own the directory), and when the clock does not move within the wait
// (the state is left invalid: the next call rebuilds).
func TestChangeInTheTickOfTheCommit(t *testing.T) {
	for _, mode := range []string{"stamp", "wait", "wait-gives-up"} {
		t.Run(mode, func(t *testing.T) {
			data := coarseDir(t)
			switch mode {
			case "wait":
				disk.RefuseStamps(t)
			case "wait-gives-up":
				disk.RefuseStamps(t)
				disk.SetClockWait(t, 0)
			}
			net := filepath.Join(data, "net")
			const rounds = 30
			sameTick := 0
			for r := range rounds {
				mine := store.Owner{ID: fmt.Sprintf("c%d", r), IfName: "eth0"}
				mineAddr := ip(fmt.Sprintf("10.0.0.%d", 2*r+2))
				foreign := store.Owner{ID: fmt.Sprintf("hl%d", r), IfName: "eth0"}
				foreignAddr := ip(fmt.Sprintf("10.0.0.%d", 2*r+3))

				s := mustOpen(t, data, "net")
				if ok, err := s.Reserve(mineAddr, mine); !ok || err != nil {
					t.Fatalf("round %d: Reserve: %v %v", r, ok, err)
				}
				closeIt(t, s)
				committed := statDir(t, net)
				// Behind its back, at once: a record created (host-local's ADD), and on
				// odd rounds the record just written removed (an rm).
				if err := os.WriteFile(filepath.Join(net, foreignAddr.String()), []byte(foreign.Key()), 0o644); err != nil {
					t.Fatal(err)
				}
				if r%2 == 1 {
					if err := os.Remove(filepath.Join(net, mineAddr.String())); err != nil {
						t.Fatal(err)
					}
				}
				if changed := statDir(t, net); changed.Ctim == committed.Ctim {
					sameTick++
				}

				s = mustOpen(t, data, "net")
				got, err := s.Owned(foreign)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 || got[0] != foreignAddr {
					t.Errorf("round %d: the record %s created right after the commit: %s owns %v, want [%s] (rebuilds: %d)", r, foreignAddr, foreign.ID, got, foreignAddr, s.Rebuilds())
				}
				got, err = s.Owned(mine)
				if err != nil {
					t.Fatal(err)
				}
				if want := r%2 == 0; (len(got) == 1) != want {
					t.Errorf("round %d: %s owns %v after its record was removed: %v (rebuilds: %d)", r, mine.ID, got, !want, s.Rebuilds())
				}
				closeIt(t, s)
			}
			t.Logf("%s: in %d of %d rounds the change behind the index's back fell in the clock tick of the commit", mode, sameTick, rounds)
			switch mode {
			case "stamp":
				if sameTick == 0 {
					t.Errorf("no change fell in the clock tick of the commit: the case was not exercised")
				}
			case "wait":
				if sameTick != 0 {
					t.Errorf("in %d rounds a change made right after the commit fell in its clock tick: the commit did not wait for the clock", sameTick)
				}
			}
		})
	}
}

// A call killed after its commit set the directory's mtime back but before it wrote the
// state leaves a state the next call does not trust: the records changed, so the state
// was marked "changing" at the first change. Without the mark, where the call falls in
// the clock tick of the previous commit, the stamp would recreate the very timestamps
// that commit recorded.
func TestKilledBetweenStampAndState(t *testing.T) {
	data := coarseDir(t)
	for r := range 30 {
		name := fmt.Sprintf("net%d", r)
		s := mustOpen(t, data, name)
		if ok, err := s.Reserve(ip("10.0.0.2"), a1); !ok || err != nil {
			t.Fatal(ok, err)
		}
		closeIt(t, s)

		s = mustOpen(t, data, name)
		if ok, err := s.Reserve(ip("10.0.0.3"), a2); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if err := disk.StampDir(s); err != nil {
			t.Fatal(err)
		}
		s.Abandon() // killed before the state is written

		s = mustOpen(t, data, name)
		if s.Rebuilds() != 1 {
			t.Errorf("round %d: Rebuilds = %d after a call killed between the stamp and the state, want 1", r, s.Rebuilds())
		}
		if got, _ := s.Owned(a2); fmt.Sprint(got) != "[10.0.0.3]" {
			t.Errorf("round %d: a2 owns %v, want [10.0.0.3]", r, got)
		}
		closeIt(t, s)
	}
}
