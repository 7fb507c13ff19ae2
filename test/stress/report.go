package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/machine"
)

// scenario is one row of the table.
type scenario struct {
	name      string
	about     string // what it does, one line
	needsRoot string // non-empty: why it needs root (skipped without)
	localOnly string // non-empty: why it does not apply to host-local
	run       func(x *job) error
}

// scenarios in the order they run and are reported.
var scenarios = []scenario{
	{name: "load-16", about: "32 processes at once, mixed ADD/DEL/CHECK (and repeated ADD) on one network, a roomy /16", run: loadScenario(load16)},
	{name: "load-26", about: "32 processes at once on a /26 that runs full (128 attachments for 61 addresses)", run: loadScenario(load26)},
	{name: "load-dual", about: "32 processes at once, two range sets: a /26 that runs full and an IPv6 /64 (every failed ADD must give its IPv6 address back)", run: loadScenario(loadDual)},
	{name: "crash-random", about: "ADD/DEL/CHECK processes (6 at a time, on an IPv4 /26 + IPv6 /64 network) SIGKILLed at random instants, 1 µs to 3 ms after exec; the runtime DELs every container whose ADD was killed or failed", run: crashRandom},
	{name: "crash-io", about: "ADD/DEL/CHECK processes SIGKILLed while blocked in their k-th open, read or write of a store file (fanotify permission and pre-content events): every file operation is a crash point", needsRoot: "fanotify, bind mount", run: crashIO},
	{name: "fault-enospc", about: "data dir on a tiny tmpfs: 0, 1, 2, ... pages or no inodes left at the first ADD of a network, an ADD into a store whose index must be rebuilt, a DEL", needsRoot: "tmpfs mount", run: faultENOSPC},
	{name: "fault-readonly", about: "data dir on a tmpfs remounted read-only, then read-write again", needsRoot: "tmpfs mount", run: faultReadOnly},
	{name: "fault-notdir", about: "the data dir (or a parent of it) is a regular file", run: faultNotDir},
	{name: "fault-perm", about: "the plugin as uid 65534 on root's 0755 data dir; chattr +i on the network directory and on a record", needsRoot: "setuid, chattr", run: faultPerm},
	{name: "damage", about: "a damaged store: empty, garbage and torn records, a directory, symlink, FIFO or 256 MiB file named like an address, symlinked network dir, lock, cursor and index, missing or corrupt index", run: damageScenario},
	{name: "hostile", about: "hostile input: malformed, 10 MB and deeply nested JSON, wrong types, bad CIDRs, huge IPv6 ranges, bad CNI_ARGS, missing environment, resolvConf on a device", run: hostileScenario},
	{name: "load-etcd", about: "the load scenario on a cluster-wide pool in etcd (an IPv4 /26 that runs full + an IPv6 /64): 32 processes spread over 4 machines (store nodes), the reservations read with local-ipam list", localOnly: noEtcd, run: loadScenario(loadEtcd)},
	{name: "crash-etcd", about: "ADD/DEL/CHECK processes (8 at a time, over 4 machines, on an etcd pool: IPv4 /26 + IPv6 /64) SIGKILLed at random instants, 1 µs to 20 ms after exec; the runtime DELs every container whose ADD was killed or failed", localOnly: noEtcd, run: crashEtcd},
}

// noEtcd is why the etcd scenarios do not apply to host-local.
const noEtcd = "host-local has no etcd store"

// job is one scenario run against one plugin.
type job struct {
	context.Context
	p     *plugin
	name  string // the scenario's
	dir   string // scratch directory of this (scenario, plugin)
	etcd  *etcdServer
	short bool
	rng   *rand.Rand // for the scenario's own goroutine; workers make their own from seed
	seed  uint64
	res   *result
	logf  func(string, ...any)
}

// worker returns an independent random source for worker i.
func (x *job) worker(i int) *rand.Rand {
	return rand.New(rand.NewPCG(x.seed, uint64(i)+1000))
}

// violate records an invariant violation: it must name the address or file, and why.
func (x *job) violate(format string, a ...any) {
	x.res.mu.Lock()
	defer x.res.mu.Unlock()
	x.res.violations = append(x.res.violations, fmt.Sprintf(format, a...))
}

// violateOnce records a violation once per key: one damaged file found again at every
// later check is one violation.
func (x *job) violateOnce(key, format string, a ...any) {
	x.res.mu.Lock()
	defer x.res.mu.Unlock()
	if x.res.seen == nil {
		x.res.seen = map[string]bool{}
	}
	if x.res.seen[key] {
		return
	}
	x.res.seen[key] = true
	x.res.violations = append(x.res.violations, fmt.Sprintf(format, a...))
}

// note records an observation for the table's notes column.
func (x *job) note(format string, a ...any) {
	x.res.mu.Lock()
	defer x.res.mu.Unlock()
	x.res.notes = append(x.res.notes, fmt.Sprintf(format, a...))
}

