package disk

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Record is one entry of the network directory named like an address.
type Record struct {
	Addr netip.Addr
	// Regular is false for a directory, symlink or other non-file named like an address,
	// and for a record this process may not read: it blocks the address (nobody can
	// create the record), names no owner, and is never followed.
	Regular bool
	// Unreadable: a regular file this process may not open (another user's, mode 0600):
	// held by an owner nobody here can name. host-local skips such a file too.
	Unreadable bool
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
				if denied(err) {
					ok, rec.Unreadable, err = unreadable(s.netfd, e.Name())
				}
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

// denied: an open refused for lack of permission, as for a file of another user with
// mode 0600 (root's, when the plugin runs as another user). Such a record is held by an
// owner we cannot name: never handed out, never freed or removed on our word.
func denied(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// unreadable tells, after an open of name was denied, whether it still exists and is a
// regular file (a record we may not read) rather than something else we may not open.
func unreadable(dirfd int, name string) (ok, regular bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, false, nil
	}
	return err == nil, err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG, err
}

// Records calls fn for every record of the network (a walk over the whole directory:
// for GC and the operator's commands, never for ADD, DEL or CHECK).
func (s *Store) Records(fn func(Record) error) error {
	if err := s.scan(fn); err != nil {
		return cnierr.IO(err, "cannot read the records of %s", s.dir)
	}
	return nil
}

// modTime is when the record of a was written (zero if unknown).
func (s *Store) modTime(a netip.Addr) time.Time {
	var st unix.Stat_t
	if unix.Fstatat(s.netfd, a.String(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return time.Time{}
	}
	return time.Unix(st.Mtim.Unix())
}

// Networks lists the network directories under dataDir (symlinks are not followed).
func Networks(dataDir string) ([]string, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, cnierr.IO(err, "cannot list %s", dataDir)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
