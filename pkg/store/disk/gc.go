package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// GC removes every reservation whose owner is not among the valid attachments, with the
// outcome of host-local v1.10.0's GC on the same directory: every regular file other
// than lock and last_reserved_ip.* is a reservation; one naming only a container ID (an
// old host-local record) is kept when that container has any valid attachment. It goes
// on past files it cannot read or remove, and returns what it could not do.
func (s *Store) GC(valid []types.GCAttachment) (removed []netip.Addr, err error) {
	keeps := store.GCKeeps(valid)
	dfd, err := openDir(s.netfd, ".")
	if err != nil {
		return nil, cnierr.IO(err, "cannot list %s", s.dir)
	}
	d := os.NewFile(uintptr(dfd), s.dir)
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil, cnierr.IO(err, "cannot list %s", s.dir)
	}
	var failed []string
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || name == lockName || strings.HasPrefix(name, lastPrefix) {
			continue
		}
		data, ok, regular, rerr := readSmall(s.netfd, name, maxRecord)
		if rerr != nil || !ok || !regular {
			continue // host-local skips what it cannot read, too
		}
		key := strings.TrimSpace(string(data))
		if keeps(key) {
			if err := s.checkKept(name, key); err != nil {
				return removed, err
			}
			continue
		}
		if err := s.beginChange(); err != nil {
			return removed, err
		}
		if uerr := unix.Unlinkat(s.netfd, name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			failed = append(failed, fmt.Sprintf("%s: %v", name, uerr))
			continue
		}
		s.changed = true
		a, isRec := isRecordName(name)
		if !isRec {
			continue
		}
		removed = append(removed, a)
		if key != "" {
			held, oerr := s.owned(key)
			if oerr != nil {
				return removed, oerr
			}
			s.setOwned(key, deleteAddr(held, a))
		}
		if terr := s.setTaken(a, false); terr != nil {
			return removed, terr
		}
	}
	if len(failed) > 0 {
		return removed, cnierr.New(cnierr.IOFailure, strings.Join(failed, "; "),
			"GC of %s could not remove %d reservation(s)", s.dir, len(failed))
	}
	return removed, nil
}

// checkKept compares a record GC keeps with the index, keyed as a rebuild keys it. A
// record the index does not know its owner for was changed without any directory
// timestamp moving (its content rewritten in place): the index is spoiled at commit and
// the next call rebuilds it, so a GC also repairs what no timestamp showed.
func (s *Store) checkKept(name, key string) error {
	a, isRec := isRecordName(name)
	if !isRec || key == "" || s.stale {
		return nil
	}
	held, err := s.owned(key)
	if err != nil {
		return err
	}
	if !slices.Contains(held, a) {
		s.stale = true
	}
	return nil
}

func deleteAddr(addrs []netip.Addr, a netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, b := range addrs {
		if b != a {
			out = append(out, b)
		}
	}
	return out
}
