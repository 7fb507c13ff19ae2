// Package fsclock tells, by behaviour rather than by file-system type or kernel version,
// whether a file system can give two changes of a directory the same timestamps: what
// decides whether a directory's mtime and ctime can miss a change.
package fsclock

import (
	"os"

	"golang.org/x/sys/unix"
)

// SharedTimestamps reports whether two changes in a row to a directory below dir can
// leave it the same mtime and ctime. In a scratch directory it makes a change, stats,
// makes another change, stats, up to tries times, and answers true at the first pair of
// changes that left the same timestamps. The stat between the two changes matters: on a
// file system with multigrain timestamps it is what makes the next change get a distinct
// one.
func SharedTimestamps(dir string, tries int) (bool, error) {
	scratch, err := os.MkdirTemp(dir, ".fsclock-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(scratch)
	fd, err := unix.Open(scratch, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	present := false
	change := func() (unix.Stat_t, error) { // one change: create or remove a file, as a record
		var st unix.Stat_t
		if present {
			if err := unix.Unlinkat(fd, "x", 0); err != nil {
				return st, err
			}
		} else {
			f, err := unix.Openat(fd, "x", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return st, err
			}
			unix.Close(f)
		}
		present = !present
		return st, unix.Fstat(fd, &st)
	}
	for range tries {
		a, err := change()
		if err != nil {
			return false, err
		}
		b, err := change()
		if err != nil {
			return false, err
		}
		if a.Mtim == b.Mtim && a.Ctim == b.Ctim {
			return true, nil
		}
	}
	return false, nil
}
