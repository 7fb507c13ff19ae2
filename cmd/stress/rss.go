package main

// Peak memory of one plugin call. A child's ru_maxrss is not only its own: exec folds the
// peak RSS of the address space it replaces into it, and Go starts children with vfork
// semantics (the child runs in the parent's address space until exec), so any direct child
// of this harness would report at least the harness's own peak. So the plugin is started by
// a middleman whose own small peak is then the floor of the measurement (the idea of
// cmd/bench's rss helper; that package is internal to cmd/bench): the tiny rsshelper
// command, built at start-up, or else this same binary re-executed with rssMarker set (a
// higher floor, and slow to start when it is a -race test binary).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// rssMarker in the environment makes this binary (or the test binary, see TestMain) act as
// the middleman. It is not passed on to the plugin.
const rssMarker = "LOCAL_IPAM_STRESS_RSS_HELPER"

// rssHelper is the middleman's command (setupRSSHelper): rsshelper, or this executable.
var (
	rssHelper      = []string{"/proc/self/exe"}
	rssHelperSetUp bool
	// rssSlowStart: the middleman is this binary, maybe a -race test binary that takes up
	// to a second to start; calls through it get that much more time before they are
	// killed (the time a call took is measured by the middleman, without its start).
	rssSlowStart bool
)

// setupRSSHelper builds rsshelper into dir with the go command and makes it the
// middleman; if it cannot, this executable is. It returns a warning in that case. Only the
// first call of a process does anything (dir must outlive the process's calls).
func setupRSSHelper(dir string) string {
	if rssHelperSetUp {
		return ""
	}
	rssHelperSetUp = true
	self, err := os.Executable()
	if err == nil {
		rssHelper = []string{self}
	}
	rssSlowStart = true
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "rsshelper")
	c := exec.Command(goCmd, "build", "-trimpath", "-o", out, "github.com/local-ipam/local-ipam/cmd/stress/rsshelper")
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	msg, err := c.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("could not build the RSS middleman (%v: %s); using this binary (higher floor)", err, strings.TrimSpace(string(msg)))
	}
	rssHelper, rssSlowStart = []string{out}, false
	return ""
}

// rssMain runs args[1] with this process's environment (less the marker) and fds 0-2,
// waits for it, and writes "<exit status> <signal> <child ru_maxrss KiB> <own VmHWM KiB>
// <the child's wall time, ns>" to fd 3. The harness kills the whole process group on
// timeout.
func rssMain(args []string) int {
	report := os.NewFile(3, "report")
	if len(args) != 2 || report == nil {
		os.Stderr.WriteString("rss middleman: usage: <plugin>, with fd 3 open for the report\n")
		return 2
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, rssMarker+"=") {
			env = append(env, kv)
		}
	}
	floor := vmHWM()
	var t0, t1 syscall.Timespec
	_ = clockMonotonic(&t0)
	pid, err := syscall.ForkExec(args[1], args[1:2], &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Stderr.WriteString("rss middleman: " + err.Error() + "\n")
		return 1
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		_, err = syscall.Wait4(pid, &ws, 0, &ru)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		os.Stderr.WriteString("rss middleman: wait: " + err.Error() + "\n")
		return 1
	}
	_ = clockMonotonic(&t1)
	elapsed := (t1.Sec-t0.Sec)*1e9 + (t1.Nsec - t0.Nsec)
	sig := 0
	if ws.Signaled() {
		sig = int(ws.Signal())
	}
	line := strconv.Itoa(ws.ExitStatus()) + " " + strconv.Itoa(sig) + " " +
		strconv.FormatInt(ru.Maxrss, 10) + " " + strconv.FormatInt(floor, 10) + " " + strconv.FormatInt(elapsed, 10)
	if _, err := report.WriteString(line); err != nil {
		return 1
	}
	return 0
}

// clockMonotonic reads CLOCK_MONOTONIC (the wall time of the plugin, from fork to exit).
func clockMonotonic(ts *syscall.Timespec) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(ts)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// vmHWM is this process's peak RSS so far, KiB (0 if unknown).
func vmHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.Index(s, "VmHWM:")
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+len("VmHWM:"):])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}
