package disk_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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
			const rounds = 30
			sameTick := tickRounds(t, data, rounds, func(committed, changed unix.Stat_t, _ time.Time) bool {
				return changed.Ctim == committed.Ctim
			})
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

// tickRounds runs rounds of: a call reserves an address and commits; at once, behind its
// back, a record is created (host-local's ADD) and, on odd rounds, the record just
// written is removed (an rm); the next call must see both. sameTick tells, from the
// directory as the commit left it and as the change left it, and the time the
// committing call began, whether the change fell in the clock tick of the commit's own
// change; tickRounds returns in how many rounds it did.
func tickRounds(t *testing.T, data string, rounds int, sameTick func(committed, changed unix.Stat_t, began time.Time) bool) int {
	t.Helper()
	net := filepath.Join(data, "net")
	same := 0
	for r := range rounds {
		mine := store.Owner{ID: fmt.Sprintf("c%d", r), IfName: "eth0"}
		mineAddr := ip(fmt.Sprintf("10.0.0.%d", 2*r+2))
		foreign := store.Owner{ID: fmt.Sprintf("hl%d", r), IfName: "eth0"}
		foreignAddr := ip(fmt.Sprintf("10.0.0.%d", 2*r+3))

		began := time.Now()
		s := mustOpen(t, data, "net")
		if ok, err := s.Reserve(mineAddr, mine); !ok || err != nil {
			t.Fatalf("round %d: Reserve: %v %v", r, ok, err)
		}
		closeIt(t, s)
		committed := statDir(t, net)
		if err := os.WriteFile(filepath.Join(net, foreignAddr.String()), []byte(foreign.Key()), 0o644); err != nil {
			t.Fatal(err)
		}
		if r%2 == 1 {
			if err := os.Remove(filepath.Join(net, mineAddr.String())); err != nil {
				t.Fatal(err)
			}
		}
		if sameTick(committed, statDir(t, net), began) {
			same++
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
	return same
}

// exfatDir mounts exFAT through FUSE for the test, and checks the premise: a directory's
// ctime there only mirrors its mtime, so setting the mtime back never makes them differ.
func exfatDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := mounttest.Exfat(t, dir); err != nil {
		t.Skip(err)
	}
	probe := filepath.Join(dir, "probe")
	if err := os.Mkdir(probe, 0o755); err != nil {
		t.Fatal(err)
	}
	st := statDir(t, probe)
	back := unix.Timespec{Sec: st.Mtim.Sec - 5}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, probe, []unix.Timespec{st.Atim, back}, 0); err != nil {
		t.Fatal(err)
	}
	if st = statDir(t, probe); st.Mtim != back || st.Ctim != st.Mtim {
		t.Fatalf("the premise: on exFAT through FUSE a directory's ctime mirrors its mtime; after setting the mtime to %v: mtime %v, ctime %v", back, st.Mtim, st.Ctim)
	}
	if err := os.Remove(probe); err != nil {
		t.Fatal(err)
	}
	return dir
}

// On exFAT through FUSE, where a directory's ctime only mirrors its mtime, a commit sets
// the mtime back and records that pair, which no later change can leave (state.go): it
// never waits for the clock, and a change behind the index's back in the same second is
// noticed all the same. Refused the stamp, it waits (the way a commit took is counted).
func TestExfatCommitsDoNotWait(t *testing.T) {
	for _, mode := range []string{"stamp", "wait"} {
		t.Run(mode, func(t *testing.T) {
			data := exfatDir(t)
			rounds := 20
			if mode == "wait" {
				disk.RefuseStamps(t)
				rounds = 2 // each commit waits for the next second
			}
			before := disk.ClockWaits()
			sameTick := tickRounds(t, data, rounds, func(committed, changed unix.Stat_t, began time.Time) bool {
				// 1 s timestamps: the change shares the commit's second when it got the
				// second the committing call began in.
				if mode == "stamp" && !(committed.Mtim.Sec < began.Unix()) {
					t.Errorf("the commit left the mtime at %v, not before the second of its own change (%d)", committed.Mtim, began.Unix())
				}
				return changed.Mtim.Sec == began.Unix()
			})
			waits := disk.ClockWaits() - before
			t.Logf("%s: %d waits for the clock over %d rounds; the change behind the index's back fell in the second of the commit in %d", mode, waits, rounds, sameTick)
			switch mode {
			case "stamp":
				if waits != 0 {
					t.Errorf("%d commits or rebuilds of %d rounds waited for the clock: the stamp was not taken", waits, rounds)
				}
				if sameTick == 0 {
					t.Errorf("no change fell in the second of the commit: the case was not exercised")
				}
			case "wait":
				if waits == 0 {
					t.Errorf("with the stamp refused, no commit waited for the clock")
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
		mustReserve(t, s, "10.0.0.2", a1)
		closeIt(t, s)

		s = mustOpen(t, data, name)
		mustReserve(t, s, "10.0.0.3", a2)
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
