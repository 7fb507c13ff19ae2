package disk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// prepare writes n anonymous record files of the call's owner (see Options.Records).
// Any failure only leaves fewer of them: Reserve then writes the record itself.
func (s *Store) prepare(n int) {
	b := []byte(s.preparedKey)
	for range min(n, 64) {
		fd, err := sysOpenTmpfile(s.netfd)
		if err != nil {
			s.refused.tmpfile = s.refused.tmpfile || noTmpfile(err)
			return
		}
		if err := writeAll(fd, b); err != nil {
			unix.Close(fd)
			return
		}
		s.prepared = append(s.prepared, fd)
	}
}

// linkPrepared links a prepared record of key into place as name. exists: name is
// taken (the prepared file stays for the next try). An error means "write it yourself":
// nothing prepared for key, or the link failed (no /proc, say).
func (s *Store) linkPrepared(key, name string) (exists bool, err error) {
	if len(s.prepared) == 0 || key != s.preparedKey {
		return false, unix.ENOENT
	}
	fd := s.prepared[len(s.prepared)-1]
	err = sysLinkat(unix.AT_FDCWD, procFD(fd), s.netfd, name, unix.AT_SYMLINK_FOLLOW)
	switch {
	case err == nil:
		s.prepared = s.prepared[:len(s.prepared)-1]
		unix.Close(fd)
		return false, nil
	case errors.Is(err, unix.EEXIST):
		return true, nil
	}
	// Not usable: drop them all, the usual path writes records (and skips O_TMPFILE if
	// its link is what failed).
	s.refused.tmpfile = s.refused.tmpfile || errors.Is(err, unix.ENOENT) || noLink(err)
	s.closePrepared()
	return false, err
}

func (s *Store) closePrepared() {
	for _, fd := range s.prepared {
		unix.Close(fd) // anonymous: gone with its last descriptor
	}
	s.prepared = nil
}
