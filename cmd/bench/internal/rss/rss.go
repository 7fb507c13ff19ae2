// Package rss is the middleman the benchmark uses to measure a plugin's peak RSS.
//
// A child's ru_maxrss is not only its own: exec folds the high-water RSS of the address space
// being replaced into it, and Go starts children with vfork semantics (the child runs in the
// parent's address space until exec), so every direct child of the benchmark would report at
// least the benchmark's own peak RSS (tens of MiB once it has built a 65k-entry model). So the
// plugin is started by a small middleman instead, whose own RSS (about 2 MiB) is then the
// floor of the measurement. It imports as little as possible: everything it touches raises
// that floor.
package rss

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Marker is the environment variable that tells the benchmark binary to act as the middleman
// (the fallback when the dedicated helper cannot be built). It is not passed on to the plugin.
const Marker = "LOCAL_IPAM_BENCH_RSS_HELPER"

// Main runs argv[1] with this process's environment (less Marker) and fds 0-2, waits for it,
// and writes "<exit status> <child ru_maxrss KiB> <own VmHWM KiB before the start>" to fd 3.
// The exit status is -1 when the child was killed by a signal. Main returns the middleman's
// own exit status: non-zero only when it could not do its job.
func Main(args []string) int {
	report := os.NewFile(3, "report")
	if len(args) != 2 || report == nil {
		os.Stderr.WriteString("rss helper: usage: <plugin>, with fd 3 open for the report\n")
		return 2
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, Marker+"=") {
			env = append(env, kv)
		}
	}
	floor := HWM()
	pid, err := syscall.ForkExec(args[1], args[1:2], &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Stderr.WriteString("rss helper: " + err.Error() + "\n")
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
		os.Stderr.WriteString("rss helper: wait: " + err.Error() + "\n")
		return 1
	}
	if _, err := report.WriteString(strconv.Itoa(ws.ExitStatus()) + " " + strconv.FormatInt(ru.Maxrss, 10) + " " + strconv.FormatInt(floor, 10)); err != nil {
		return 1
	}
	return 0
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
