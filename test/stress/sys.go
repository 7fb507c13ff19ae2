package main

// System-level fault injection: mounts (tmpfs, bind, read-only remount), chattr, and the
// fanotify "kill at the k-th file operation" of crash-io. All of it needs root.

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/mounttest"
)

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

func bindMount(dir string) error {
	return unix.Mount(dir, dir, "", unix.MS_BIND, "")
}

func mountTmpfs(dir, opts string) error {
	if err := mkdirAll(dir); err != nil {
		return err
	}
	return mounttest.Tmpfs(dir, opts)
}

func remount(dir string, readOnly bool) error {
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return unix.Mount("", dir, "", flags, "")
}

func unmount(dir string) { _ = unix.Unmount(dir, unix.MNT_DETACH) }

// unmountAll unmounts whatever is still mounted under root (deepest first): a scenario
// that panicked half-way leaves nothing behind.
func unmountAll(root string) {
	points, _ := mounttest.Under(root)
	for _, p := range points {
		unmount(p)
	}
}

// --- chattr ---------------------------------------------------------------------------

// Inode flags of chattr (linux/fs.h); x/sys/unix does not define them.
const (
	flagImmutable = 0x00000010 // FS_IMMUTABLE_FL, chattr +i
	flagAppend    = 0x00000020 // FS_APPEND_FL, chattr +a
)

var (
	immutableMu    sync.Mutex
	immutablePaths = map[string]bool{}
)

// setFlag sets or clears an inode flag (flagImmutable, flagAppend) as chattr does.
func setFlag(path string, flag int, on bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	cur, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		cur |= flag
	} else {
		cur &^= flag
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, cur); err != nil {
		return err
	}
	immutableMu.Lock()
	defer immutableMu.Unlock()
	if on {
		immutablePaths[path] = true
	} else {
		delete(immutablePaths, path)
	}
	return nil
}

// clearImmutable clears the flags this run set anywhere under root, so it can be removed.
func clearImmutable(root string) {
	immutableMu.Lock()
	paths := sortedKeys(immutablePaths)
	immutableMu.Unlock()
	for _, p := range paths {
		if strings.HasPrefix(p, root) {
			_ = setFlag(p, flagImmutable|flagAppend, false)
		}
	}
}

// --- fanotify: kill at the k-th file operation ------------------------------------------

// fanPreAccess is FAN_PRE_ACCESS (Linux 6.14+): a permission event before every read or
// write of a file (pre-content events); x/sys/unix does not define it yet.
const fanPreAccess = 0x00100000

// ioKiller watches a mount with fanotify permission events: FAN_OPEN_PERM before every open
// of a file and, where the kernel has them, FAN_PRE_ACCESS before every read and write (on
// older kernels, opens of files and directories only). The process blocks until we answer. While armed with k, it counts the events of
// every process but the harness and SIGKILLs the process at the k-th, while it is blocked
// there (after an O_CREAT open has created the file, before a write has written anything).
// Everyone else is allowed at once.
type ioKiller struct {
	fd        int
	base      string
	self      int32
	preAccess bool // reads and writes are kill points too
	mu        sync.Mutex
	k         int    // kill at the k-th event; 0: never
	n         int    // events of the current call
	hit       string // what was being done when the kill was sent
	stop      chan struct{}
	done      chan struct{}
}

func newIOKiller(mount string) (*ioKiller, error) {
	k := &ioKiller{base: mount, self: int32(os.Getpid()), stop: make(chan struct{}), done: make(chan struct{})}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_PRE_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err == nil {
		// Pre-content events cannot be asked for directories (FAN_ONDIR): opening a
		// directory changes nothing, so the next file operation is as good a kill point.
		if err = unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_OPEN_PERM|fanPreAccess, unix.AT_FDCWD, mount); err == nil {
			k.preAccess = true
		} else {
			unix.Close(fd)
		}
	}
	if !k.preAccess {
		// An older kernel: opens only.
		if fd, err = unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC); err != nil {
			return nil, err
		}
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_OPEN_PERM|unix.FAN_ONDIR, unix.AT_FDCWD, mount); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	k.fd = fd
	go k.loop()
	return k, nil
}

// arm sets the event to kill at (0: none) for the next call, and resets the count.
func (k *ioKiller) arm(kth int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.k, k.n, k.hit = kth, 0, ""
}

// disarm returns how many events the call caused and what it was doing when killed.
func (k *ioKiller) disarm() (int, string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, hit := k.n, k.hit
	k.k, k.n, k.hit = 0, 0, ""
	return n, hit
}

func (k *ioKiller) close() {
	close(k.stop)
	<-k.done
	unix.Close(k.fd) // any event still pending is allowed by the kernel
}

func (k *ioKiller) loop() {
	defer close(k.done)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-k.stop:
			return
		default:
		}
		pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 50); err != nil || n == 0 {
			continue
		}
		n, err := unix.Read(k.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		ne := binary.NativeEndian
		for off := 0; off+24 <= n; {
			evLen := int(ne.Uint32(buf[off:]))
			if evLen < 24 {
				break
			}
			mask := ne.Uint64(buf[off+8:])
			efd := int32(ne.Uint32(buf[off+16:]))
			pid := int32(ne.Uint32(buf[off+20:]))
			k.handle(mask, efd, pid)
			off += evLen
		}
	}
}

func (k *ioKiller) handle(mask uint64, efd, pid int32) {
	if mask&(unix.FAN_OPEN_PERM|fanPreAccess) != 0 && pid != k.self {
		k.mu.Lock()
		k.n++
		if k.k > 0 && k.n == k.k {
			_ = syscall.Kill(int(pid), syscall.SIGKILL)
			op := "open"
			if mask&fanPreAccess != 0 {
				op = "read/write"
			}
			k.hit = op + " " + k.what(efd)
		}
		k.mu.Unlock()
	}
	if efd >= 0 {
		var resp [8]byte
		binary.NativeEndian.PutUint32(resp[0:], uint32(efd))
		binary.NativeEndian.PutUint32(resp[4:], unix.FAN_ALLOW)
		_, _ = unix.Write(k.fd, resp[:])
		unix.Close(int(efd))
	}
}

var (
	reGen  = regexp.MustCompile(`idx\.\d+`)
	rePage = regexp.MustCompile(`p([46])-[0-9a-f]+`)
)

// what names the file an event fd refers to, relative to the data dir, with addresses,
// generations and pages generalised.
func (k *ioKiller) what(efd int32) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(efd)))
	if err != nil {
		return "?"
	}
	if strings.HasSuffix(p, " (deleted)") && strings.Contains(p, "/#") {
		return "<O_TMPFILE>"
	}
	rel, err := filepath.Rel(k.base, p)
	if err != nil {
		return p
	}
	if rel == "." {
		return "<data dir>"
	}
	parts := strings.Split(rel, "/")
	parts[0] = "<net>"
	for i := 1; i < len(parts); i++ {
		if _, ok := recordName(parts[i]); ok {
			parts[i] = "<record>"
		}
		parts[i] = reGen.ReplaceAllString(parts[i], "idx.<gen>")
		parts[i] = rePage.ReplaceAllString(parts[i], "p$1-<page>")
	}
	return strings.Join(parts, "/")
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }
