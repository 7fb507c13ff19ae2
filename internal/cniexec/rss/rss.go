// Package rss is the middleman package cniexec uses to measure one execution's peak RSS
// (the body of rsshelper, and of a harness binary acting as the middleman).
//
// A child's ru_maxrss is not only its own: exec folds the high-water RSS of the address
// space being replaced into it, and Go starts children with vfork semantics (the child
// runs in the parent's address space until exec), so every direct child of a harness would
// report at least the harness's own peak (tens of MiB once it has built its models). So the
// plugin is started by a small middleman instead (rsshelper, about 2 MiB), whose own peak
// is then the floor of the measurement. It imports as little as possible: everything it
// touches raises that floor.
package rss

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// Main runs args[1] with the arguments args[2:], this process's environment (less marker, the variable that made
// a harness binary act as the middleman when rsshelper could not be built) and fds 0-2,
// waits for it, and writes "<exit status> <signal> <child ru_maxrss KiB> <own VmHWM KiB
// before the start> <the child's wall time, ns>" to fd 3. The exit status is -1 and signal
// non-zero when the child was killed. Main returns the middleman's own exit status:
// non-zero only when it could not do its job.
func Main(args []string, marker string) int {
	report := os.NewFile(3, "report")
	if len(args) < 2 || report == nil {
		os.Stderr.WriteString("rss middleman: usage: <plugin> [args...], with fd 3 open for the report\n")
		return 2
	}
	env := os.Environ()
	if marker != "" {
		env = env[:0:0]
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, marker+"=") {
				env = append(env, kv)
			}
		}
	}
	floor := HWM()
	var t0, t1 syscall.Timespec
	_ = clockMonotonic(&t0)
	pid, err := syscall.ForkExec(args[1], args[1:], &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
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

// clockMonotonic reads CLOCK_MONOTONIC without the time package's start-up cost.
func clockMonotonic(ts *syscall.Timespec) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(ts)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// HWM is this process's peak RSS so far, KiB (VmHWM in /proc/self/status), 0 if unknown.
func HWM() int64 {
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
