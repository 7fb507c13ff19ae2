// Package exfattest mounts a fresh exFAT file system through FUSE (exfat-fuse) for the
// tests that run local-ipam on it: the file system of removable media, with no O_TMPFILE,
// no hard links, no RENAME_NOREPLACE, 1 s timestamps and a ctime that only mirrors the
// mtime.
package exfattest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Mount makes a 64 MiB exFAT image, attaches it to a loop device and mounts it on dir
// through exfat-fuse, with the mount options opts (exfat-fuse's -o, as "umask=0");
// unmounted and detached when the test ends. The error says why it cannot (not root, a
// tool missing, no loop device or FUSE, or a mount that turns out to offer hard links,
// which is not the file system the tests are about): the caller skips with it.
func Mount(t testing.TB, dir string, opts ...string) error {
	t.Helper()
	if os.Geteuid() != 0 {
		return errors.New("needs root: a loop device and a FUSE mount")
	}
	tools := map[string]string{}
	for _, name := range []string{"mkfs.exfat", "mount.exfat-fuse", "losetup"} {
		p, err := lookTool(name)
		if err != nil {
			return fmt.Errorf("%s not found (apt-get install exfatprogs exfat-fuse): %v", name, err)
		}
		tools[name] = p
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no FUSE: %v", err)
	}
	img := filepath.Join(t.TempDir(), "exfat.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		return err
	}
	if out, err := exec.Command(tools["mkfs.exfat"], img).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.exfat: %v: %s", err, out)
	}
	out, err := exec.Command(tools["losetup"], "-f", "--show", img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("no loop device: losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(tools["losetup"], "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	args := []string{loop, dir}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if out, err := exec.Command(tools["mount.exfat-fuse"], args...).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot mount exFAT through FUSE: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// The FUSE daemon may still hold the mount busy for a moment.
		var err error
		for range 50 {
			if err = unix.Unmount(dir, 0); err == nil || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
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

// lookTool finds a system tool, also where the PATH of the test may not reach (sbin).
func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if fi, serr := os.Stat(filepath.Join(dir, name)); serr == nil && fi.Mode().IsRegular() {
			return filepath.Join(dir, name), nil
		}
	}
	return "", err
}