// detail records an outcome for the detailed list (not the table).
func (x *job) detail(format string, a ...any) {
	x.res.mu.Lock()
	defer x.res.mu.Unlock()
	x.res.details = append(x.res.details, fmt.Sprintf(format, a...))
}

func (x *job) fault(n int) { x.res.faults.Add(int64(n)) }

// isLocal: the plugin under test is local-ipam (its documented outcomes are checked);
// otherwise the reference host-local (only the universal invariants are).
func (x *job) isLocal() bool { return x.p.slot == slotLocal }

// result is what one scenario found with one plugin.
type result struct {
	plugin     string
	ops        atomic.Int64 // plugin calls
	faults     atomic.Int64 // faults injected (kills that landed, full disks, damaged files, hostile inputs)
	mu         sync.Mutex
	violations []string
	seen       map[string]bool // violateOnce keys
	notes      []string
	details    []string
	skipped    string
	// notApplicable: the scenario does not apply to this plugin (why).
	notApplicable string
	err           error // the harness could not run the scenario
	elapsed       time.Duration
}

func (r *result) violationCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.violations)
}

type reportRow struct {
	sc  scenario
	res []*result // one per plugin, local-ipam first
}

type report struct {
	root        string // the scratch directory, shown as <scratch> in the report
	run         runInfo
	seed        uint64
	short       bool
	rows        []reportRow
	elapsed     time.Duration
	interrupted bool
}

// localFailed: local-ipam violated an invariant, or a scenario could not run.
func (r *report) localFailed() bool {
	if r.interrupted {
		return true
	}
	for _, row := range r.rows {
		for _, res := range row.res {
			if res.err != nil || (res.plugin == slotLocal && res.violationCount() > 0) {
				return true
			}
		}
	}
	return false
}

// runInfo is what the report's header says of the machine and the binaries.
type runInfo struct {
	machine string // internal/machine's words, the uid and the load
	fsType  string // the scratch directory's file system
	bins    []binInfo
}

// binInfo is the binary of one slot: by name and version, and where it is.
type binInfo struct{ slot, name, path, version string }

func describeRun(s *suite) runInfo {
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	h := runInfo{machine: fmt.Sprintf("%s, running as uid %d; load average at the start %s", machine.Describe(), os.Geteuid(), load)}
	h.fsType, _, _ = machine.Mount(s.root)
	for _, p := range s.plugins {
		version := machine.Version(p.bin)
		if p.isLocal() {
			if o, err := cniexec.Exec(context.Background(), p.bin, cniexec.Options{Args: []string{"version"}}); err == nil && o.OK() {
				version = strings.TrimSpace(strings.SplitN(o.Stdout, "\n", 2)[0])
			}
		}
		h.bins = append(h.bins, binInfo{p.slot, machine.Binary(p.bin), p.bin, version})
	}
	return h
}

// header is the report's header: with md, the machine and binaries in words only (it goes
// into the documentation); otherwise with the paths of the scratch directory and binaries.
func (r *report) header(md bool) []string {
	h := []string{"machine: " + r.run.machine}
	if md {
		h = append(h, "scratch: a temporary directory on "+r.run.fsType)
	} else {
		h = append(h, fmt.Sprintf("scratch: %s (%s)", r.root, r.run.fsType))
	}
	for _, b := range r.run.bins {
		if md {
			h = append(h, fmt.Sprintf("%s: %s", b.slot, b.name))
		} else {
			h = append(h, fmt.Sprintf("%s: %s (%s)", b.slot, b.path, b.version))
		}
	}
	return h
}

