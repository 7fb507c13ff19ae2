// Package cniexec runs a built binary as a container runtime (or an operator) does, for
// every harness of the project: the exec-level tests of cmd/*, the compat and e2e suites,
// the benchmark and the stress suite. One function, Exec, runs it (environment, stdin,
// arguments, a timeout that kills its process group, and optionally a SIGKILL after a
// delay, another uid, or a peak-RSS measurement through a middleman); Call and CNIExec
// build the CNI environment; ParseError and ParseResult read the error object and the
// ADD result back. Bin, Run and CNI are the testing.TB wrappers of the tests, which find
// the binaries in LOCAL_IPAM_BIN_DIR (default <repo root>/bin, made by `make build peers`).
package cniexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Out is what one execution left.
type Out struct {
	Stdout, Stderr string
	Exit           int            // exit status; -1 when a signal killed it
	Signal         syscall.Signal // the signal that killed it, 0 if none
	Took           time.Duration  // start to exit, wall clock (with a middleman: as it measured)
	TimedOut       bool           // killed by Exec at Limit, or when its context ended: it hung
	Limit          time.Duration  // the timeout it ran under
	MaxRSS         int64          // peak RSS, KiB (ru_maxrss; with a middleman, the binary's own)
	RSSFloor       int64          // KiB, with a middleman: its own peak, the floor of MaxRSS
}

func (o Out) String() string {
	return fmt.Sprintf("exit=%d stdout=%q stderr=%q", o.Exit, strings.TrimSpace(o.Stdout), strings.TrimSpace(o.Stderr))
}

// OK reports whether the execution exited 0.
func (o Out) OK() bool { return o.Exit == 0 }

// DefaultTimeout bounds an execution whose Options name no timeout.
const DefaultTimeout = 60 * time.Second

// waitDelay is how long Exec still waits for stdout and stderr to close once the process
// has exited or been killed (something it started may hold them).
const waitDelay = 2 * time.Second

// Options say how Exec runs a binary. The zero value runs it without arguments, with this
// process's environment and an empty stdin, bounded by DefaultTimeout.
type Options struct {
	Args  []string // after the binary's name
	Env   []string // exactly this environment; nil: this process's
	Stdin []byte
	// Timeout bounds the execution (0: DefaultTimeout). When it expires, or ctx ends, the
	// process group is killed with SIGKILL: Out.TimedOut, and an error.
	Timeout time.Duration
	// Kill sends SIGKILL KillAfter after the start (a crash at that instant): Out.Signal,
	// no error.
	Kill      bool
	KillAfter time.Duration
	// Cred, when set, runs the binary as that uid and gid (the caller must be root).
	Cred *syscall.Credential
	// RSS, when set, starts the binary through this peak-RSS middleman: Out.MaxRSS is then
	// the binary's own peak and Out.Took its run as the middleman measured it.
	RSS *Middleman
}

// Exec runs the binary at path (a name without a slash is looked up in PATH) as opts say
// and returns what it left. A non-zero exit or a death by a signal is no error (Out.Exit,
// Out.Signal). The error says why it could not be run, that it did not finish within the
// timeout (Out.TimedOut; the error wraps context.DeadlineExceeded) or was stopped because
// ctx ended, or that the middleman did not report. Any goroutine may call it.
func Exec(ctx context.Context, path string, opts Options) (Out, error) {
	limit := opts.Timeout
	if limit <= 0 {
		limit = DefaultTimeout
	}
	timeout := limit
	if opts.RSS != nil && opts.RSS.SlowStart {
		timeout += slowStart
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	name := filepath.Base(path)
	cmd := exec.Command(path, opts.Args...)
	cmd.Env = opts.Env
	var report, reportW *os.File
	if m := opts.RSS; m != nil {
		var err error
		if report, reportW, err = os.Pipe(); err != nil {
			return Out{Exit: -1, Limit: limit}, err
		}
		defer report.Close()
		defer reportW.Close()
		cmd = exec.Command(m.Path, append([]string{path}, opts.Args...)...)
		cmd.Env = m.env(opts.Env)
		cmd.ExtraFiles = []*os.File{reportW} // fd 3: the report
	}
	cmd.Stdin = bytes.NewReader(opts.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A process group of its own, so that a timeout kills everything it started (the
	// middleman and the binary under it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: opts.Cred}
	cmd.WaitDelay = waitDelay

	o := Out{Exit: -1, Limit: limit}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return o, fmt.Errorf("running %s %v: %w", name, opts.Args, err)
	}
	var timedOut atomic.Bool
	stopKiller := context.AfterFunc(ctx, func() {
		timedOut.Store(true)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	defer stopKiller()
	if reportW != nil {
		// Close our copy of the write end, so the read below ends when the middleman exits.
		reportW.Close()
	}
	if opts.Kill {
		sleepPrecise(opts.KillAfter)
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	var rep []byte
	if report != nil {
		rep, _ = io.ReadAll(report)
	}
	err := cmd.Wait()
	o.Took = time.Since(start)
	stopKiller()
	o.Stdout, o.Stderr = stdout.String(), stderr.String()
	o.TimedOut = timedOut.Load()
	if ps := cmd.ProcessState; ps != nil {
		o.Exit = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			o.Signal = ws.Signal()
		}
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			o.MaxRSS = ru.Maxrss
		}
	}
	switch {
	case o.TimedOut && parent.Err() != nil:
		return o, fmt.Errorf("%s %v stopped: %w (%s)", name, opts.Args, parent.Err(), o)
	case o.TimedOut:
		return o, fmt.Errorf("%s %v did not finish within %v (%s): %w", name, opts.Args, limit, o, context.DeadlineExceeded)
	case err != nil:
		var ee *exec.ExitError
		if !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
			return o, fmt.Errorf("running %s %v: %v (%s)", name, opts.Args, err, o)
		}
	}
	if report != nil {
		if err := o.readReport(rep); err != nil {
			return o, fmt.Errorf("running %s %v through the rss middleman %s: %v (%s)", name, opts.Args, opts.RSS.Path, err, o)
		}
	}
	return o, nil
}

// sleepPrecise waits d: a busy wait below 200 µs, where timers are too coarse.
func sleepPrecise(d time.Duration) {
	if d <= 0 {
		return
	}
	if d >= 200*time.Microsecond {
		time.Sleep(d)
		return
	}
	t0 := time.Now()
	for time.Since(t0) < d {
	}
}

// Run executes path with exactly env (plus PATH), stdin and args; it fails the test when
// the binary cannot be run or does not finish.
func Run(t testing.TB, path string, env []string, stdin []byte, args ...string) Out {
	t.Helper()
	o, err := Exec(context.Background(), path, Options{Env: append([]string{"PATH=" + os.Getenv("PATH")}, env...), Stdin: stdin, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return o
}
