// Package disk is local-ipam's node-local store, in host-local's on-disk format:
// <dataDir>/<network>/<ip> files holding "<containerID>\r\n<ifname>", last_reserved_ip.<set>
// and a flock'ed "lock" file, so that either plugin can take over the other's directory.
// Beside the records it keeps an index in .local-ipam/ (see index.go and state.go) so that
// no call reads the store in proportion to its size.
package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

const (
	lockName   = "lock"
	lastPrefix = "last_reserved_ip."
	metaName   = ".local-ipam"
	idxPrefix  = "idx."
	// maxRecord bounds what we read of one record. Real ones are under 300 bytes, but
	// skel puts no limit on a container ID short of the environment's (128 KiB a string),
	// and a record we cannot read whole never matches its owner. Buffers are sized by the
	// file, so the bound costs nothing.
	maxRecord = 1 << 20
)

// DefaultLockTimeout bounds the wait for the network's lock when Options.LockTimeout is 0;
// past it the call fails with code 11 (try again later) instead of hanging the runtime.
const DefaultLockTimeout = 60 * time.Second

// Store is one network's directory, locked for the duration of one call.
type Store struct {
	dir    string
	lockfd int // the flock'ed lock file
	netfd  int
	metafd int
	idxfd  int
	stfd   int
	st     state

	pages    map[pageKey]*page
	table    *ownerTable             // opened on first use
	owners   map[string][]netip.Addr // owners looked up or changed, by key
	dirty    map[string]bool         // owners to write back
	overflow map[string]bool         // owners whose addresses are in an overflow file

	lastLen map[int]int // length of last_reserved_ip.<set> as read, -1 when absent

	// memOnly: the index lives in this process only (being rebuilt, or it could not be
	// written): owners and pages are complete in memory and nothing of the index is
	// read or written; the state stays stale, so the next call rebuilds.
	memOnly bool
	// IndexErr is why the index could not be written, when memOnly.
	IndexErr error
	// ro: the file system is read-only. Reads work as usual, the index included when it is
	// current (otherwise it is rebuilt in memory only); any change fails with code 5.
	ro bool
	// dropped: the index on disk was removed to give its space to a record (dropIndex);
	// this call keeps it in memory only.
	dropped bool
	// wroteIndex: this call (re)wrote the index on disk (a rebuild), so its space is this
	// call's to give back (spaceFor).
	wroteIndex bool

	changed bool // the records changed: the state must be renewed at Close
	// marked: the state file says "a call is changing the records" (see beginChange).
	marked bool
	stale  bool // the index disagreed with a record: rebuild at the next call

	// prepared: anonymous record files of preparedKey, written before the lock (see
	// Options.Records), each linked into place by a Reserve of that owner.
	prepared    []int
	preparedKey string
	// refused: the ways of creating a record this file system refused (see linkRecord).
	refused refusals
	// lockTimeout bounds the wait for the lock (Options.LockTimeout).
	lockTimeout time.Duration

	// Rebuilds counts index rebuilds done by this call (tests and `list` report it).
	Rebuilds int
	// FreedOnReboot counts records freed because the machine rebooted.
	FreedOnReboot int
}

var _ store.Store = (*Store)(nil)

// Options change how a network's store is opened.
type Options struct {
	// FreeOnReboot: at the first call after the machine rebooted, free every record
	// (see freeOnReboot).
	FreeOnReboot bool
	// Records > 0: the call will likely reserve that many addresses for Owner (an ADD:
	// one per range set). Their record files are written before the lock is taken, as
	// anonymous files that Reserve only links into place: creating an inode is the
	// costliest file operation of an ADD (20 µs to over 1 ms on ext4), and under the lock
	// it delays every other call of the network.
	Records int
	Owner   store.Owner
	// LockTimeout bounds the wait for the network's lock (DefaultLockTimeout when 0).
	LockTimeout time.Duration
}

