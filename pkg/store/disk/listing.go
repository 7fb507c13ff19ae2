package disk

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// List calls fn with each reservation of the network, or of container id only when id is
// not "": each record that names an owner (an empty record holds nothing; a directory or
// symlink named like an address blocks it but names no one). Created is the record's
// modification time. It reads the records, not the index.
func (s *Store) List(id string, fn func(store.Entry) error) error {
	return s.Records(func(r Record) error {
		if !r.Regular || r.Content == "" {
			return nil
		}
		o := r.Owner()
		if id != "" && o.ID != id {
			return nil
		}
		return fn(store.Entry{Addr: r.Addr, Owner: o, Created: s.modTime(r.Addr)})
	})
}

// CountReserved returns how many addresses in [from, to] are taken: by a record naming an
// owner, or by anything but a file named like the address. Each call walks the records.
func (s *Store) CountReserved(from, to netip.Addr) (int, error) {
	taken, err := s.taken()
	if err != nil {
		return 0, err
	}
	return countIn(taken, from, to), nil
}

// taken returns the addresses the records take, sorted.
func (s *Store) taken() ([]netip.Addr, error) {
	var taken []netip.Addr
	err := s.Records(func(r Record) error {
		if !r.Regular || r.Content != "" {
			taken = append(taken, r.Addr)
		}
		return nil
	})
	slices.SortFunc(taken, netip.Addr.Compare)
	return taken, err
}

// countIn counts the addresses of sorted that lie in [from, to].
func countIn(sorted []netip.Addr, from, to netip.Addr) int {
	i, _ := slices.BinarySearchFunc(sorted, from, netip.Addr.Compare)
	j, found := slices.BinarySearchFunc(sorted, to, netip.Addr.Compare)
	if found {
		j++
	}
	return max(j-i, 0)
}

// Reader is a network's records read without its lock, as host-local's own readers read
// them: for the operator's commands that only look (list, usage), which must neither
// wait for the network's calls nor write to the store. Opening it creates, locks and
// writes nothing; it is a Store that refuses every change, as on a read-only file
// system. A network without a directory has no records.
type Reader struct {
	*Store
	taken []netip.Addr // sorted; read by the first CountReserved, for all of them
	read  bool
}

// OpenReader opens <dataDir>/<network> for reading its records.
func OpenReader(dataDir, network string) (*Reader, error) {
	s := &Store{
		dir: filepath.Join(dataDir, network), lockfd: -1, netfd: -1, metafd: -1, idxfd: -1, stfd: -1,
		pages: map[pageKey]*page{}, owners: map[string][]netip.Addr{}, dirty: map[string]bool{},
		overflow: map[string]bool{}, lastLen: map[int]int{},
		index: indexMemReadOnly, // every change fails: beginChange refuses it
	}
	fd, err := openDir(unix.AT_FDCWD, s.dir)
	switch {
	case errors.Is(err, unix.ENOENT):
		// A network nothing was ever allocated from.
	case errors.Is(err, unix.ELOOP):
		return nil, cnierr.New(cnierr.StoreCorrupt, s.dir, "network directory %s is a symlink; local-ipam does not follow it", s.dir)
	case err != nil:
		return nil, cnierr.IO(err, "cannot open %s", s.dir)
	default:
		s.netfd = fd
	}
	return &Reader{Store: s}, nil
}

// List is Store.List, for a network that may have no directory.
func (r *Reader) List(id string, fn func(store.Entry) error) error {
	if r.netfd < 0 {
		return nil
	}
	return r.Store.List(id, fn)
}

// Writable is Store.Writable; for a network without a directory, whether the first ADD
// could create it: the nearest existing directory above it is writable.
func (r *Reader) Writable() error {
	if r.netfd >= 0 {
		return r.Store.Writable()
	}
	for d := filepath.Dir(r.dir); ; d = filepath.Dir(d) {
		err := unix.Faccessat(unix.AT_FDCWD, d, unix.W_OK, unix.AT_EACCESS)
		if !errors.Is(err, unix.ENOENT) || d == filepath.Dir(d) {
			return err
		}
	}
}

// CountReserved is Store.CountReserved over one walk of the records, made by the first
// call: the counts of one Reader add up.
func (r *Reader) CountReserved(from, to netip.Addr) (int, error) {
	if !r.read && r.netfd >= 0 {
		taken, err := r.Store.taken()
		if err != nil {
			return 0, err
		}
		r.taken, r.read = taken, true
	}
	return countIn(r.taken, from, to), nil
}
