// Package memory is an in-process store.Store: the reference the conformance suite and the
// allocator's tests run against. It keeps a sorted slice, so it is meant for small pools.
package memory

import (
	"net/netip"
	"slices"

	"github.com/local-ipam/local-ipam/pkg/store"
)

// Store keeps reservations in memory. The zero value is not usable; call New.
type Store struct {
	owners map[netip.Addr]string
	last   map[int]netip.Addr
	closed bool
}

// New returns an empty store.
func New() *Store {
	return &Store{owners: map[netip.Addr]string{}, last: map[int]netip.Addr{}}
}

func (s *Store) Owned(o store.Owner) ([]netip.Addr, error) {
	var out []netip.Addr
	k := o.Key()
	for a, owner := range s.owners {
		if owner == k {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (s *Store) FirstFree(from, to netip.Addr) (netip.Addr, bool, error) {
	for a := from; a.IsValid() && a.Compare(to) <= 0; a = a.Next() {
		if _, taken := s.owners[a]; !taken {
			return a, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

func (s *Store) Reserve(a netip.Addr, o store.Owner) (bool, error) {
	if _, taken := s.owners[a]; taken {
		return false, nil
	}
	s.owners[a] = o.Key()
	return true, nil
}

func (s *Store) Holder(a netip.Addr) (store.Owner, bool, error) {
	k, ok := s.owners[a]
	return store.ParseKey(k), ok, nil
}

func (s *Store) Release(a netip.Addr, o store.Owner) (bool, error) {
	if s.owners[a] != o.Key() {
		return false, nil
	}
	delete(s.owners, a)
	return true, nil
}

func (s *Store) LastReserved(set int) (netip.Addr, error) { return s.last[set], nil }

func (s *Store) SetLastReserved(set int, a netip.Addr) error {
	s.last[set] = a
	return nil
}

func (s *Store) Commit() error { return nil }

func (s *Store) Close() error {
	s.closed = true
	return nil
}

// Reopen makes a closed store usable again, as a new call on the same network would.
func (s *Store) Reopen() *Store {
	s.closed = false
	return s
}

var _ store.Store = (*Store)(nil)
