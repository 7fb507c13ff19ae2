package mounttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Exfat makes a 64 MiB exFAT image, attaches it to a loop device and mounts it on dir
// through exfat-fuse, with the mount options opts (exfat-fuse's -o, as "umask=0");
// unmounted and detached when the test ends. exFAT through FUSE is the file system of
// removable media: no O_TMPFILE, no hard links, no RENAME_NOREPLACE, 1 s timestamps and a
// ctime that only mirrors the mtime. The error says why it cannot be had (not root, a
// tool missing, no loop device or FUSE, or a mount that offers hard links after all,
// which is not the file system the tests are about): the caller skips with it.
func Exfat(t testing.TB, dir string, opts ...string) error {
	t.Helper()
	if os.Geteuid() != 0 {
		return errors.New("needs root: a loop device and a FUSE mount")
	}
	mkfs, err := Tool("mkfs.exfat", "exfatprogs")
	if err != nil {
		return err
	}
	mount, err := Tool("mount.exfat-fuse", "exfat-fuse")
	if err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no FUSE: %v", err)
	}
	img := filepath.Join(t.TempDir(), "exfat.img")
	if err := Image(img, 64<<20, mkfs); err != nil {
		return err
	}
	loop, err := Loop(t, img)
	if err != nil {
		return fmt.Errorf("no loop device: %v", err)
	}
	args := []string{loop, dir}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if out, err := exec.Command(mount, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot mount exFAT through FUSE: %v: %s", err, out)
	}
	// The FUSE daemon may still hold the mount busy for a moment: Unmount waits for it.
	UnmountAtCleanup(t, dir)
	// The premise: none of the atomic ways of creating a file works here.
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, []byte("x"), 0o600); err != nil {
		return err
	}
	defer os.Remove(probe)
	if err := os.Link(probe, probe+"2"); err == nil {
		os.Remove(probe + "2")
		return errors.New("this exFAT mount supports hard links: not the file system the test is about")
	}
	return nil
}