// Open locks <dataDir>/<network> (creating it if needed) and makes its index current.
func Open(dataDir, network string, opts Options) (*Store, error) {
	if network == "" || network == "." || network == ".." || strings.ContainsAny(network, "/\x00") {
		return nil, cnierr.New(cnierr.InvalidConfig, "", "invalid network name %q", network)
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
		s.FreedOnReboot = n
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
			s.ro = true
			return s.rebuild()
		}
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return cnierr.New(cnierr.StoreCorrupt, s.dir, "%s is not a directory", filepath.Join(s.dir, metaName))
	}
	if err != nil {
		return cnierr.IO(err, "cannot open index directory in %s", s.dir)
	}
	return s.loadState()
}

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
		// use it; otherwise the index is rebuilt in memory only.
		s.ro = true
		fd, err = unix.Openat(s.metafd, stateName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return s.rebuild()
		}
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
			return nil
		}
	}
	return s.rebuild()
}

// Owned implements store.Store.
func (s *Store) Owned(o store.Owner) ([]netip.Addr, error) {
	addrs, err := s.owned(o.Key())
	return slices.Clone(addrs), err
}

func (s *Store) owned(key string) ([]netip.Addr, error) {
	if addrs, ok := s.owners[key]; ok || s.memOnly {
		return addrs, nil
	}
	addrs, err := s.lookup(key)
	if errors.Is(err, errBadTable) || errors.Is(err, errBadOwner) {
		// A damaged index: rebuild from the records, which are the truth (also mid-call:
		// what this call already changed is in the records too).
		if err := s.rebuild(); err != nil {
			return nil, err
		}
		return s.owners[key], nil
	}
	if err != nil {
		return nil, cnierr.IO(err, "cannot read index of %s", s.dir)
	}
	s.owners[key] = addrs
	return addrs, nil
}

func (s *Store) lookup(key string) ([]netip.Addr, error) {
	if err := s.openTable(); err != nil {
		return nil, err
	}
	addrs, overflow, sum, err := s.table.get(key)
	if err != nil || !overflow {
		return addrs, err
	}
	s.overflow[key] = true
	b, ok, regular, err := readSmall(s.idxfd, overflowName(key), 1<<20)
	if err != nil {
		return nil, err
	}
	if !ok || !regular || blockSum(b) != sum {
		return nil, errBadOwner
	}
	return decodeOwner(key, b)
}

// openTable opens the owner table, checked against the state's root checksum.
func (s *Store) openTable() error {
	if s.table != nil {
		return nil
	}
	t, err := openOwnerTable(s.idxfd, s.st.root, s.ro)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) {
			err = errBadTable // missing, or not our file: rebuild
		}
		return err
	}
	s.table = t
	return nil
}

func (s *Store) setOwned(key string, addrs []netip.Addr) {
	s.owners[key] = addrs
	s.dirty[key] = true
}

func (s *Store) page(k pageKey) (*page, error) {
	if p, ok := s.pages[k]; ok {
		return p, nil
	}
	if s.memOnly {
		p := newPage()
		s.pages[k] = p
		return p, nil
	}
	p, err := s.loadPage(k)
	if err != nil {
		// A damaged index (a checksum mismatch, a page missing, short, or not a regular
		// file): rebuild from the records. Every page with an address taken is then in
		// memory; any other is all free.
		if err := s.rebuild(); err != nil {
			return nil, err
		}
		if p, ok := s.pages[k]; ok {
			return p, nil
		}
		p = newPage()
	}
	s.pages[k] = p
	return p, nil
}

// loadPage reads page k if the owner table says it exists (else it is all free).
func (s *Store) loadPage(k pageKey) (*page, error) {
	if err := s.openTable(); err != nil {
		return nil, err
	}
	sum, found, err := s.table.getPage(k)
	if err != nil || !found {
		return newPage(), err
	}
	return loadPage(s.idxfd, k, sum, s.ro)
}

func (s *Store) setTaken(a netip.Addr, taken bool) error {
	k, bit := splitAddr(a)
	p, err := s.page(k)
	if err != nil {
		return err
	}
	p.set(bit, taken)
	return nil
}

// FirstFree implements store.Store: it reads one bitmap page per 65,536 addresses it
// crosses, and only pages that exist (some address in them is taken).
func (s *Store) FirstFree(from, to netip.Addr) (netip.Addr, bool, error) {
	if from.BitLen() != to.BitLen() || from.Compare(to) > 0 {
		return netip.Addr{}, false, nil
	}
	tk, tbit := splitAddr(to)
	k, bit := splitAddr(from)
	for {
		p, err := s.page(k)
		if err != nil {
			return netip.Addr{}, false, err
		}
		end := uint32(pageAddrs - 1)
		if k == tk {
			end = tbit
		}
		if i, ok := p.firstClear(bit, end); ok {
			return k.addr(i), true, nil
		}
		if k == tk {
			return netip.Addr{}, false, nil
		}
		var more bool
		if k, more = k.next(); !more {
			return netip.Addr{}, false, nil
		}
		bit = 0
	}
}

