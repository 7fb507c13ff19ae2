package disk

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// Close writes the index changes, then the state, then unlocks. A process killed before
// the state is written leaves a state that no longer matches the directory, so the next
// call rebuilds the index: records and index never disagree for long.
func (s *Store) Close() error {
	err := s.Commit()
	s.release()
	return err
}

// Commit implements store.Store: index pages and owner table first, the state last.
func (s *Store) Commit() error {
	if s.index.inMemory() {
		if s.changed {
			_ = s.invalidateState() // the next call rebuilds
		}
		s.changed = false
		return nil
	}
	if s.idxfd < 0 || s.index.readOnly() {
		return nil
	}
	wrote := len(s.dirty) > 0
	for _, p := range s.pages {
		wrote = wrote || p.dirty
	}
	if wrote {
		if s.writeIndexChanges() != nil {
			// The records are written, and they are the truth: an index that could not
			// follow them (a full disk, a table found damaged) is only distrusted. The
			// state (already marked "changing" if the records changed) is spoiled, and
			// the next call rebuilds.
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

// beginChange marks the state "changing" before this call's first change to the
// records, so that a call killed anywhere until its commit (the timestamps set by
// statDir included) always leaves a state the next call cannot trust, whatever the
// directory's timestamps say. One byte, one pwrite, once per call.
func (s *Store) beginChange() error {
	if s.index.readOnly() {
		return cnierr.IO(unix.EROFS, "cannot change the store %s: read-only file system", s.dir)
	}
	if s.marked || s.index.inMemory() {
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
	if s.index.readOnly() || s.stfd < 0 {
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
		s.seal(&dst)
	}
	if err := pwriteAll(s.stfd, s.st.encode(), 0); err != nil {
		return cnierr.IO(err, "cannot write index state of %s", s.dir)
	}
	s.marked = false
	return nil
}
