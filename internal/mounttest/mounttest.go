// Package mounttest mounts the file systems the tests and the stress program run on: a
// ramfs, a tmpfs, an image on a loop device; and unmounts them. Mounting needs root (or
// CAP_SYS_ADMIN).
package mounttest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// Ramfs mounts a ramfs on dir: its timestamps follow the kernel's clock tick, with no
// multigrain timestamps, so two changes can share one.
func Ramfs(dir string) error {
	return unix.Mount("local-ipam-test", dir, "ramfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
}

// Tmpfs mounts a tmpfs on dir with the options opts ("size=16m,mode=0755").
func Tmpfs(dir, opts string) error {
	return unix.Mount("local-ipam-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// Unmount unmounts dir; a dir that is no longer a mount point (unmounted already) is
// not an error. While it is busy (a FUSE daemon or a process still letting go of it) it
// tries again for a few seconds; then it detaches it lazily and returns why the unmount
// failed.
func Unmount(dir string) error {
	var err error
	for range 50 {
		if err = unix.Unmount(dir, 0); err == nil || !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if errors.Is(err, unix.EINVAL) {
		return nil
	}
	if err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
	}
	return err
}

// UnmountAtCleanup unmounts dir when the test ends, failing the test if it cannot.
func UnmountAtCleanup(t testing.TB, dir string) {
	t.Cleanup(func() {
		if err := Unmount(dir); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TempTmpfs mounts a tmpfs with the options opts on a fresh temporary directory for the
// test, or skips the test when mounting is not permitted.
func TempTmpfs(t testing.TB, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := Tmpfs(dir, opts); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): %v", err)
	}
	UnmountAtCleanup(t, dir)
	return dir
}

// TempRamfs mounts a ramfs on a fresh temporary directory for the test, or skips the test
// when mounting is not permitted.
func TempRamfs(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a ramfs")
	}
	dir := t.TempDir()
	if err := Ramfs(dir); err != nil {
		t.Skipf("cannot mount a ramfs: %v", err)
	}
	UnmountAtCleanup(t, dir)
	return dir
}

// Tool finds a system tool, also where root's PATH may not reach; pkg names the Debian
// package to install when it is missing.
func Tool(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); cniexec.Executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (Debian package %s)", name, pkg)
}

// Image creates the file img of size bytes (sparse) and makes a file system in it with
// the command mkfs (the tool and its arguments; img is appended).
func Image(img string, size int64, mkfs ...string) error {
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(mkfs, " "), err, out)
	}
	return nil
}

// Loop attaches img to a free loop device, detached when the test ends, and returns the
// device.
func Loop(t testing.TB, img string) (string, error) {
	losetup, err := Tool("losetup", "util-linux")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(losetup, "--find", "--show", img).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("losetup --find --show: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, nil
}

// Under returns the mount points at or below dir, deepest first (the order to unmount
// them in).
func Under(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if mp := unescape(fields[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	// A mount point below another is longer than it.
	slices.SortStableFunc(points, func(a, b string) int { return len(b) - len(a) })
	return points, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space and so on).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Fill writes the file path until its file system is full.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
}