// Reserve implements store.Store.
func (s *Store) Reserve(a netip.Addr, o store.Owner) (bool, error) {
	key := o.Key()
	name := a.String()
	if err := s.beginChange(); err != nil {
		return false, err
	}
	exists, err := s.linkPrepared(key, name)
	if err != nil {
		exists, err = s.refused.linkRecord(s.netfd, name, []byte(key))
	}
	if err != nil && s.spaceFor(err) {
		exists, err = s.refused.linkRecord(s.netfd, name, []byte(key))
	}
	if err != nil {
		return false, cnierr.IO(err, "cannot write reservation %s", filepath.Join(s.dir, name))
	}
	if exists {
		data, _, regular, err := readSmall(s.netfd, name, maxRecord)
		if err != nil {
			return false, cnierr.IO(err, "cannot read reservation %s", filepath.Join(s.dir, name))
		}
		if !regular || strings.TrimSpace(string(data)) != "" {
			// Taken behind the index's back: note it, and rebuild at the next call.
			s.stale = true
			if err := s.noteRecord(a, regular, string(data)); err != nil {
				return false, err
			}
			return false, nil
		}
		// An empty record (host-local died between create and write) holds nothing: take
		// it over, atomically.
		err = replaceFile(s.netfd, name, []byte(key))
		if err != nil && s.spaceFor(err) {
			err = replaceFile(s.netfd, name, []byte(key))
		}
		if err != nil {
			return false, cnierr.IO(err, "cannot write reservation %s", filepath.Join(s.dir, name))
		}
	}
	s.changed = true
	if err := s.setTaken(a, true); err != nil {
		return false, err
	}
	held, err := s.owned(key)
	if err != nil {
		return false, err
	}
	s.setOwned(key, insertAddr(held, a))
	return true, nil
}

// noteRecord brings the index in line with one record found on disk.
func (s *Store) noteRecord(a netip.Addr, regular bool, content string) error {
	if regular && strings.TrimSpace(content) == "" {
		return s.setTaken(a, false) // an empty record holds nothing
	}
	if err := s.setTaken(a, true); err != nil {
		return err
	}
	if !regular {
		return nil
	}
	key := store.ParseKey(content).Key()
	held, err := s.owned(key)
	if err != nil {
		return err
	}
	s.setOwned(key, insertAddr(held, a))
	return nil
}

// Release implements store.Store. The record is read first: the index only says where
// to look, the record says who holds the address, so an index that went stale can never
// make us delete someone else's reservation.
func (s *Store) Release(a netip.Addr, o store.Owner) (bool, error) {
	key := o.Key()
	name := a.String()
	data, ok, regular, err := readSmall(s.netfd, name, maxRecord)
	if err != nil {
		return false, cnierr.IO(err, "cannot read reservation %s", filepath.Join(s.dir, name))
	}
	mine := ok && regular && strings.TrimSpace(string(data)) == key
	if mine {
		if err := s.beginChange(); err != nil {
			return false, err
		}
		if err := unix.Unlinkat(s.netfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return false, cnierr.IO(err, "cannot remove reservation %s", filepath.Join(s.dir, name))
		}
		s.changed = true
	} else {
		s.stale = s.stale || s.contains(key, a)
	}
	held, err := s.owned(key)
	if err != nil {
		return false, err
	}
	if i := slices.Index(held, a); i >= 0 {
		s.setOwned(key, slices.Delete(slices.Clone(held), i, i+1))
	}
	if !mine {
		if ok {
			return false, s.noteRecord(a, regular, string(data))
		}
		return false, s.setTaken(a, false)
	}
	return true, s.setTaken(a, false)
}

func (s *Store) contains(key string, a netip.Addr) bool {
	return slices.Contains(s.owners[key], a)
}

