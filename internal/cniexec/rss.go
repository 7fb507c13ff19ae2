package cniexec

// Peak memory of one execution. A child's ru_maxrss is not only its own: exec folds the
// high-water RSS of the address space being replaced into it, and Go starts children with
// vfork semantics (the child runs in the parent's address space until exec), so every
// direct child of a harness would report at least the harness's own peak. So the binary is
// started by a middleman (package rss) whose own small peak is then the floor of the
// measurement: the tiny rsshelper command, built at run time, or else the harness binary
// itself re-executed with MiddlemanEnv set (a higher floor).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec/rss"
)

// MiddlemanEnv set to 1 makes a harness binary act as the middleman (ServeMiddleman). The
// middleman takes it out of the environment of the binary it starts.
const MiddlemanEnv = "LOCAL_IPAM_RSS_MIDDLEMAN"

// HelperPackage is the main package of the dedicated middleman.
const HelperPackage = "github.com/local-ipam/local-ipam/internal/cniexec/rsshelper"

// slowStart is the extra time a call through a SlowStart middleman gets before it is
// killed.
const slowStart = 2 * time.Second

// Middleman is the command that starts a measured binary and reports its peak RSS.
type Middleman struct {
	Path string
	Env  []string // added to the environment of the execution
	// SlowStart: the harness binary re-executed, maybe a -race test binary that takes up to
	// a second to start (the time a call took is measured by the middleman, without that).
	SlowStart bool
}

// ServeMiddleman makes this process the middleman, and exits, when it was started as one
// (MiddlemanEnv=1); otherwise it returns. A harness that may use SelfMiddleman calls it
// first in main (and in TestMain).
func ServeMiddleman() {
	if os.Getenv(MiddlemanEnv) == "1" {
		os.Exit(rss.Main(os.Args, MiddlemanEnv))
	}
}

// SelfMiddleman is this executable as the middleman (its main calls ServeMiddleman).
func SelfMiddleman() *Middleman {
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	return &Middleman{Path: self, Env: []string{MiddlemanEnv + "=1"}, SlowStart: true}
}

// BuildMiddleman builds rsshelper into dir with the go command and returns it. When it
// cannot, it returns SelfMiddleman and a warning saying why.
func BuildMiddleman(dir string) (*Middleman, string) {
	out := filepath.Join(dir, "rsshelper")
	if err := GoBuild(out, HelperPackage, "CGO_ENABLED=0", "-trimpath"); err != nil {
		return SelfMiddleman(), fmt.Sprintf("could not build the RSS middleman (%v); using this binary (higher floor)", err)
	}
	return &Middleman{Path: out}, ""
}

// GoBuild builds the main package pkg into out with the go command (from PATH, else this
// toolchain's), with env added to this process's environment and the build flags given;
// the error holds what the command printed.
func GoBuild(out, pkg, env string, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	c := exec.Command(GoCmd(), args...)
	if env != "" {
		c.Env = append(os.Environ(), env)
	}
	if msg, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", pkg, err, strings.TrimSpace(string(msg)))
	}
	return nil
}

// GoCmd is the go command: from PATH, else this toolchain's.
func GoCmd() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// env is the middleman's environment: env (nil: this process's) and m.Env.
func (m *Middleman) env(env []string) []string {
	if len(m.Env) == 0 {
		return env
	}
	if env == nil {
		env = os.Environ()
	}
	return append(append(make([]string, 0, len(env)+len(m.Env)), env...), m.Env...)
}

// readReport takes the measured binary's exit, signal, peak RSS and run time from the
// middleman's report (see rss.Main).
func (o *Out) readReport(rep []byte) error {
	if o.Exit != 0 {
		return fmt.Errorf("middleman exit %d, report %q", o.Exit, rep)
	}
	var code, sig int
	var maxrss, floor, ns int64
	if _, err := fmt.Sscan(string(rep), &code, &sig, &maxrss, &floor, &ns); err != nil {
		return fmt.Errorf("report %q: %v", rep, err)
	}
	o.Exit, o.Signal, o.MaxRSS, o.RSSFloor, o.Took = code, syscall.Signal(sig), maxrss, floor, time.Duration(ns)
	if sig != 0 {
		o.Exit = -1
	}
	return nil
}
