package disk

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RefuseStamps makes setting a network directory's mtime fail, as it does for a process
// that does not own the directory, for the rest of the test: the state is then saved
// after waiting for the clock.
func RefuseStamps(t testing.TB) {
	old := stampDir
	stampDir = func(int, unix.Timespec) error { return unix.EPERM }
	t.Cleanup(func() { stampDir = old })
}

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