func fsName(t int64) string {
	switch t {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs type %#x", t)
}

func (r *report) mode() string {
	if r.short {
		return "short"
	}
	return "full"
}

// text prints the report: the violations found, then the table, which ends with the
// totals per plugin.
func (r *report) text(w io.Writer) {
	fmt.Fprintf(w, "local-ipam stress (%s run, seed %d): %.0fs\n", r.mode(), r.seed, r.elapsed.Seconds())
	for _, h := range r.header(false) {
		fmt.Fprintln(w, "  "+h)
	}
	for _, row := range r.rows {
		for _, res := range row.res {
			if res.err != nil {
				fmt.Fprintf(w, "\n%s / %s: HARNESS ERROR: %s\n", row.sc.name, res.plugin, r.tidy(res.err.Error()))
			}
			if n := res.violationCount(); n > 0 {
				fmt.Fprintf(w, "\n%s / %s: %d violation(s)\n", row.sc.name, res.plugin, n)
				for _, v := range capList(res.violations, 25) {
					fmt.Fprintln(w, "  - "+r.tidy(v))
				}
			}
		}
	}
	if r.interrupted {
		fmt.Fprintln(w, "\nINTERRUPTED")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-14s %-10s %7s %7s %10s %7s  %s\n", "scenario", "plugin", "ops", "faults", "violations", "time", "notes")
	tot := r.totals()
	for _, row := range r.rows {
		for i, res := range row.res {
			name := row.sc.name
			if i > 0 {
				name = ""
			}
			ops, faults, viol := res.ops.Load(), res.faults.Load(), int64(res.violationCount())
			v := fmt.Sprint(viol)
			switch {
			case res.skipped != "":
				fmt.Fprintf(w, "%-14s %-10s %7s %7s %10s %7s  skipped: %s\n", name, res.plugin, "-", "-", "-", "-", res.skipped)
				continue
			case res.notApplicable != "":
				fmt.Fprintf(w, "%-14s %-10s %7s %7s %10s %7s  not applicable: %s\n", name, res.plugin, "-", "-", "-", "-", res.notApplicable)
				continue
			case res.err != nil:
				v = "ERROR"
			}
			fmt.Fprintf(w, "%-14s %-10s %7d %7d %10s %6.1fs  %s\n", name, res.plugin, ops, faults, v, res.elapsed.Seconds(), r.tidy(strings.Join(res.notes, "; ")))
		}
	}
	for _, p := range []string{slotLocal, slotHost} {
		if t := tot[p]; t != nil {
			fmt.Fprintf(w, "%-14s %-10s %7d %7d %10d\n", "TOTAL", p, t[0], t[1], t[2])
		}
	}
}

// totals sums operations, faults and violations per plugin, over every scenario.
func (r *report) totals() map[string]*[3]int64 {
	tot := map[string]*[3]int64{}
	for _, row := range r.rows {
		for _, res := range row.res {
			t := tot[res.plugin]
			if t == nil {
				t = new([3]int64)
				tot[res.plugin] = t
			}
			t[0] += res.ops.Load()
			t[1] += res.faults.Load()
			t[2] += int64(res.violationCount())
		}
	}
	return tot
}

// markdown prints the report as docs/RELIABILITY.md shows it.
func (r *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "- %s run, seed %d, took %.0fs\n", r.mode(), r.seed, r.elapsed.Seconds())
	for _, h := range r.header(true) {
		fmt.Fprintln(w, "- "+h)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | plugin | operations | faults injected | invariant violations | notes |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | --- |")
	tot := r.totals()
	for _, row := range r.rows {
		for i, res := range row.res {
			name := "`" + row.sc.name + "`"
			if i > 0 {
				name = ""
			}
			ops, faults, viol := res.ops.Load(), res.faults.Load(), int64(res.violationCount())
			switch {
			case res.skipped != "":
				fmt.Fprintf(w, "| %s | %s | - | - | - | skipped: %s |\n", name, res.plugin, res.skipped)
			case res.notApplicable != "":
				fmt.Fprintf(w, "| %s | %s | - | - | - | not applicable: %s |\n", name, res.plugin, res.notApplicable)
			case res.err != nil:
				fmt.Fprintf(w, "| %s | %s | %d | %d | ERROR | %s |\n", name, res.plugin, ops, faults, r.md((res.err.Error())))
			default:
				vs := fmt.Sprint(viol)
				if viol > 0 {
					vs = "**" + vs + "**"
				}
				fmt.Fprintf(w, "| %s | %s | %d | %d | %s | %s |\n", name, res.plugin, ops, faults, vs, r.md((strings.Join(res.notes, "; "))))
			}
		}
	}
	for _, p := range []string{slotLocal, slotHost} {
		if t := tot[p]; t != nil {
			fmt.Fprintf(w, "| **total** | %s | %d | %d | **%d** | |\n", p, t[0], t[1], t[2])
		}
	}
	for _, row := range r.rows {
		for _, res := range row.res {
			if n := res.violationCount(); n > 0 {
				fmt.Fprintf(w, "\n**%s, %s: %d violation(s)**\n\n", row.sc.name, res.plugin, n)
				for _, v := range capList(res.violations, 15) {
					fmt.Fprintln(w, "- "+r.md((v)))
				}
			}
		}
	}
	var any bool
	for _, row := range r.rows {
		for _, res := range row.res {
			if len(res.details) > 0 {
				if !any {
					fmt.Fprintln(w, "\n#### Outcomes, case by case")
					any = true
				}
				fmt.Fprintf(w, "\n%s, %s:\n\n", row.sc.name, res.plugin)
				for _, d := range res.details {
					fmt.Fprintln(w, "- "+r.md((d)))
				}
			}
		}
	}
}

// tidy shortens the scratch directory's path in a line of the report.
func (r *report) tidy(s string) string {
	if r.root == "" {
		return s
	}
	return strings.ReplaceAll(s, r.root, "<scratch>")
}

// md is a line of the Markdown report: the scratch directory shortened, the binaries
// named instead of their paths, escaped for a table cell or a list item.
func (r *report) md(s string) string {
	for _, b := range r.run.bins {
		if b.path != "" {
			s = strings.ReplaceAll(s, b.path, b.name)
		}
	}
	return mdEscape(r.tidy(s))
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", `\r`).Replace(printable(s))
}

// capList returns the first n items, then how many more there were.
func capList(items []string, n int) []string {
	if len(items) <= n {
		return items
	}
	out := append([]string(nil), items[:n]...)
	return append(out, fmt.Sprintf("... and %d more", len(items)-n))
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
