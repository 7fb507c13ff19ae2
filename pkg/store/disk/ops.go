package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Holder implements store.Store: it reads the record itself, not the index.
func (s *Store) Holder(a netip.Addr) (store.Owner, bool, error) {
	data, ok, regular, err := readSmall(s.netfd, a.String(), maxRecord)
	if err != nil {
		return store.Owner{}, false, cnierr.IO(err, "cannot read reservation %s", filepath.Join(s.dir, a.String()))
	}
	content := strings.TrimSpace(string(data))
	if !ok || !regular || content == "" {
		return store.Owner{}, false, nil
	}
	return store.ParseKey(content), true, nil
}

// Records calls fn for every record of the network (a walk over the whole directory:
// for GC and the operator's commands, never for ADD, DEL or CHECK).
func (s *Store) Records(fn func(Record) error) error {
	if err := s.scan(fn); err != nil {
		return cnierr.IO(err, "cannot read the records of %s", s.dir)
	}
	return nil
}

// ModTime is when the record of a was written (zero if unknown).
func (s *Store) ModTime(a netip.Addr) time.Time {
	var st unix.Stat_t
	if unix.Fstatat(s.netfd, a.String(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return time.Time{}
	}
	return time.Unix(st.Mtim.Unix())
}

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

func deleteAddr(addrs []netip.Addr, a netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, b := range addrs {
		if b != a {
			out = append(out, b)
		}
	}
	return out
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

// BootIDFile is where the kernel tells the current boot apart from earlier ones.
// LOCAL_IPAM_BOOT_ID_FILE overrides it, so that tests can simulate a reboot.
func BootIDFile() string {
	if f := os.Getenv("LOCAL_IPAM_BOOT_ID_FILE"); f != "" {
		return f
	}
	return "/proc/sys/kernel/random/boot_id"
}

const bootIDName = "boot_id"

// freeOnReboot frees every record if the machine booted since the last call on this
// network: the containers they were made for died with the machine. One walk of the
// records, once per boot; every other call costs two small reads.
func (s *Store) freeOnReboot() (int, error) {
	cur, err := os.ReadFile(BootIDFile())
	if err != nil {
		return 0, cnierr.IO(err, "cannot read the boot ID")
	}
	boot := strings.TrimSpace(string(cur))
	prev, ok, _, err := readSmall(s.metafd, bootIDName, 128)
	if err != nil {
		return 0, cnierr.IO(err, "cannot read %s", filepath.Join(s.dir, metaName, bootIDName))
	}
	if ok && string(prev) == boot {
		return 0, nil
	}
	freed := 0
	if ok {
		// A boot we have seen before this one: everything recorded is stale.
		var names []string
		err := s.scan(func(r Record) error {
			if r.Regular {
				names = append(names, r.Addr.String())
			}
			return nil
		})
		if err != nil {
			return 0, cnierr.IO(err, "cannot read the records of %s", s.dir)
		}
		if err := s.beginChange(); err != nil {
			return 0, err
		}
		for _, n := range names {
			if err := unix.Unlinkat(s.netfd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return freed, cnierr.IO(err, "cannot remove %s", filepath.Join(s.dir, n))
			}
			freed++
		}
		if err := s.rebuild(); err != nil {
			return freed, err
		}
	}
	if err := putFile(s.metafd, bootIDName, []byte(boot)); err != nil {
		return freed, cnierr.IO(err, "cannot write %s", filepath.Join(s.dir, metaName, bootIDName))
	}
	return freed, nil
}

// ReadRecords lists a network's records without locking or writing anything: for the
// operator's read-only commands. Records are written atomically, so each one read is
// whole; the list as a whole is a snapshot only as good as a directory listing.
func ReadRecords(dataDir, network string, fn func(r Record, created time.Time) error) error {
	dir := filepath.Join(dataDir, network)
	fd, err := openDir(unix.AT_FDCWD, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil // a network nothing was ever allocated from
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return cnierr.New(cnierr.StoreCorrupt, dir, "network directory %s is a symlink; local-ipam does not follow it", dir)
		}
		return cnierr.IO(err, "cannot open %s", dir)
	}
	s := &Store{dir: dir, netfd: fd, metafd: -1, idxfd: -1, stfd: -1}
	defer unix.Close(fd)
	return s.Records(func(r Record) error {
		return fn(r, s.ModTime(r.Addr))
	})
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
