// Command bench is local-ipam's exec-level benchmark: it runs local-ipam and the reference
// host-local side by side, each on its own copy of the same store, invoking the binaries
// exactly as a container runtime does (exec, CNI_* environment, network config on stdin), and
// prints medians, ratios and a PASS/FAIL check of local-ipam's performance targets.
//
//	go run ./test/bench -bin-dir bin                       # what `make bench` runs
//	go run ./test/bench -bin-dir bin -only '50k|rss' -runs 10
//	go run ./test/bench -bin-dir bin -local-ipam bin/host-local   # harness self-test
//
// Scenario groups (for -only; VERSION always runs, it is every ratio's denominator):
// version, empty, 50k, full16, walk20, parallel, rss, etcd.
//
// Exit status: 0 when every call behaved (a missed target is reported as FAIL but is
// informational); 1 when a call misbehaved (wrong exit status, bad output, a result other than
// host-local's, a store not in host-local's format) or the run could not be set up; 2 for bad
// flags; 3 with -strict when a target was missed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

type config struct {
	binDir, localIPAM, hostLocal, tmp string
	runs, minRuns                     int
	budget                            time.Duration
	only                              *regexp.Regexp
	keep, markdown, strict            bool
	allocs                            int
	parallel, parallelN, rssRuns      int
	timeout                           time.Duration
}

func main() {
	cniexec.ServeMiddleman() // when the rss middleman could not be built, this binary is it
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var groups = []struct {
	name string
	fn   func(*bench) error
}{
	{"version", (*bench).groupVersion},
	{"empty", (*bench).groupEmpty},
	{"50k", (*bench).group50k},
	{"full16", (*bench).groupFull},
	{"walk20", (*bench).groupWalk},
	{"parallel", (*bench).groupParallel},
	{"rss", (*bench).groupRSS},
	{"etcd", (*bench).groupEtcd},
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.binDir, "bin-dir", "bin", "directory holding the plugin binaries")
	fs.StringVar(&cfg.localIPAM, "local-ipam", "", "local-ipam binary (default <bin-dir>/local-ipam)")
	fs.StringVar(&cfg.hostLocal, "host-local", "", "host-local binary (default <bin-dir>/host-local)")
	fs.StringVar(&cfg.tmp, "tmp", os.TempDir(), "parent of the temporary stores; put it on the filesystem of /var/lib")
	fs.IntVar(&cfg.runs, "runs", 30, "timed runs per scenario per tool")
	fs.IntVar(&cfg.minRuns, "min-runs", 5, "runs a tool always gets, whatever the time budget")
	fs.DurationVar(&cfg.budget, "budget", 15*time.Second, "time budget per scenario per tool after -min-runs (caps host-local's slow scenarios)")
	only := fs.String("only", "", "run only the scenario groups matching this regexp (version, empty, 50k, full16, walk20, parallel, rss, etcd)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary stores")
	fs.BoolVar(&cfg.markdown, "markdown", false, "print the results as Markdown tables")
	fs.BoolVar(&cfg.strict, "strict", false, "exit 3 when a target is missed")
	fs.IntVar(&cfg.allocs, "allocs", 50000, "allocations in the big store")
	fs.IntVar(&cfg.parallel, "parallel", 8, "concurrent callers in the parallel scenario")
	fs.IntVar(&cfg.parallelN, "parallel-n", 1000, "calls in the parallel scenario")
	fs.IntVar(&cfg.rssRuns, "rss-runs", 5, "runs per tool for peak RSS")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "limit for one plugin call")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if cfg.runs < 1 || cfg.minRuns < 1 || cfg.allocs < 1 || cfg.parallel < 1 || cfg.parallelN < 1 || cfg.rssRuns < 1 {
		fmt.Fprintln(stderr, "bench: -runs, -min-runs, -allocs, -parallel, -parallel-n and -rss-runs must be positive")
		return 2
	}
	cfg.minRuns = min(cfg.minRuns, cfg.runs)
	var err error
	if cfg.only, err = regexp.Compile(*only); err != nil {
		fmt.Fprintf(stderr, "bench: -only: %v\n", err)
		return 2
	}
	if cfg.localIPAM == "" {
		cfg.localIPAM = filepath.Join(cfg.binDir, "local-ipam")
	}
	if cfg.hostLocal == "" {
		cfg.hostLocal = filepath.Join(cfg.binDir, "host-local")
	}

	liTool, err := newTool(li, cfg.localIPAM, cfg.timeout)
	if err == nil && liTool.typ != li {
		// Development: another binary stands in for local-ipam (e.g. host-local itself).
		defer fmt.Fprintf(stderr, "bench: note: the local-ipam slot runs %s\n", liTool.bin)
	}
	var hlTool *tool
	if err == nil {
		hlTool, err = newTool(hl, cfg.hostLocal, cfg.timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v (run `make build peers`, or point -local-ipam / -host-local at binaries)\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(cfg.tmp, 0o755); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	root, err := os.MkdirTemp(cfg.tmp, "local-ipam-bench-")
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if cfg.keep {
		defer fmt.Fprintf(stderr, "bench: stores kept in %s\n", root)
	} else {
		defer func() {
			fmt.Fprintf(stderr, "bench: removing %s\n", root)
			os.RemoveAll(root)
		}()
	}

	b := &bench{cfg: cfg, tools: []*tool{liTool, hlTool}, root: root, res: newResults(), log: stderr, ctx: ctx}
	started := time.Now()
	hdr := header(root, liTool, hlTool)
	for _, line := range hdr.warnings {
		fmt.Fprintln(stderr, "bench: warning: "+line)
	}

	var failures []string
	for _, g := range groups {
		if g.name != "version" && !cfg.only.MatchString(g.name) {
			continue
		}
		t0 := time.Now()
		b.logf("%s ...", g.name)
		if err := g.fn(b); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", g.name, err))
			b.logf("%s FAILED: %v", g.name, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		b.logf("%s done in %.1fs", g.name, time.Since(t0).Seconds())
	}
	hdr.elapsed = time.Since(started)

	missed := report(stdout, cfg, hdr, b.res, failures)
	switch {
	case len(failures) > 0:
		return 1
	case missed && cfg.strict:
		return 3
	}
	return 0
}
