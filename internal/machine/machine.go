// Package machine describes, for the benchmark's and the stress suite's reports, the
// machine a run ran on and the binaries it ran. Describe and Binary say it in words that
// can go into the documentation (no date, no path of the machine); Mount and Version add
// the local details the text reports give a developer.
package machine

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"golang.org/x/sys/unix"
)

// Describe is the machine in words: "2 CPUs (model), kernel 6.18.1, go1.26.0"; the Go
// version is this program's, which built the binaries of this tree too.
func Describe() string {
	cpu := cpuModel()
	if cpu == "" {
		cpu = "model unknown"
	}
	kernel := "unknown"
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	return fmt.Sprintf("%d CPUs (%s), kernel %s, %s", runtime.NumCPU(), cpu, kernel, runtime.Version())
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Mount is the file system holding path: its type ("ext4", "tmpfs", "fuse.exfat"), its
// source and its mount point, from the longest matching mount point in
// /proc/self/mountinfo; "unknown" for each that cannot be found.
func Mount(p string) (fsType, source, mountPoint string) {
	fsType, source, mountPoint = "unknown", "unknown", "unknown"
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 2 {
			continue
		}
		mp := unescapeMount(a[4])
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, fsType, source, mountPoint = len(mp), b[0], unescapeMount(b[1]), mp
		}
	}
	return
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// Binary names the program at path by what it is, not where it lies: "local-ipam (this
// tree)" for a command of the module this program belongs to, "host-local v1.10.0" for a
// command of a module at a version, or the file's name with why it cannot tell.
func Binary(p string) string {
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return filepath.Base(p) + " (not a Go binary)"
	}
	name := path.Base(bi.Path)
	if own, ok := debug.ReadBuildInfo(); ok && bi.Main.Path == own.Main.Path && inModule(bi.Path, bi.Main.Path) {
		return name + " (this tree)"
	}
	if mod, ok := moduleOf(bi); ok && mod.Version != "" && mod.Version != "(devel)" {
		return name + " " + mod.Version
	}
	return name + " (version unknown)"
}

// Version is what a developer wants to know of the binary at path beyond its name: the
// Go version it was built with and its module at a version.
func Version(p string) string {
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return "not a Go binary"
	}
	mod, _ := moduleOf(bi)
	return strings.TrimSpace(bi.GoVersion + ", " + mod.Path + " " + mod.Version)
}

// moduleOf is the module that holds the binary's main package: the main module, or the
// dependency it was built from (a tool built with `go build module/path/cmd`).
func moduleOf(bi *buildinfo.BuildInfo) (debug.Module, bool) {
	if inModule(bi.Path, bi.Main.Path) {
		return bi.Main, true
	}
	for _, d := range bi.Deps {
		if inModule(bi.Path, d.Path) {
			return *d, true
		}
	}
	return bi.Main, false
}

func inModule(pkg, mod string) bool {
	return mod != "" && (pkg == mod || strings.HasPrefix(pkg, mod+"/"))
}

// Particular is what in report is particular to this machine or this run: the first of
// paths (a scratch directory, the directory of a binary) that report names, or else a
// date (2026-01-31) in it; "" when it names neither. A report meant for the documentation
// must give "".
func Particular(report string, paths ...string) string {
	for _, p := range paths {
		if strings.Contains(report, p) {
			return p
		}
	}
	return regexp.MustCompile(`\b20\d\d-\d\d-\d\d\b`).FindString(report)
}
