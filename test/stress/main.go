// Command stress tries hard to break local-ipam's reliability claims: that it never hands
// out one address twice, never loses a record, never writes outside
// <dataDir>/<network>/, and always answers with a CNI error rather than a crash. It is a
// black-box, exec-level suite: every call execs the built binary as a container runtime
// does (CNI_* environment, network config on stdin), under load, SIGKILL at random
// instants, full, read-only and forbidden file systems, a damaged store and hostile input,
// and checks invariants from the outside (results, exit status, the files on disk).
//
// The same scenarios run against the reference host-local v1.10.0 side by side: its
// violations are expected and only reported; local-ipam's make the exit status non-zero.
//
//	go run ./test/stress -bin-dir bin                      # the full suite (make stress)
//	go run ./test/stress -bin-dir bin -short               # the short version (go test runs it)
//	go run ./test/stress -bin-dir bin -only 'crash|damage' -seed 42 -keep
//	go run ./test/stress -bin-dir bin -markdown            # the tables of docs/RELIABILITY.md
//
// Scenarios (for -only): load-16, load-26, load-dual, crash-random, crash-io,
// fault-enospc, fault-readonly, fault-notdir, fault-perm, damage, hostile, load-etcd,
// crash-etcd. Those that need root (mounts, fanotify, setuid, chattr) are reported as
// skipped without it. The etcd ones (local-ipam only: not applicable to host-local) run
// against one etcd member the suite embeds, started when the first of them runs.
//
// Exit status: 0 when local-ipam showed no violation; 1 when it did, or when the harness
// itself failed (a scenario could not be set up); 2 for bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

