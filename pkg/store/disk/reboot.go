package disk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

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
// records, once per boot; every other call costs two small reads. A record this user may
// not read goes too: it is as old as the others, and its content decides nothing here.
func (s *Store) freeOnReboot() (int, error) {
	cur, err := os.ReadFile(BootIDFile())
	if err != nil {
		return 0, cnierr.IO(err, "cannot read the boot ID")
	}
	boot := strings.TrimSpace(string(cur))
	if s.index == indexMemDenied {
		// The boot ID is kept in .local-ipam, which this user may not use: without it a
		// reboot cannot be told from any other call, and freeing every record at each call
		// would free live ones. The records stay until DEL or GC frees them.
		return 0, nil
	}
	prev, ok, _, err := readSmall(s.metafd, bootIDName, 128)
	if denied(err) {
		return 0, nil // the same, when only the boot ID file is another user's
	}
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
			if r.Regular || r.Unreadable {
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
