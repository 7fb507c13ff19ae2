package disk

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// OnePage is the longest record written in a single write on a file system that offers
// no atomic way to create a file.
const OnePage = onePage

// TmpName is the temporary file the fallbacks use in the network directory.
const TmpName = tmpName

// Attempts counts the calls of each system call that selects a way to create a file.
type Attempts struct{ Tmpfile, Link, Rename2 atomic.Int64 }

// Refuse makes these system calls fail as on a file system without them (with the
// errors exfat through FUSE returns: EOPNOTSUPP for O_TMPFILE, EPERM for a hard link,
// EINVAL for RENAME_NOREPLACE), and counts every attempt, refused or not, until the test
// ends. Tests that use it must not run in parallel.
func Refuse(t testing.TB, tmpfile, link, rename2 bool) *Attempts {
	a := &Attempts{}
	open, lnk, ren := sysOpenTmpfile, sysLinkat, sysRenameat2
	t.Cleanup(func() { sysOpenTmpfile, sysLinkat, sysRenameat2 = open, lnk, ren })
	sysOpenTmpfile = func(dir int) (int, error) {
		a.Tmpfile.Add(1)
		if tmpfile {
			return -1, unix.EOPNOTSUPP
		}
		return open(dir)
	}
	sysLinkat = func(olddir int, oldpath string, newdir int, newpath string, flags int) error {
		a.Link.Add(1)
		if link {
			return unix.EPERM
		}
		return lnk(olddir, oldpath, newdir, newpath, flags)
	}
	sysRenameat2 = func(olddir int, oldpath string, newdir int, newpath string, flags uint) error {
		a.Rename2.Add(1)
		if rename2 {
			return unix.EINVAL
		}
		return ren(olddir, oldpath, newdir, newpath, flags)
	}
	return a
}

// RefuseStamps makes setting a network directory's mtime fail, as it does for a process
// that does not own the directory, for the rest of the test: the state is then saved
// after waiting for the clock.
func RefuseStamps(t testing.TB) {
	old := stampDir
	stampDir = func(int, unix.Timespec, unix.Timespec) error { return unix.EPERM }
	t.Cleanup(func() { stampDir = old })
}

// ClockWaits counts the commits and rebuilds of this process so far that waited for the
// file system's clock (waitClock).
func ClockWaits() int64 { return clockWaits.Load() }

// SetClockWait bounds the wait for the clock for the rest of the test.
func SetClockWait(t testing.TB, d time.Duration) {
	old := clockWait
	clockWait = d
	t.Cleanup(func() { clockWait = old })
}

// StampDir does to the network directory what a commit does just before it writes the
// state (statDir).
func StampDir(s *Store) error {
	var st unix.Stat_t
	_, err := s.statDir(&st)
	return err
}

// Abandon drops the store without committing, as a process killed mid-call would: tests
// check that the next call repairs what was left.
func (s *Store) Abandon() { s.release() }

// Rebuilds counts the index rebuilds this call made.
func (s *Store) Rebuilds() int { return s.rebuilds }
