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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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

// CNIError is the spec's error object.
type CNIError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// Error parses stdout as a CNI error; ok is false when the call did not fail with one
// (a non-zero exit with anything else on stdout is never ok).
func (o Out) Error() (CNIError, bool) {
	var e CNIError
	if o.Exit == 0 || json.Unmarshal([]byte(o.Stdout), &e) != nil || e.Code == 0 || e.CNIVersion == "" {
		return e, false
	}
	return e, true
}

// ParseError checks that stdout is exactly one JSON object, the spec's error object with
// a non-zero code and a msg. cniVersion, which skel (and so host-local) leaves out, is
// checked only where present. It returns the object (as far as it decoded, also with an
// error) and its keys, sorted, for callers that want an exact set.
func ParseError(stdout string) (e CNIError, keys []string, err error) {
	dec := json.NewDecoder(strings.NewReader(stdout))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return e, nil, fmt.Errorf("stdout of a failed call is not a JSON object (%v)", err)
	}
	if dec.More() {
		return e, nil, errors.New("stdout of a failed call holds more than one JSON value")
	}
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		return e, keys, fmt.Errorf("stdout of a failed call is not a CNI error object (%v)", err)
	}
	if _, has := raw["cniVersion"]; has && e.CNIVersion == "" {
		return e, keys, errors.New("CNI error with an empty cniVersion")
	}
	if e.Code == 0 {
		return e, keys, errors.New("CNI error without a non-zero code")
	}
	if e.Msg == "" {
		return e, keys, errors.New("CNI error without msg")
	}
	return e, keys, nil
}

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

// Call is one CNI invocation.
type Call struct {
	Cmd    string   // CNI_COMMAND
	ID     string   // CNI_CONTAINERID ("" leaves it unset)
	IfName string   // CNI_IFNAME ("" leaves it unset)
	Args   string   // CNI_ARGS
	Netns  string   // CNI_NETNS ("" is FakeNetns, "-" leaves it unset)
	Path   string   // CNI_PATH ("" is the plugin's directory, "-" leaves it unset)
	Env    []string // more variables
	Conf   []byte   // stdin
	UID    int      // > 0: run as this uid and gid (the caller must be root), e.g. Nobody
	// Kill sends SIGKILL KillAfter after the start, as Options.Kill does (a crash at that
	// instant).
	Kill      bool
	KillAfter time.Duration
}

// Nobody is the uid and gid of the unprivileged user nobody, as a runtime that drops its
// privileges runs a plugin.
const Nobody = 65534

// FakeNetns is the CNI_NETNS of a Call that names none: a path that does not exist. An
// IPAM plugin only passes it through, and skel accepts a path it cannot open (it only
// refuses the plugin's own namespace).
const FakeNetns = "/var/run/netns/local-ipam-exec-test"

// CNIExec is CNI without a testing.TB, safe to call from any goroutine: it runs the
// plugin at path as a runtime does, with only the CNI variables of c (and PATH).
func CNIExec(path string, c Call) (Out, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Cmd}
	switch c.Netns {
	case "-":
	case "":
		env = append(env, "CNI_NETNS="+FakeNetns)
	default:
		env = append(env, "CNI_NETNS="+c.Netns)
	}
	switch c.Path {
	case "-":
	case "":
		env = append(env, "CNI_PATH="+filepath.Dir(path))
	default:
		env = append(env, "CNI_PATH="+c.Path)
	}
	if c.ID != "" {
		env = append(env, "CNI_CONTAINERID="+c.ID)
	}
	if c.IfName != "" {
		env = append(env, "CNI_IFNAME="+c.IfName)
	}
	if c.Args != "" {
		env = append(env, "CNI_ARGS="+c.Args)
	}
	opts := Options{Env: append(env, c.Env...), Stdin: c.Conf, Kill: c.Kill, KillAfter: c.KillAfter}
	if c.UID > 0 {
		opts.Cred = &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.UID)}
	}
	return Exec(context.Background(), path, opts)
}

// CNI executes the plugin at path as a runtime does (CNI_PATH: the plugin's directory);
// it fails the test when the plugin cannot be run or does not finish.
func CNI(t testing.TB, path string, c Call) Out {
	t.Helper()
	o, err := CNIExec(path, c)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// IPConfig is one address of a result.
type IPConfig struct {
	Address string `json:"address"`
	Gateway string `json:"gateway"`
}

// Result is the part of an ADD result the tests look at.
type Result struct {
	Raw        json.RawMessage `json:"-"` // the whole result, as printed
	CNIVersion string          `json:"cniVersion"`
	IPs        []IPConfig      `json:"ips"`
	IP4        *LegacyIP       `json:"ip4"` // results before 0.3.0
	IP6        *LegacyIP       `json:"ip6"`
}

// LegacyIP is the ip4 or ip6 object of a result before 0.3.0.
type LegacyIP struct {
	IP      string `json:"ip"`
	Gateway string `json:"gateway"`
}

// ParseResult parses stdout as an ADD result of any version.
func ParseResult(stdout string) (Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		return r, fmt.Errorf("result is not JSON: %v: %q", err, stdout)
	}
	r.Raw = json.RawMessage(stdout)
	return r, nil
}

// Addrs lists the result's addresses (CIDR notation), those of ip4 and ip6 last.
func (r Result) Addrs() []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address)
	}
	if r.IP4 != nil {
		out = append(out, r.IP4.IP)
	}
	if r.IP6 != nil {
		out = append(out, r.IP6.IP)
	}
	return out
}

// Result parses an ADD's result; it fails the test unless the call succeeded with one.
func (o Out) Result(t testing.TB) Result {
	t.Helper()
	r, err := ParseResult(o.Stdout)
	if o.Exit != 0 || err != nil {
		t.Fatalf("not a result: %s", o)
	}
	return r
}

// Addrs parses an ADD's result and returns its addresses (CIDR notation).
func (o Out) Addrs(t testing.TB) []string {
	t.Helper()
	return o.Result(t).Addrs()
}
