package disk

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Owned implements store.Store.
func (s *Store) Owned(o store.Owner) ([]netip.Addr, error) {
	addrs, err := s.owned(o.Key())
	return slices.Clone(addrs), err
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
		if i, ok := p.b.FirstClear(bit, end); ok {
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
		data, _, regular, err := s.readRecord(name)
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

// readRecord reads the record name (readSmall). A record this process may not read is
// reported as existing and not regular: held by an owner we cannot name.
func (s *Store) readRecord(name string) (data []byte, ok, regular bool, err error) {
	data, ok, regular, err = readSmall(s.netfd, name, maxRecord)
	if denied(err) {
		ok, _, err = unreadable(s.netfd, name)
		return nil, ok, false, err
	}
	return data, ok, regular, err
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
// make us delete someone else's reservation. A record this user may not read is left:
// nothing shows it is the owner's (host-local's DEL leaves it too).
func (s *Store) Release(a netip.Addr, o store.Owner) (bool, error) {
	key := o.Key()
	name := a.String()
	data, ok, regular, err := s.readRecord(name)
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

// Holder implements store.Store: it reads the record itself, not the index.
func (s *Store) Holder(a netip.Addr) (store.Owner, bool, error) {
	data, ok, regular, err := s.readRecord(a.String())
	if err != nil {
		return store.Owner{}, false, cnierr.IO(err, "cannot read reservation %s", filepath.Join(s.dir, a.String()))
	}
	content := strings.TrimSpace(string(data))
	if !ok || !regular || content == "" {
		return store.Owner{}, false, nil
	}
	return store.ParseKey(content), true, nil
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

// Writable reports whether a reservation could be written now (a read-only or full file
// system says no), without leaving anything behind.
func (s *Store) Writable() error {
	fd, err := unix.Openat(s.netfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err == nil {
		defer unix.Close(fd)
		// One byte, to see ENOSPC too; the inode is anonymous and vanishes on close.
		_, err = unix.Write(fd, []byte{'\n'})
		return err
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return unix.Faccessat(s.netfd, ".", unix.W_OK, unix.AT_EACCESS)
	}
	return err
}

func insertAddr(addrs []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(addrs, a, netip.Addr.Compare)
	if found {
		return addrs
	}
	return slices.Insert(slices.Clone(addrs), i, a)
}
