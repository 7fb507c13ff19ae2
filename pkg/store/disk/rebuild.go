package disk

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// rebuild makes a new index generation from the records, then points the state at it.
// A crash part-way leaves a state that does not match, so the next call simply rebuilds
// again. When the index cannot be written (a full disk), what was written of it is
// removed and this call goes on with the index in memory (indexMemWrote): a DEL still
// releases, and an ADD needs only the space of its record. On a read-only file system,
// or once the index was dropped for a record's space, the index is rebuilt in memory
// only, and nothing is written.
func (s *Store) rebuild() error {
	s.rebuilds++
	writes := s.index.writable()
	// The directory is recorded before the scan, so that a change during the scan (an rm,
	// which takes no lock) makes the next call rebuild again. Its timestamps are made
	// distinct first (statDir) unless no state will be written.
	var before unix.Stat_t
	var distinct bool
	var err error
	if !writes {
		err = unix.Fstat(s.netfd, &before)
	} else {
		distinct, err = s.statDir(&before)
	}
	if err != nil {
		return cnierr.IO(err, "cannot stat %s", s.dir)
	}
	for _, p := range s.pages {
		if p.fd >= 0 {
			unix.Close(p.fd)
		}
	}
	clear(s.pages)
	clear(s.owners)
	clear(s.dirty)
	clear(s.overflow)
	s.table.close()
	s.table = nil
	s.index = s.index.rebuilding() // pages start empty, not read from any index
	err = s.scan(func(r Record) error {
		if !r.Regular {
			return s.setTaken(r.Addr, true)
		}
		if r.Content == "" {
			return nil // an empty record is a free address
		}
		if err := s.setTaken(r.Addr, true); err != nil {
			return err
		}
		key := r.Content
		s.owners[key] = append(s.owners[key], r.Addr)
		return nil
	})
	if err != nil {
		return cnierr.IO(err, "cannot read the records of %s", s.dir)
	}
	for key, addrs := range s.owners {
		slices.SortFunc(addrs, netip.Addr.Compare)
		if len(addrs) > slotAddrs {
			s.overflow[key] = true
		}
	}
	if !writes {
		return nil
	}
	if s.writeIndex(&before, distinct) != nil {
		for _, p := range s.pages {
			p.exists = false
		}
		// Give back the space the partial generation took: the record needs it more.
		s.dropIndexFiles()
		_ = s.invalidateState()
		return nil
	}
	s.index = indexRebuilt
	return nil
}

// writeIndex writes the in-memory index as a new generation and the state naming it.
// When the directory's timestamps in before are not distinct (see state.go), the state
// stays invalid and marked: the commit writes it after waiting for the clock (saveState),
// so that a call waits at most once.
func (s *Store) writeIndex(before *unix.Stat_t, distinct bool) error {
	old, gen, err := s.generations()
	if err != nil {
		return err
	}
	s.index = indexMemWrote // what follows is this call's to give back (spaceFor)
	// The old generations go first: the state no longer trusts them, and on a nearly full
	// disk their space is what the new one needs. A crash from here to the state's write
	// leaves a state naming a generation that is gone (or not current): a rebuild.
	if err := s.invalidateState(); err != nil {
		return err
	}
	for _, o := range old {
		removeTree(s.metafd, o)
	}
	name := idxPrefix + strconv.FormatUint(gen, 10)
	if err := unix.Mkdirat(s.metafd, name, 0o700); err != nil {
		return err
	}
	if s.idxfd >= 0 {
		unix.Close(s.idxfd)
	}
	if s.idxfd, err = openDir(s.metafd, name); err != nil {
		return err
	}
	sums := make(map[pageKey]uint32, len(s.pages))
	for k, p := range s.pages {
		p.dirty = true
		if sums[k], err = p.flush(s.idxfd, k); err != nil {
			return err
		}
	}
	if s.table, err = writeOwnerTable(s.idxfd, ownersName, s.owners, sums); err != nil {
		return err
	}
	s.stale = false
	s.st = state{gen: gen, root: s.table.root}
	s.st.observe(before)
	if distinct {
		if err := pwriteAll(s.stfd, s.st.encode(), 0); err != nil {
			return err
		}
	}
	if err := unix.Ftruncate(s.stfd, stateLen); err != nil {
		return err
	}
	s.marked = !distinct
	_ = unix.Unlinkat(s.netfd, tmpName, 0)
	return nil
}

// generations lists the index directories and picks the next generation number.
func (s *Store) generations() (old []string, next uint64, err error) {
	dfd, err := openDir(s.metafd, ".")
	if err != nil {
		return nil, 0, err
	}
	d := os.NewFile(uintptr(dfd), metaName)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, 0, err
	}
	for _, n := range names {
		if g, ok := strings.CutPrefix(n, idxPrefix); ok {
			old = append(old, n)
			if v, err := strconv.ParseUint(g, 10, 64); err == nil && v >= next {
				next = v + 1
			}
		}
	}
	return old, next, nil
}

// removeTree removes our own index directory (one level of plain files).
func removeTree(parent int, name string) {
	dfd, err := openDir(parent, name)
	if err == nil {
		d := os.NewFile(uintptr(dfd), name)
		names, _ := d.Readdirnames(-1)
		for _, n := range names {
			_ = unix.Unlinkat(dfd, n, 0)
		}
		d.Close()
	}
	_ = unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
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
	if !s.index.ownsSpace() || !(errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) {
		return false
	}
	onDisk := !s.index.inMemory()
	s.index = indexDropped
	s.dropIndexFiles()
	// An empty state never matches: the next call rebuilds, as after a "changing" mark.
	spoiled := s.stfd < 0 || unix.Ftruncate(s.stfd, 0) == nil
	if spoiled {
		s.marked = true
	}
	if onDisk {
		// The index in memory must be whole: rebuild it from the records (this call's
		// own changes are in them too), without writing it.
		if rerr := s.rebuild(); rerr != nil {
			return false
		}
	}
	return spoiled
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
