package disk

import (
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// Thin wrappers over the *at system calls. Every name passed here is a single path
// component resolved against a directory fd we opened with O_NOFOLLOW, and every open
// uses O_NOFOLLOW: nothing outside <dataDir>/<network>/ is ever read or written, whatever
// symlinks someone left inside it.

const (
	rdFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	wrFlags = unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

func openDir(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// readSmall reads up to max bytes of a regular file. ok is false when the name does not
// exist; regular is false when it exists but is not a regular file (a symlink, a
// directory, a fifo...), which we never read through.
func readSmall(dirfd int, name string, max int) (data []byte, ok, regular bool, err error) {
	fd, err := unix.Openat(dirfd, name, rdFlags, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, false, false, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENXIO):
		return nil, true, false, nil
	case err != nil:
		return nil, false, false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, true, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, true, false, nil
	}
	// Size the buffer by the file (plus one byte, to see a file that grew meanwhile):
	// a 1 MiB buffer for a 30-byte file is most of what a call would cost.
	size := int(st.Size) + 1
	if size > max || st.Size < 0 {
		size = max
	}
	buf := make([]byte, size)
	n := 0
	for n < size {
		m, err := unix.Read(fd, buf[n:])
		if err != nil {
			return nil, true, true, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], true, true, nil
}

// On ext4 (with its default auto_da_alloc), truncating a file to zero or renaming over
// an existing one forces the new data to disk before the call returns: 0.1 to 1 ms each,
// more than everything else a call does. So nothing here ever truncates to zero, and
// replacing by rename is kept for the rare cases that need it.

// putFile writes b as the whole content of name, creating it if needed, in place: a
// pwrite, then a trim of any longer old tail. Not atomic against a crash, so it is only
// used for our index files, whose consistency the state file guards (see state.go).
func putFile(dirfd int, name string, b []byte) error {
	fd, err := unix.Openat(dirfd, name, wrFlags|unix.O_CREAT, 0o600)
	if err != nil {
		return err
	}
	err = pwriteAll(fd, b, 0)
	if err == nil {
		err = unix.Ftruncate(fd, int64(len(b)))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// createFile writes a new file; it fails if name exists.
func createFile(dirfd int, name string, b []byte) error {
	fd, err := unix.Openat(dirfd, name, wrFlags|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = writeAll(fd, b)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// replaceFile writes b to a fresh temporary file, then renames it over dir/name: readers
// see the old content or the new, never a torn one.
func replaceFile(dir int, name string, b []byte) error {
	if err := unix.Unlinkat(dir, tmpName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := createFile(dir, tmpName, b); err != nil {
		return err
	}
	return unix.Renameat(dir, tmpName, dir, name)
}

// overwriteAtomic replaces the content of name with b, which is at least as long as the
// old content: a single pwrite of a few bytes at offset 0, which a kill cannot split, so
// readers see the old content or the new. ok is false when name is not a regular file.
func overwriteAtomic(dirfd int, name string, b []byte) (ok bool, err error) {
	fd, err := unix.Openat(dirfd, name, wrFlags, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	n, err := unix.Pwrite(fd, b, 0)
	if err == nil && n != len(b) {
		err = unix.EIO
	}
	return err == nil, err
}

// tmpName is the one temporary name we use in the network directory, only under the lock
// and only when O_TMPFILE is unavailable or a file must be replaced. Temporary files live
// in the directory they end up in: on ext4 a link or rename across directories costs
// about 1 ms, thirty times a link within one.
const tmpName = ".local-ipam.tmp"

// linkRecord creates dir/name holding b, atomically and exclusively: the name appears
// with its whole content or not at all (kill -9 at any instant leaves no empty or torn
// record), and an existing name is never replaced (it reports exists).
func linkRecord(dir int, name string, b []byte) (exists bool, err error) {
	// An anonymous O_TMPFILE inode, linked in once written, leaves nothing behind if we
	// die before the link.
	fd, err := unix.Openat(dir, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	switch {
	case err == nil:
		werr := writeAll(fd, b)
		if werr == nil {
			werr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dir, name, unix.AT_SYMLINK_FOLLOW)
		}
		unix.Close(fd)
		switch {
		case werr == nil:
			return false, nil
		case errors.Is(werr, unix.EEXIST):
			return true, nil
		case !errors.Is(werr, unix.ENOENT):
			return false, werr // ENOSPC, EIO, EROFS...: no second try that writes more
		}
		// ENOENT: no /proc to link through; use a named temporary file.
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EINVAL):
		// A file system without O_TMPFILE: use a named temporary file.
	default:
		return false, err
	}
	// A crash between link and unlink below leaves tmpName as a second link of a record:
	// remove it, never truncate it.
	if err := unix.Unlinkat(dir, tmpName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, err
	}
	werr := createFile(dir, tmpName, b)
	if werr == nil {
		werr = unix.Linkat(dir, tmpName, dir, name, 0)
	}
	_ = unix.Unlinkat(dir, tmpName, 0)
	if errors.Is(werr, unix.EEXIST) {
		return true, nil
	}
	return false, werr
}
