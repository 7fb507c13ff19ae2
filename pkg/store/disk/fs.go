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
	// Size the buffer by the file (plus one byte, to see a file that grew meanwhile): a
	// buffer of max bytes for a record of a few dozen would cost more than the rest of
	// the call.
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
// an existing one forces the new data to disk before the call returns, which costs more
// than everything else a call does. So nothing here ever truncates to zero, and
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
// in the directory they end up in: always on the record's file system, and a link or
// rename across directories can cost many times one within a directory on ext4.
const tmpName = ".local-ipam.tmp"

// onePage is the most a single write() at offset 0 is known to copy in one piece: the
// kernel checks for a fatal signal only between pages (and FUSE sends a page in one
// request), so a kill lands before such a write or after it, never inside.
const onePage = 4096

// The system calls whose refusal selects a slower way to create a file. Tests replace
// them to force each way (export_test.go).
var (
	sysOpenTmpfile = func(dir int) (int, error) {
		return unix.Openat(dir, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	}
	sysLinkat    = unix.Linkat
	sysRenameat2 = unix.Renameat2
)

// refusals remembers which ways of creating a file the file system refused during this
// call, so that a refusal costs its failed system calls once per call, not once per
// file. Nothing of it outlives the call: next time the directory may be on another file
// system.
type refusals struct {
	tmpfile bool // O_TMPFILE, or linking it in through /proc/self/fd
	link    bool // hard links (vfat, exfat)
	rename2 bool // renameat2 with RENAME_NOREPLACE (FUSE file systems without it)
}

func noTmpfile(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}

func noLink(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

func noRename2(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// linkRecord creates dir/name holding b, exclusively (an existing name is never
// replaced: it reports exists) and whole: kill -9 at any instant leaves the name absent,
// whole or, on a file system that offers none of the atomic ways, empty; never torn. An
// empty record holds nothing: every reader takes it for a free address and Reserve takes
// it over (an empty cursor reads as no cursor). The ways, in order, each tried only while
// the file system has not refused it during this call:
//
//  1. an anonymous O_TMPFILE inode, written, then linked in through /proc/self/fd (no
//     trace if we die before the link);
//  2. a named temporary file, written, then hard-linked to the name (no O_TMPFILE, or no
//     /proc);
//  3. the same file renamed to the name with RENAME_NOREPLACE (no hard links);
//  4. an exclusive create, then the whole record in one write (createWhole).
func (r *refusals) linkRecord(dir int, name string, b []byte) (exists bool, err error) {
	if !r.tmpfile {
		if done, exists, err := r.linkTmpfile(dir, name, b); done {
			return exists, err
		}
	}
	if !r.link || !r.rename2 {
		if done, exists, err := r.linkNamed(dir, name, b); done {
			return exists, err
		}
	}
	return createWhole(dir, name, b)
}

// linkTmpfile is way 1; done is false when the file system refused it.
func (r *refusals) linkTmpfile(dir int, name string, b []byte) (done, exists bool, err error) {
	fd, err := sysOpenTmpfile(dir)
	if err != nil {
		if noTmpfile(err) {
			r.tmpfile = true
			return false, false, nil
		}
		return true, false, err
	}
	defer unix.Close(fd)
	if err := writeAll(fd, b); err != nil {
		return true, false, err // ENOSPC, EIO...: no second try that writes more
	}
	err = sysLinkat(unix.AT_FDCWD, procFD(fd), dir, name, unix.AT_SYMLINK_FOLLOW)
	switch {
	case err == nil:
		return true, false, nil
	case errors.Is(err, unix.EEXIST):
		return true, true, nil
	case errors.Is(err, unix.ENOENT), noLink(err):
		// No /proc to link through, or no hard links at all.
		r.tmpfile = true
		return false, false, nil
	}
	return true, false, err
}

// linkNamed is ways 2 and 3; done is false when the file system refused both.
func (r *refusals) linkNamed(dir int, name string, b []byte) (done, exists bool, err error) {
	// A crash between link and unlink below leaves tmpName as a second link of a record:
	// remove it, never truncate it.
	if err := unix.Unlinkat(dir, tmpName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return true, false, err
	}
	if err := createFile(dir, tmpName, b); err != nil {
		_ = unix.Unlinkat(dir, tmpName, 0)
		return true, false, err
	}
	if !r.link {
		err = sysLinkat(dir, tmpName, dir, name, 0)
		switch {
		case err == nil || errors.Is(err, unix.EEXIST):
			_ = unix.Unlinkat(dir, tmpName, 0)
			return true, err != nil, nil
		case noLink(err):
			r.link = true
		default:
			_ = unix.Unlinkat(dir, tmpName, 0)
			return true, false, err
		}
	}
	if !r.rename2 {
		err = sysRenameat2(dir, tmpName, dir, name, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return true, false, nil // tmpName is gone: it is the record now
		case errors.Is(err, unix.EEXIST):
			_ = unix.Unlinkat(dir, tmpName, 0)
			return true, true, nil
		case noRename2(err):
			r.rename2 = true
		default:
			_ = unix.Unlinkat(dir, tmpName, 0)
			return true, false, err
		}
	}
	_ = unix.Unlinkat(dir, tmpName, 0)
	return false, false, nil
}

// createWhole is way 4, for a file system with neither O_TMPFILE, hard links nor
// RENAME_NOREPLACE (exfat through FUSE), and what host-local always does: an exclusive
// create, then the record in a single write, which a kill cannot split (see onePage).
// Killed between the two, it leaves an empty record, which holds nothing. A record longer
// than a page is written beside the empty one and renamed over it. On any failure the
// name, ours and empty, is removed.
func createWhole(dir int, name string, b []byte) (exists bool, err error) {
	fd, err := unix.Openat(dir, name, wrFlags|unix.O_CREAT|unix.O_EXCL, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if len(b) <= onePage {
		var n int
		if n, err = unix.Write(fd, b); err == nil && n != len(b) {
			err = unix.EIO
		}
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil && len(b) > onePage {
		err = replaceFile(dir, name, b)
	}
	if err != nil {
		_ = unix.Unlinkat(dir, name, 0)
	}
	return false, err
}