// LastReserved implements store.Store with host-local's last_reserved_ip.<set> file.
func (s *Store) LastReserved(set int) (netip.Addr, error) {
	b, ok, regular, err := readSmall(s.netfd, lastPrefix+strconv.Itoa(set), 256)
	if err != nil {
		return netip.Addr{}, cnierr.IO(err, "cannot read %s%d in %s", lastPrefix, set, s.dir)
	}
	if !ok || !regular {
		s.lastLen[set] = -1
		return netip.Addr{}, nil
	}
	s.lastLen[set] = len(b)
	// host-local writes the bare address; an unreadable cursor just restarts the walk.
	a, err := ranges.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, nil
	}
	return a, nil
}

// SetLastReserved implements store.Store. Readers (host-local included) see the old
// cursor or the new one, never a torn one: a new file is linked in whole; a cursor at
// least as long as the old one is one pwrite in place (cheap); a shorter one, rarer, is
// renamed over the old.
func (s *Store) SetLastReserved(set int, a netip.Addr) error {
	name := lastPrefix + strconv.Itoa(set)
	b := []byte(a.String())
	old, known := s.lastLen[set]
	if !known {
		if _, err := s.LastReserved(set); err != nil {
			return err
		}
		old = s.lastLen[set]
	}
	if err := s.beginChange(); err != nil {
		return err
	}
	err := s.writeCursor(name, b, old)
	if err != nil && s.spaceFor(err) {
		err = s.writeCursor(name, b, old)
	}
	if err != nil {
		return cnierr.IO(err, "cannot write %s", filepath.Join(s.dir, name))
	}
	s.lastLen[set] = len(b)
	s.changed = true
	return nil
}

func (s *Store) writeCursor(name string, b []byte, old int) error {
	var err error
	done := false
	switch {
	case old < 0:
		var exists bool
		exists, err = s.refused.linkRecord(s.netfd, name, b)
		done = err == nil && !exists
	case len(b) >= old:
		done, err = overwriteAtomic(s.netfd, name, b)
	}
	if err == nil && !done {
		err = replaceFile(s.netfd, name, b)
	}
	return err
}

// spaceFor handles a record or cursor that could not be written for lack of space: the
// index on disk (every generation, and the state's block) is removed to make room, and
// the call goes on with the index in memory; the next call rebuilds it. It reports
// whether the write is worth a second try. So an ADD that had to build the index (the
// first of a network, or after a change behind its back) needs the space of its records
// and cursor, as host-local's does, not that of the index too. An index this call did
// not write is left alone: with it current, an ADD fails on a full disk as host-local's
// does, and as STATUS says it will.
func (s *Store) spaceFor(err error) bool {
	if s.ro || s.dropped || !s.wroteIndex || !(errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) {
		return false
	}
	s.dropped = true
	s.dropIndexFiles()
	// An empty state never matches: the next call rebuilds, as after a "changing" mark.
	if s.stfd >= 0 {
		if terr := unix.Ftruncate(s.stfd, 0); terr != nil {
			return false
		}
	}
	s.marked = true
	if !s.memOnly {
		// The index in memory must be whole: rebuild it from the records (this call's
		// own changes are in them too), without writing it.
		if rerr := s.rebuild(); rerr != nil {
			return false
		}
	}
	return true
}

// Close writes the index changes, then the state, then unlocks. A process killed before
// the state is written leaves a state that no longer matches the directory, so the next
// call rebuilds the index: records and index never disagree for long.
func (s *Store) Close() error {
	err := s.Commit()
	s.release()
	return err
}

// writeOwners writes the changed owners to the owner table (and overflow files), growing
// the table when it is half full.
func (s *Store) writeOwners() error {
	for key := range s.dirty {
		addrs := s.owners[key]
		ov, err := s.table.put(key, addrs)
		if err != nil {
			return err
		}
		switch {
		case ov:
			err = writeOverflow(s.idxfd, key, addrs)
			s.overflow[key] = true
		case s.overflow[key]:
			if err = unix.Unlinkat(s.idxfd, overflowName(key), 0); errors.Is(err, unix.ENOENT) {
				err = nil
			}
			delete(s.overflow, key)
		}
		if err != nil {
			return err
		}
	}
	if err := s.table.flush(); err != nil {
		return err
	}
	if s.table.full() {
		t, err := s.table.grow(s.idxfd)
		if err != nil {
			return err
		}
		s.table = t
	}
	return nil
}

