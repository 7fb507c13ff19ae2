// Command rsshelper is the stress suite's middleman for peak-RSS measurements (see
// cmd/stress/rss.go): it runs the plugin named by its argument with its own environment and
// fds 0-2, waits for it, and writes "<exit status> <signal> <child ru_maxrss KiB> <own VmHWM
// KiB> <the child's wall time, ns>" to fd 3. The suite builds it into its scratch directory at run time; it imports as
// little as possible, since its own peak RSS is the floor of every measurement.
package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

func main() {
	report := os.NewFile(3, "report")
	if len(os.Args) != 2 || report == nil {
		os.Stderr.WriteString("rsshelper: usage: rsshelper <plugin>, with fd 3 open for the report\n")
		os.Exit(2)
	}
	floor := vmHWM()
	var t0, t1 syscall.Timespec
	_ = clockMonotonic(&t0)
	pid, err := syscall.ForkExec(os.Args[1], os.Args[1:2], &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Stderr.WriteString("rsshelper: " + err.Error() + "\n")
		os.Exit(1)
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
		os.Stderr.WriteString("rsshelper: wait: " + err.Error() + "\n")
		os.Exit(1)
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
		os.Exit(1)
	}
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
