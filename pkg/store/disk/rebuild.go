package disk

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Record is one entry of the network directory named like an address.
type Record struct {
	Addr netip.Addr
	// Regular is false for a directory, symlink or other non-file named like an address:
	// it blocks the address (nobody can create the record) and is never followed.
	Regular bool
	// Content is the trimmed record; "" for an empty record, which holds nothing.
	Content string
}

// Owner parses the record's content.
func (r Record) Owner() store.Owner { return store.ParseKey(r.Content) }

// isRecordName tells host-local's record files from the rest of the directory: its name is
// an address in canonical form (as host-local writes it).
func isRecordName(name string) (netip.Addr, bool) {
	if name == lockName || name == metaName || name == tmpName || strings.HasPrefix(name, lastPrefix) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(name)
	if err != nil || a.Zone() != "" || a.Is4In6() || a.String() != name {
		return netip.Addr{}, false
	}
	return a, true
}

// scan reads every record of the directory: the one walk over the store that host-local
// makes on every call, and we make only when the index must be rebuilt (or for GC/list).
func (s *Store) scan(fn func(Record) error) error {
	dfd, err := openDir(s.netfd, ".")
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dfd), s.dir)
	defer d.Close()
	for {
		ents, err := d.ReadDir(4096)
		for _, e := range ents {
			a, ok := isRecordName(e.Name())
			if !ok {
				continue
			}
			rec := Record{Addr: a}
			if e.Type().IsRegular() || e.Type()&os.ModeType == os.ModeIrregular {
				data, ok, regular, err := readSmall(s.netfd, e.Name(), maxRecord)
				if err != nil {
					return err
				}
				if !ok {
					continue // removed while we listed
				}
				rec.Regular = regular
				rec.Content = strings.TrimSpace(string(data))
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// rebuild makes a new index generation from the records, then points the state at it.
// A crash part-way leaves a state that does not match, so the next call simply rebuilds
// again. When the index cannot be written (a full disk), what was written of it is
// removed and this call goes on with the index in memory (memOnly): a DEL still
// releases, and an ADD needs only the space of its record. On a read-only file system
// the index is rebuilt in memory only, and nothing is written.
func (s *Store) rebuild() error {
	s.Rebuilds++
	// The directory is recorded before the scan, so that a change during the scan (an rm,
	// which takes no lock) makes the next call rebuild again. Its timestamps are made
	// distinct first (statDir) unless no state will be written.
	var before unix.Stat_t
	var distinct bool
	var err error
	if s.ro || s.dropped {
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
	s.memOnly = true // pages start empty, not read from any index
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
	if s.ro || s.dropped {
		return nil
	}
	if err := s.writeIndex(&before, distinct); err != nil {
		s.IndexErr = err
		for _, p := range s.pages {
			p.exists = false
		}
		// Give back the space the partial generation took: the record needs it more.
		s.dropIndexFiles()
		_ = s.invalidateState()
		return nil
	}
	s.memOnly = false
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
	s.wroteIndex = true
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
