package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Open locks <dataDir>/<network> (creating it if needed) and makes its index current.
func Open(dataDir, network string, opts Options) (*Store, error) {
	if err := store.CheckNetworkName(network); err != nil {
		return nil, err
	}
	s := &Store{
		dir: filepath.Join(dataDir, network), lockfd: -1, netfd: -1, metafd: -1, idxfd: -1, stfd: -1,
		pages: map[pageKey]*page{}, owners: map[string][]netip.Addr{}, dirty: map[string]bool{},
		overflow: map[string]bool{}, lastLen: map[int]int{},
	}
	s.preparedKey = opts.Owner.Key()
	s.lockTimeout = opts.LockTimeout
	if s.lockTimeout <= 0 {
		s.lockTimeout = DefaultLockTimeout
	}
	if err := s.open(opts.Records); err != nil {
		s.release()
		return nil, err
	}
	if opts.FreeOnReboot {
		n, err := s.freeOnReboot()
		if err == nil && n > 0 {
			err = s.Commit()
		}
		if err != nil {
			s.release()
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) open(records int) error {
	fd, err := openDir(unix.AT_FDCWD, s.dir)
	if errors.Is(err, unix.ENOENT) {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return cnierr.IO(err, "cannot create data directory %s", s.dir)
		}
		fd, err = openDir(unix.AT_FDCWD, s.dir)
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "network directory %s is a symlink; local-ipam does not follow it", s.dir)
	case errors.Is(err, unix.ENOTDIR):
		var st unix.Stat_t
		if lerr := unix.Lstat(s.dir, &st); lerr != nil {
			// Not the network directory but the data dir (or a directory above it) is not
			// a directory: nothing of the store is there to refuse; the configured path is
			// unusable, like a missing mount: an I/O failure (5), not code 104.
			return cnierr.IO(lerr, "data directory %s is not a directory", filepath.Dir(s.dir))
		}
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "%s is not a directory", s.dir)
	case err != nil:
		return cnierr.IO(err, "cannot open data directory %s", s.dir)
	}
	s.netfd = fd

	if err := s.openLock(); err != nil {
		return err
	}
	s.prepare(records)
	if err := s.lockWithTimeout(); err != nil {
		return err
	}

	if s.metafd, err = openDir(s.netfd, metaName); errors.Is(err, unix.ENOENT) {
		if err = unix.Mkdirat(s.netfd, metaName, 0o700); err == nil || errors.Is(err, unix.EEXIST) {
			s.metafd, err = openDir(s.netfd, metaName)
		} else if errors.Is(err, unix.EROFS) {
			// A read-only store that never had an index: serve reads from one built in
			// memory.
			s.index = indexMemReadOnly
			return s.rebuild()
		}
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "%s is not a directory", filepath.Join(s.dir, metaName))
	}
	if denied(err) {
		return s.indexDenied(err)
	}
	if err != nil {
		return cnierr.IO(err, "cannot open index directory in %s", s.dir)
	}
	return s.loadState()
}

// loadState opens the current index if the records have not changed behind it, and
// rebuilds it otherwise.
func (s *Store) loadState() error {
	fd, err := unix.Openat(s.metafd, stateName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ELOOP) {
		// Not ours: a symlink where our state file belongs. Remove the link (never its
		// target) and start afresh: the index will be rebuilt.
		if err = unix.Unlinkat(s.metafd, stateName, 0); err == nil {
			fd, err = unix.Openat(s.metafd, stateName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		}
	}
	if errors.Is(err, unix.EROFS) {
		// A read-only file system: read the state as it is; with the index current, reads
		// use it; otherwise the index is rebuilt in memory only (rebuild moves to
		// indexMemReadOnly).
		s.index = indexReadOnly
		fd, err = unix.Openat(s.metafd, stateName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return s.rebuild()
		}
	}
	if denied(err) {
		return s.indexDenied(err)
	}
	if err != nil {
		return cnierr.IO(err, "cannot open index state in %s", s.dir)
	}
	s.stfd = fd
	b := make([]byte, stateLen+1)
	n, err := unix.Pread(fd, b, 0)
	if err != nil {
		return cnierr.IO(err, "cannot read index state in %s", s.dir)
	}
	var dst unix.Stat_t
	if err := unix.Fstat(s.netfd, &dst); err != nil {
		return cnierr.IO(err, "cannot stat %s", s.dir)
	}
	if st, ok := decodeState(b[:n]); ok && st.matches(&dst) {
		if s.idxfd, err = openDir(s.metafd, idxPrefix+strconv.FormatUint(st.gen, 10)); err == nil {
			s.st = st
			s.seal(&dst) // a valid state records only such pairs
			return nil
		}
	}
	return s.rebuild()
}

// indexDenied serves a call whose user may not open or create the index (.local-ipam or
// its state belongs to another user, say root's mode 0700 in a network directory handed
// over to the runtime's user): the records are what host-local would read, so the call
// goes on with an index built from them in memory, never written (indexMemDenied). Said
// on stderr, which the runtime logs; stdout carries only the result.
func (s *Store) indexDenied(cause error) error {
	fmt.Fprintf(os.Stderr, "local-ipam: cannot use the index in %s (%v): reading every record instead\n",
		filepath.Join(s.dir, metaName), cause)
	if s.metafd >= 0 {
		unix.Close(s.metafd)
		s.metafd = -1
	}
	s.index = indexMemDenied
	return s.rebuild()
}

func (s *Store) release() {
	s.closePrepared()
	s.closeIndexFiles()
	// The lock last: closing its only fd drops the flock.
	for _, fd := range []*int{&s.stfd, &s.metafd, &s.netfd, &s.lockfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// closeIndexFiles closes the index generation's files (the table and the pages).
func (s *Store) closeIndexFiles() {
	s.table.close()
	s.table = nil
	for _, p := range s.pages {
		if p.fd >= 0 {
			unix.Close(p.fd)
			p.fd = -1
		}
	}
	if s.idxfd >= 0 {
		unix.Close(s.idxfd)
		s.idxfd = -1
	}
}
