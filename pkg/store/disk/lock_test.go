package disk_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	filemutex "github.com/alexflint/go-filemutex"
	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// holdEnv makes the test binary a helper process that holds a lock file as host-local
// does (go-filemutex), until its stdin closes.
const holdEnv = "LOCAL_IPAM_TEST_HOLD_LOCK"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		os.Exit(holdLock(path))
	}
	os.Exit(m.Run())
}

func holdLock(path string) int {
	m, err := filemutex.New(path)
	if err == nil {
		err = m.Lock()
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// holdInOtherProcess takes path's lock in a helper process, as host-local would; the
// returned function releases it (and waits for the process to exit).
func holdInOtherProcess(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "locked\n" {
		t.Fatalf("lock helper: %q, %v", line, err)
	}
	return release
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// local-ipam and host-local exclude each other through the same flock on the same file:
// a call waits while host-local (another process) holds the lock, fails with code 11 at
// the timeout, goes on once host-local lets go; and host-local cannot take the lock while
// a call holds it.
func TestLockExcludesHostLocal(t *testing.T) {
	dir := t.TempDir()
	closeIt(t, mustOpen(t, dir, "net"))
	lock := filepath.Join(dir, "net", "lock")

	release := holdInOtherProcess(t, lock)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	_, err := disk.Open(dir, "net", disk.Options{LockTimeout: timeout})
	if took := time.Since(start); cnierr.Code(err) != cnierr.TryAgainLater || took < timeout || took > 10*time.Second {
		t.Fatalf("Open while another process holds the lock: %v after %v; want code 11 after %v (Options.LockTimeout)", err, took, timeout)
	}

	opened := make(chan error, 1)
	go func() {
		s, err := disk.Open(dir, "net", disk.Options{LockTimeout: 20 * time.Second})
		if err == nil {
			err = s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("Open returned (%v) while another process held the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("Open after the other process let go: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open still waiting 10 s after the other process let go")
	}

	s := mustOpen(t, dir, "net")
	m, err := filemutex.New(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.TryLock(); !errors.Is(err, filemutex.AlreadyLocked) {
		t.Errorf("go-filemutex TryLock while a call holds the store: %v, want AlreadyLocked", err)
	}
	closeIt(t, s)
	if err := m.TryLock(); err != nil {
		t.Errorf("go-filemutex TryLock after Close: %v", err)
	}
}

// The lock file is created with the mode host-local's go-filemutex gives it.
func TestLockFileModeAsHostLocal(t *testing.T) {
	dir := t.TempDir()
	closeIt(t, mustOpen(t, dir, "net"))
	m, err := filemutex.New(filepath.Join(dir, "hl-lock"))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	ours, err1 := os.Lstat(filepath.Join(dir, "net", "lock"))
	theirs, err2 := os.Lstat(filepath.Join(dir, "hl-lock"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if ours.Mode() != theirs.Mode() {
		t.Errorf("lock file mode %v, host-local's %v", ours.Mode(), theirs.Mode())
	}
}

// The lock fd is close-on-exec: a process started while a call holds the lock (and that
// may outlive it) does not inherit the lock file, and with it the lock.
func TestLockNotInherited(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, "net")
	defer closeIt(t, s)
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	lock := filepath.Join(dir, "net", "lock")
	fds := filepath.Join("/proc", strconv.Itoa(child.Process.Pid), "fd")
	ents, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(fds, e.Name())); target == lock {
			t.Errorf("a child process inherited the lock file as fd %s", e.Name())
		}
	}
}

// A lock that is a symlink to a file outside the data dir: code 104, and the file is
// neither opened for writing, locked, created nor changed.
func TestLockSymlinkToOutsideFile(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim")
	writeFile(t, outside, "precious")
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(outside, past, past); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "net"), 0o755)
	if err := os.Symlink(outside, filepath.Join(dir, "net", "lock")); err != nil {
		t.Fatal(err)
	}
	_, err := disk.Open(dir, "net", disk.Options{})
	if cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Fatalf("Open with a lock symlinked outside: %v, want code 104", err)
	}
	st, err := os.Stat(outside)
	if err != nil || !st.ModTime().Equal(past) || st.Mode() != 0o600 || read(t, outside) != "precious" {
		t.Errorf("the file outside changed: %v %v %v", st.ModTime(), st.Mode(), err)
	}
	if lst, err := os.Lstat(filepath.Join(dir, "net", "lock")); err != nil || lst.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v", err)
	}
}

// A lock that is not a regular file (a fifo, a directory) is refused with code 104, at
// once: opening a fifo must not wait for a writer.
func TestLockNotARegularFile(t *testing.T) {
	for name, mk := range map[string]func(string) error{
		"fifo":      func(p string) error { return unix.Mkfifo(p, 0o600) },
		"directory": func(p string) error { return os.Mkdir(p, 0o755) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "net"), 0o755)
			if err := mk(filepath.Join(dir, "net", "lock")); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := disk.Open(dir, "net", disk.Options{})
				done <- err
			}()
			select {
			case err := <-done:
				if cnierr.Code(err) != cnierr.StoreCorrupt {
					t.Errorf("Open with a %s as lock: %v, want code 104", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Open with a %s as lock still running after 5 s", name)
			}
		})
	}
}

// The lock is checked on the fd that is locked, not by a separate look at the path: a
// lock swapped for a symlink (to a place outside that does not exist) at any instant
// never makes a call create or lock anything outside.
func TestLockSymlinkSwapRace(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	closeIt(t, mustOpen(t, dir, "net"))
	outside := filepath.Join(t.TempDir(), "victim")
	lock := filepath.Join(net, "lock")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Both are atomic renames: the lock always exists, a file or a symlink.
			if os.Symlink(outside, filepath.Join(net, "l.sym")) == nil {
				os.Rename(filepath.Join(net, "l.sym"), lock)
			}
			if os.WriteFile(filepath.Join(net, "l.reg"), nil, 0o600) == nil {
				os.Rename(filepath.Join(net, "l.reg"), lock)
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	opened, refused := 0, 0
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		s, err := disk.Open(dir, "net", disk.Options{})
		switch {
		case err == nil:
			opened++
			s.Close()
		case cnierr.Code(err) == cnierr.StoreCorrupt:
			refused++
		default:
			t.Fatalf("Open: %v", err)
		}
		if _, err := os.Lstat(outside); err == nil {
			t.Fatalf("a call created %s through the lock symlink (after %d opens, %d refusals)", outside, opened, refused)
		}
	}
	t.Logf("%d opens, %d refusals", opened, refused)
	if opened == 0 || refused == 0 {
		t.Errorf("the race was not exercised: %d opens, %d refusals", opened, refused)
	}
}
