package disk

import (
	"errors"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// DefaultLockTimeout bounds the wait for the network's lock when Options.LockTimeout is 0;
// past it the call fails with code 11 (try again later) instead of hanging the runtime.
const DefaultLockTimeout = 60 * time.Second

// lockMode is the mode host-local's go-filemutex creates the lock file with.
const lockMode = 0o750

// openLock opens the network's lock file, creating it if needed, through the directory
// fd and never through a symlink. The fd is close-on-exec: a child must not inherit it
// and keep the network locked after we exit. O_NONBLOCK: a fifo named lock must not hang
// the open.
func (s *Store) openLock() error {
	path := filepath.Join(s.dir, lockName)
	fd, err := unix.Openat(s.netfd, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, lockMode)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) {
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "lock file %s is not a regular file", path)
	}
	if err != nil {
		return cnierr.IO(err, "cannot open lock file %s", path)
	}
	s.lockfd = fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return cnierr.IO(err, "cannot stat lock file %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "lock file %s is not a regular file", path)
	}
	return nil
}

// lockWithTimeout takes the lock file's flock, exclusive: the lock go-filemutex takes in
// host-local, on the same file, so the two plugins exclude each other.
func (s *Store) lockWithTimeout() error {
	err := unix.Flock(s.lockfd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return cnierr.IO(err, "cannot lock %s", s.dir)
	}
	fd := s.lockfd
	done := make(chan error)
	abandoned := make(chan struct{})
	go func() {
		err := unix.Flock(fd, unix.LOCK_EX)
		for errors.Is(err, unix.EINTR) {
			err = unix.Flock(fd, unix.LOCK_EX)
		}
		select {
		case done <- err:
		case <-abandoned:
			// Timed out: the fd is ours to close, which drops the lock if we got it.
			unix.Close(fd)
		}
	}()
	timer := time.NewTimer(s.lockTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return cnierr.IO(err, "cannot lock %s", s.dir)
		}
		return nil
	case <-timer.C:
		// The waiting flock keeps the fd, so that it never locks an fd number reused by
		// another open.
		s.lockfd = -1
		close(abandoned)
		return cnierr.New(cnierr.TryAgainLater, s.dir, "timed out after %s waiting for the lock of %s", s.lockTimeout, s.dir)
	}
}
