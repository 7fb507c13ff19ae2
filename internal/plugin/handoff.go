package plugin

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// EtcdBinary is the binary that serves networks kept in etcd. It is a separate program
// because linking the etcd client (gRPC, protobuf) would triple the start-up time of every
// call, etcd or not (docs/PERFORMANCE.md).
const EtcdBinary = "local-ipam-etcd"

// findEtcdBinary looks next to this executable first (the two are installed together),
// then in CNI_PATH, as a runtime would look for a plugin.
func findEtcdBinary() (string, bool) {
	var dirs []string
	if self, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(self))
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("CNI_PATH"))...)
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, EtcdBinary)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// handoff replaces this process with local-ipam-etcd, same arguments and environment,
// its stdin holding the config this process already read. It returns only on failure.
func handoff(stdin []byte) error { return execEtcd(stdin, nil) }

// execEtcd is handoff with the arguments args (nil: this process's own). An operator's
// command passes its --conf as --conf=- with the bytes it read on stdin: the path may be
// a pipe, a process substitution or stdin, which cannot be read a second time.
func execEtcd(stdin []byte, args []string) error {
	bin, ok := findEtcdBinary()
	if !ok {
		dir := "this program's directory"
		if self, err := os.Executable(); err == nil {
			dir = filepath.Dir(self)
		}
		return cnierr.New(cnierr.PluginNotAvailable, "install "+EtcdBinary+" in the same directory as local-ipam",
			"the network's store is etcd, served by %s, which is neither in %s, local-ipam's directory, nor in CNI_PATH", EtcdBinary, dir)
	}
	if stdin != nil {
		// A memory file rather than a pipe: nothing has to stay behind to feed it.
		fd, err := unix.MemfdCreate("netconf", unix.MFD_CLOEXEC)
		if err != nil {
			return cnierr.IO(err, "cannot hand the call to %s", bin)
		}
		if err := writeAll(fd, stdin); err != nil {
			return cnierr.IO(err, "cannot hand the call to %s", bin)
		}
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			return cnierr.IO(err, "cannot hand the call to %s", bin)
		}
		// dup3 clears close-on-exec on the new descriptor 0 (if the memfd is 0 already,
		// clear it by hand: dup3 refuses equal descriptors).
		if fd == 0 {
			_, err = unix.FcntlInt(0, unix.F_SETFD, 0)
		} else {
			err = unix.Dup3(fd, 0, 0)
		}
		if err != nil {
			return cnierr.IO(err, "cannot hand the call to %s", bin)
		}
	}
	if args == nil {
		args = os.Args[1:]
	}
	argv := append([]string{bin}, args...)
	err := unix.Exec(bin, argv, os.Environ())
	return cnierr.IO(err, "cannot run %s", bin)
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		b = b[n:]
	}
	return nil
}
