package cniexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BinDir is where the built binaries are: LOCAL_IPAM_BIN_DIR, or bin/ at the root of the
// module the working directory is in. It is found once per process.
func BinDir() (string, error) { return binDir() }

var binDir = sync.OnceValues(func() (string, error) {
	dir := os.Getenv("LOCAL_IPAM_BIN_DIR")
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				return "", errors.New("no go.mod above the working directory; set LOCAL_IPAM_BIN_DIR")
			}
			root = parent
		}
		dir = filepath.Join(root, "bin")
	}
	return filepath.Abs(dir)
})

// Executable says why path is not an executable file, or nil when it is one.
func Executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// Bin returns the path of one built binary, or fails the test saying how to build it.
func Bin(t testing.TB, name string) string {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		t.Fatalf("cannot locate the binaries: %v", err)
	}
	p := filepath.Join(dir, name)
	if err := Executable(p); err != nil {
		hint := "run make build"
		if !strings.HasPrefix(name, "local-ipam") {
			hint = "run make peers"
		}
		t.Fatalf("%s is missing or not executable (%v): %s, or point LOCAL_IPAM_BIN_DIR at the binaries", p, err, hint)
	}
	return p
}

// Alone returns a copy of the built binary name in a directory of its own: without the
// programs it runs from beside itself (local-ipam-etcd, local-ipam-metrics).
func Alone(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	CopyExecutable(t, Bin(t, name), p)
	return p
}

// CopyExecutable copies the file src to dst, mode 0755.
func CopyExecutable(t testing.TB, src, dst string) {
	t.Helper()
	CopyFile(t, src, dst, 0o755)
}

// CopyFile copies the file src to dst, with mode.
func CopyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