func main() {
	cniexec.ServeMiddleman() // when rsshelper could not be built, this binary is the middleman
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	binDir    string
	plugin    string // local-ipam binary
	hostLocal string // host-local binary; "none" to skip
	tmp       string
	short     bool
	only      *regexp.Regexp
	seed      uint64
	markdown  bool
	keep      bool
	verbose   bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("stress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.binDir, "bin-dir", "bin", "directory holding local-ipam and host-local")
	fs.StringVar(&o.plugin, "plugin", "", "the local-ipam binary (default <bin-dir>/local-ipam)")
	fs.StringVar(&o.hostLocal, "host-local", "", `the host-local binary run side by side (default <bin-dir>/host-local; "none" to skip)`)
	fs.StringVar(&o.tmp, "tmp", os.TempDir(), "parent of the scratch directories (the file system under test)")
	fs.BoolVar(&o.short, "short", false, "the short version of every scenario (what go test runs)")
	only := fs.String("only", "", "run only the scenarios whose name matches this regexp")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed (0: from the clock; printed, so a run can be repeated)")
	fs.BoolVar(&o.markdown, "markdown", false, "print the report as Markdown")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directories")
	fs.BoolVar(&o.verbose, "v", false, "log every scenario's progress")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "stress: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var err error
	if o.only, err = regexp.Compile(*only); err != nil {
		fmt.Fprintf(stderr, "stress: -only: %v\n", err)
		return 2
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.plugin == "" {
		o.plugin = filepath.Join(o.binDir, "local-ipam")
	}
	if o.hostLocal == "" {
		o.hostLocal = filepath.Join(o.binDir, "host-local")
	}
	li, err := newPlugin(slotLocal, o.plugin)
	if err != nil {
		fmt.Fprintf(stderr, "stress: %v (run `make build peers`, or point -plugin at the binary)\n", err)
		return 1
	}
	plugins := []*plugin{li}
	if o.hostLocal != "none" {
		hl, err := newPlugin(slotHost, o.hostLocal)
		if err != nil {
			fmt.Fprintf(stderr, "stress: %v (run `make peers`, or -host-local none)\n", err)
			return 1
		}
		plugins = append(plugins, hl)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "stress: "+format+"\n", a...)
	}
	s, err := newSuite(o, plugins, logf)
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer s.cleanup()
	rep := s.run(ctx)
	if o.markdown {
		rep.markdown(stdout)
	} else {
		rep.text(stdout)
	}
	if rep.localFailed() {
		return 1
	}
	return 0
}

// suite runs the selected scenarios against each plugin.
type suite struct {
	o       options
	plugins []*plugin
	root    string
	etcd    *etcdServer // started by the first etcd scenario
	logf    func(string, ...any)
}

func newSuite(o options, plugins []*plugin, logf func(string, ...any)) (*suite, error) {
	if err := os.MkdirAll(o.tmp, 0o755); err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(o.tmp, "local-ipam-stress-")
	if err != nil {
		return nil, err
	}
	// Traversable by the unprivileged uid of fault-perm (the data dirs themselves are not
	// writable by it).
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	if warn := setupRSSHelper(root); warn != "" {
		logf("warning: %s", warn)
	}
	return &suite{o: o, plugins: plugins, root: root, etcd: newEtcdServer(filepath.Join(root, "etcd")), logf: logf}, nil
}

func (s *suite) cleanup() {
	s.etcd.close()
	if s.o.keep {
		s.logf("scratch directories kept in %s", s.root)
		return
	}
	unmountAll(s.root)
	clearImmutable(s.root)
	if err := os.RemoveAll(s.root); err != nil {
		s.logf("cannot remove %s: %v", s.root, err)
	}
}

// run runs every selected scenario, one plugin after the other (each on its own scratch
// directory), and gathers the results.
func (s *suite) run(ctx context.Context) *report {
	started := time.Now()
	rep := &report{root: s.root, run: describeRun(s), seed: s.o.seed, short: s.o.short}
	for i, sc := range scenarios {
		if !s.o.only.MatchString(sc.name) {
			continue
		}
		row := reportRow{sc: sc}
		for j, p := range s.plugins {
			if ctx.Err() != nil {
				break
			}
			res := s.runOne(ctx, sc, p, uint64(i*16+j))
			row.res = append(row.res, res)
		}
		rep.rows = append(rep.rows, row)
		if ctx.Err() != nil {
			rep.interrupted = true
			break
		}
	}
	rep.elapsed = time.Since(started)
	return rep
}

// runOne runs one scenario against one plugin in a scratch directory of its own.
func (s *suite) runOne(ctx context.Context, sc scenario, p *plugin, salt uint64) *result {
	dir := filepath.Join(s.root, sc.name, p.slot)
	s.logf("%-14s %-10s ...", sc.name, p.slot)
	var logf func(string, ...any)
	if s.o.verbose {
		logf = func(format string, a ...any) {
			s.logf("%-14s %-10s "+format, append([]any{sc.name, p.slot}, a...)...)
		}
	}
	res := runScenario(ctx, sc, p, dir, s.root, s.etcd, s.o.short, s.o.seed, salt, logf)
	status := fmt.Sprintf("%d ops, %d faults, %d violations", res.ops.Load(), res.faults.Load(), res.violationCount())
	if res.err != nil {
		status += ", HARNESS ERROR: " + res.err.Error()
	}
	if res.skipped != "" {
		status = "skipped: " + res.skipped
	}
	if res.notApplicable != "" {
		status = "not applicable: " + res.notApplicable
	}
	s.logf("%-14s %-10s %s in %.1fs", sc.name, p.slot, status, res.elapsed.Seconds())
	return res
}

// runScenario runs sc against p in dir (under root, which must be traversable by every
// uid); etcd is the member its etcd scenarios use (nil: none). A harness failure (set-up impossible, a binary that cannot be started, a panic of
// the harness) is the result's err; what the plugin did wrong is its violations.
func runScenario(ctx context.Context, sc scenario, p *plugin, dir, root string, etcd *etcdServer, short bool, seed, salt uint64, logf func(string, ...any)) *result {
	res := &result{plugin: p.slot}
	if sc.localOnly != "" && !p.isLocal() {
		res.notApplicable = sc.localOnly
		return res
	}
	if sc.needsRoot != "" && os.Geteuid() != 0 {
		res.skipped = "needs root (" + sc.needsRoot + ")"
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.err = err
		return res
	}
	chmodUp(dir, root)
	if logf == nil {
		logf = func(string, ...any) {}
	}
	x := &job{
		Context: ctx, p: p, name: sc.name, dir: dir, etcd: etcd, short: short, res: res,
		rng:  rand.New(rand.NewPCG(seed, salt)),
		seed: seed ^ salt*0x9e3779b97f4a7c15,
		logf: logf,
	}
	t0 := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				res.err = fmt.Errorf("harness panic: %v", r)
			}
		}()
		if err := sc.run(x); err != nil {
			res.err = err
		}
	}()
	res.elapsed = time.Since(t0)
	return res
}

// chmodUp makes every directory from root down to dir traversable.
func chmodUp(dir, root string) {
	for d := dir; strings.HasPrefix(d, root) && d != root; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
}