// writeIndexChanges writes the changed pages, their checksums and the changed owners into
// the owner table, and the table's changed blocks; the state (written next) takes the new
// root checksum.
func (s *Store) writeIndexChanges() error {
	if err := s.openTable(); err != nil {
		return err
	}
	for k, p := range s.pages {
		if !p.dirty {
			continue
		}
		sum, err := p.flush(s.idxfd, k)
		if err != nil {
			return err
		}
		if err := s.table.putPage(k, sum); err != nil {
			return err
		}
	}
	err := s.writeOwners()
	clear(s.dirty)
	return err
}

// Commit implements store.Store: index pages and owner table first, the state last.
func (s *Store) Commit() error {
	if s.memOnly {
		if s.changed {
			_ = s.invalidateState() // the next call rebuilds
		}
		s.changed = false
		return nil
	}
	if s.idxfd < 0 || s.ro {
		return nil
	}
	wrote := len(s.dirty) > 0
	for _, p := range s.pages {
		wrote = wrote || p.dirty
	}
	if wrote {
		if err := s.writeIndexChanges(); err != nil {
			// The records are written, and they are the truth: an index that could not
			// follow them (a full disk, a table found damaged) is only distrusted. The
			// state (already marked "changing" if the records changed) is spoiled, and
			// the next call rebuilds.
			s.IndexErr = err
			s.stale = true
		}
	}
	switch {
	case s.stale:
		// Forget the state: the next call rebuilds from the records.
		if err := s.invalidateState(); err != nil {
			return cnierr.IO(err, "cannot write index state of %s", s.dir)
		}
	case s.changed || s.marked || wrote:
		if err := s.saveState(); err != nil {
			return err
		}
	}
	s.changed = false
	return nil
}

// beginChange marks the state "changing" before this call's first change to the
// records, so that a call killed anywhere until its commit (the timestamps set by
// statDir included) always leaves a state the next call cannot trust, whatever the
// directory's timestamps say. One byte, one pwrite, once per call.
func (s *Store) beginChange() error {
	if s.ro {
		return cnierr.IO(unix.EROFS, "cannot change the store %s: read-only file system", s.dir)
	}
	if s.marked || s.memOnly {
		return nil
	}
	if err := s.invalidateState(); err != nil {
		return cnierr.IO(err, "cannot write index state of %s", s.dir)
	}
	s.marked = true
	return nil
}

// invalidateState spoils the state's magic in place (never a truncate: on ext4 a
// truncate to zero forces a flush).
func (s *Store) invalidateState() error {
	if s.ro || s.stfd < 0 {
		return nil
	}
	return pwriteAll(s.stfd, []byte{'x'}, 0)
}

// saveState records the directory as it is now (statDir) and writes the state. When the
// directory's timestamps could not be made distinct, it first waits for the clock; if the
// clock does not move, the state is left invalid and the next call rebuilds.
func (s *Store) saveState() error {
	var dst unix.Stat_t
	distinct, err := s.statDir(&dst)
	if err != nil {
		return cnierr.IO(err, "cannot stat %s", s.dir)
	}
	s.st.observe(&dst)
	if s.table != nil {
		s.st.root = s.table.root
	}
	if !distinct {
		moved, err := s.waitClock(&dst)
		if err != nil {
			return cnierr.IO(err, "cannot write index state of %s", s.dir)
		}
		if !moved {
			s.marked = true // invalid since waitClock's first write
			return nil
		}
	}
	if err := pwriteAll(s.stfd, s.st.encode(), 0); err != nil {
		return cnierr.IO(err, "cannot write index state of %s", s.dir)
	}
	s.marked = false
	return nil
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

// dropIndexFiles closes the index generation's files and removes every generation: to
// give their space back to the records, which need it more.
func (s *Store) dropIndexFiles() {
	s.closeIndexFiles()
	if old, _, err := s.generations(); err == nil {
		for _, o := range old {
			removeTree(s.metafd, o)
		}
	}
}

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

// Dir is the network's directory.
func (s *Store) Dir() string { return s.dir }

func insertAddr(addrs []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(addrs, a, netip.Addr.Compare)
	if found {
		return addrs
	}
	return slices.Insert(slices.Clone(addrs), i, a)
}

func (s *Store) String() string { return fmt.Sprintf("disk store %s", s.dir) }

// Abandon drops the store without committing, as a process killed mid-call would. Tests
// use it to check that the next call repairs what was left.
func (s *Store) Abandon() { s.release() }
