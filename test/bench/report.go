package main

import (
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/local-ipam/local-ipam/internal/machine"
)

// ---- header: the machine and the binaries ----

type headerInfo struct {
	root     string // the temp dir of the stores
	when     time.Time
	machine  string        // internal/machine's words
	tmp, lib fsInfo        // the temp dir's file system, /var/lib's
	sameFS   string        // yes, no or unknown
	bins     []binInfo     // one per slot
	elapsed  time.Duration // the whole run
	warnings []string
}

// fsInfo is a file system as the header shows it: its type, and where it is.
type fsInfo struct{ typ, source, mountPoint string }

func fsOf(path string) fsInfo {
	var f fsInfo
	f.typ, f.source, f.mountPoint = machine.Mount(path)
	return f
}

func (f fsInfo) String() string {
	return fmt.Sprintf("%s (%s, mounted on %s)", f.typ, f.source, f.mountPoint)
}

// binInfo is the binary of one slot: by name and version, and where it is.
type binInfo struct{ slot, name, path, version string }

func header(root string, tools ...*tool) headerInfo {
	h := headerInfo{root: root, when: time.Now(), machine: machine.Describe(), tmp: fsOf(root), lib: fsOf("/var/lib")}
	var st1, st2 syscall.Stat_t
	switch {
	case syscall.Stat(root, &st1) != nil || syscall.Stat("/var/lib", &st2) != nil:
		h.sameFS = "unknown"
	case st1.Dev == st2.Dev:
		h.sameFS = "yes"
	default:
		h.sameFS = "no"
		h.warnings = append(h.warnings, "the temp dir is not on /var/lib's filesystem; use -tmp for numbers that match a real node")
	}
	for _, t := range tools {
		h.bins = append(h.bins, binInfo{t.slot, machine.Binary(t.bin), t.bin, machine.Version(t.bin)})
	}
	if len(tools) == 2 && tools[0].bin == tools[1].bin {
		h.warnings = append(h.warnings, "both slots run the same binary: a harness self-test, the targets will fail")
	}
	return h
}

// tidy takes the paths of this machine out of a line of the Markdown report: the temp
// dir becomes <temp dir>, a binary its name.
func (h headerInfo) tidy(s string) string {
	for _, b := range h.bins {
		if b.path != "" {
			s = strings.ReplaceAll(s, b.path, b.name)
		}
	}
	if h.root == "" {
		return s
	}
	return strings.ReplaceAll(s, h.root, "<temp dir>")
}

// lines is the header: with md, the machine and binaries in words only (it goes into the
// documentation); otherwise with the date, the paths and the file systems' whereabouts.
func (h headerInfo) lines(md bool) []string {
	var out []string
	tmp, lib := h.tmp.typ, h.lib.typ
	if !md {
		out = append(out, fmt.Sprintf("date: %s", h.when.Format("2006-01-02 15:04 MST")))
		tmp, lib = h.tmp.String(), h.lib.String()
	}
	out = append(out, "machine: "+h.machine)
	same := h.sameFS
	if same == "no" {
		same = "no (/var/lib is on " + lib + ")"
	}
	out = append(out, fmt.Sprintf("temp dir: %s, same filesystem as /var/lib: %s", tmp, same))
	for _, b := range h.bins {
		if md {
			out = append(out, fmt.Sprintf("%s: %s", b.slot, b.name))
		} else {
			out = append(out, fmt.Sprintf("%s: %s (%s)", b.slot, b.path, b.version))
		}
	}
	return out
}

// ---- tables ----

type table struct {
	title string
	cols  []string
	rows  [][]string
}

func writeTables(w io.Writer, md bool, tables []table) {
	for _, t := range tables {
		if len(t.rows) == 0 {
			continue
		}
		if md {
			fmt.Fprintf(w, "\n**%s**\n\n", t.title)
			fmt.Fprintf(w, "| %s |\n", strings.Join(t.cols, " | "))
			seps := make([]string, len(t.cols))
			for i := range seps {
				seps[i] = "---"
				if i > 0 {
					seps[i] = "---:"
				}
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(seps, " | "))
			for _, r := range t.rows {
				fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
			}
			continue
		}
		fmt.Fprintf(w, "\n%s\n", t.title)
		// First column left-aligned, the numbers right-aligned: pad the first column by hand.
		first := utf8.RuneCountInString(t.cols[0])
		for _, r := range t.rows {
			first = max(first, utf8.RuneCountInString(r[0]))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, r := range append([][]string{t.cols}, t.rows...) {
			cells := append([]string{fmt.Sprintf("  %-*s", first, r[0])}, r[1:]...)
			fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
		}
		tw.Flush()
	}
}

// fmtMS and fmtX print milliseconds and ratios with three significant digits or more.
func fmtMS(v float64) string { return fmt3(v) }
func fmtX(v float64) string  { return fmt3(v) + "×" }

func fmt3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func allocLabel(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprintf("%d", n)
}

// ---- report ----

const (
	li = "local-ipam"
	hl = "host-local"
)

type target struct {
	name     string
	value    float64
	limit    float64
	atMost   bool // value ≤ limit, else value ≥ limit
	have     bool
	unitFmt  func(float64) string
	describe string
}

// report prints everything and returns whether a target was missed.
func report(w io.Writer, cfg config, h headerInfo, r *results, failures []string) bool {
	md := cfg.markdown
	k := allocLabel(cfg.allocs)

	// Header.
	lines := append(h.lines(md),
		fmt.Sprintf("runs: up to %d per scenario per tool (at least %d, then a %v time budget each); wall time of exec to exit; run took %.0fs",
			cfg.runs, cfg.minRuns, cfg.budget, h.elapsed.Seconds()))
	if md {
		fmt.Fprintln(w, "### local-ipam vs host-local, exec-level")
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintf(w, "- %s\n", l)
		}
	} else {
		fmt.Fprintln(w, "local-ipam vs host-local, exec-level benchmark")
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}

	// Latency table.
	timed := table{
		title: "latency per call, ms (median, p90); × VERSION: against " + li + "'s VERSION calls timed alongside",
		cols:  []string{"scenario", li + " median", "p90", "× VERSION", hl + " median", "p90", hl + "/" + li, "runs"},
	}
	// ratioVer is a scenario's median over local-ipam's paired VERSION median.
	ratioVer := func(key string) (float64, bool) {
		a, okA := r.stat(li, key)
		v, okV := r.versionFor(li, key)
		return a.med / v.med, okA && okV
	}
	rowsDef := []struct{ key, label string }{
		{"version", "VERSION (process start)"},
		{"empty-add", "ADD, empty store"},
		{"empty-del", "DEL, empty store"},
		{"50k-add", "ADD at " + k + " allocations"},
		{"50k-check", "CHECK at " + k},
		{"50k-del", "DEL at " + k},
		{"50k-del-old", "DEL at " + k + ", a container of the initial store"},
		{"50k-del-unknown", "DEL unknown container at " + k},
		{"full16-add", "ADD into a full /16 (fails)"},
		{"walk20-add", "ADD, /20 with one free address, full walk"},
	}
	for _, d := range rowsDef {
		a, okA := r.stat(li, d.key)
		b, okB := r.stat(hl, d.key)
		if !okA && !okB {
			continue
		}
		row := []string{d.label, "-", "-", "-", "-", "-", "-", ""}
		if okA {
			row[1], row[2] = fmtMS(a.med), fmtMS(a.p90)
			if x, ok := ratioVer(d.key); ok {
				row[3] = fmtX(x)
			}
		}
		if okB {
			row[4], row[5] = fmtMS(b.med), fmtMS(b.p90)
		}
		if okA && okB {
			row[6] = fmtX(b.med / a.med)
		}
		row[7] = fmt.Sprintf("%d/%d", a.n, b.n)
		timed.rows = append(timed.rows, row)
	}

	// Parallel table.
	par := table{
		title: fmt.Sprintf("parallel: %d calls from %d concurrent callers, calls/s", cfg.parallelN, cfg.parallel),
		cols:  []string{"calls", li, hl, li + "/" + hl},
	}
	for _, d := range []struct{ key, label string }{{"par-add", "ADD (distinct containers, empty /16)"}, {"par-version", "VERSION"}} {
		a, okA := r.rate(li, d.key)
		b, okB := r.rate(hl, d.key)
		if !okA && !okB {
			continue
		}
		row := []string{d.label, "-", "-", "-"}
		if okA {
			row[1] = fmt.Sprintf("%.0f", a)
		}
		if okB {
			row[2] = fmt.Sprintf("%.0f", b)
		}
		if okA && okB {
			row[3] = fmtX(a / b)
		}
		par.rows = append(par.rows, row)
	}
	if a, okA := r.rate(li, "par-add"); okA {
		b, _ := r.rate(li, "par-version")
		c, okC := r.rate(hl, "par-add")
		d, _ := r.rate(hl, "par-version")
		row := []string{"ADD rate / VERSION rate", fmtX(a / b), "-", ""}
		if okC {
			row[2] = fmtX(c / d)
		}
		par.rows = append(par.rows, row)
	}

	// RSS table.
	rss := table{
		title: fmt.Sprintf("peak RSS, KiB (median of %d; measurement floor %d KiB)", cfg.rssRuns, r.rssFloor),
		cols:  []string{"call", li, hl},
	}
	for _, d := range []struct{ key, label string }{{"rss-add", "ADD at " + k}, {"rss-version", "VERSION"}} {
		a, okA := r.rssMedian(li, d.key)
		b, okB := r.rssMedian(hl, d.key)
		if !okA && !okB {
			continue
		}
		row := []string{d.label, "-", "-"}
		if okA {
			row[1] = fmt.Sprintf("%.0f", a)
		}
		if okB {
			row[2] = fmt.Sprintf("%.0f", b)
		}
		rss.rows = append(rss.rows, row)
	}
	ratioRSS := func(slot string) string {
		a, okA := r.rssMedian(slot, "rss-add")
		b, okB := r.rssMedian(slot, "rss-version")
		if !okA || !okB {
			return "-"
		}
		return fmtX(a / b)
	}
	if len(rss.rows) > 0 {
		rss.rows = append(rss.rows, []string{"ADD / VERSION", ratioRSS(li), ratioRSS(hl)})
	}

	tables := []table{timed, par, rss}
	if et := etcdTable(r, cfg); len(et.rows) > 0 {
		tables = append(tables, et)
	}
	if bt := etcdBlocksTable(r, cfg); len(bt.rows) > 0 {
		tables = append(tables, bt)
	}
	writeTables(w, md, tables)

	// Targets.
	var ts []target
	liMed := func(key string) (float64, bool) { s, ok := r.stat(li, key); return s.med, ok }
	hlMed := func(key string) (float64, bool) { s, ok := r.stat(hl, key); return s.med, ok }
	for _, d := range []struct{ key, label string }{
		{"50k-add", "ADD"}, {"50k-del", "DEL"}, {"50k-check", "CHECK"}, {"50k-del-unknown", "DEL unknown"},
	} {
		x, okX := ratioVer(d.key)
		ts = append(ts, target{name: d.label + " at " + k + " ≤ 1.3× VERSION", value: x, limit: 1.3, atMost: true, have: okX, unitFmt: fmtX})
		a, okA := liMed(d.key)
		b, okB := hlMed(d.key)
		ts = append(ts, target{name: d.label + " at " + k + " ≥ 50× faster than host-local", value: b / a, limit: 50, have: okA && okB, unitFmt: fmtX})
	}
	for _, d := range []struct{ key, label string }{{"full16-add", "ADD into a full /16"}, {"walk20-add", "ADD, /20 full walk"}} {
		x, okX := ratioVer(d.key)
		ts = append(ts, target{name: d.label + " ≤ 1.3× VERSION", value: x, limit: 1.3, atMost: true, have: okX, unitFmt: fmtX})
	}
	pa, okPA := r.rate(li, "par-add")
	pv, okPV := r.rate(li, "par-version")
	ts = append(ts, target{name: "parallel ADD rate ≥ 0.8× parallel VERSION rate", value: pa / pv, limit: 0.8, have: okPA && okPV, unitFmt: fmtX})
	ra, okRA := r.rssMedian(li, "rss-add")
	rv, okRV := r.rssMedian(li, "rss-version")
	ts = append(ts, target{name: "peak RSS of ADD at " + k + " ≤ 1.2× VERSION's", value: ra / rv, limit: 1.2, atMost: true, have: okRA && okRV, unitFmt: fmtX})
	ts = append(ts, etcdBlocksTargets(r, cfg)...)

	missed := false
	if md {
		fmt.Fprintf(w, "\n**targets (%s)**\n\n| target | value | result |\n| --- | ---: | --- |\n", li)
	} else {
		fmt.Fprintf(w, "\ntargets (%s)\n", li)
	}
	for _, t := range ts {
		res, val := "SKIP", "-"
		if t.have {
			val = t.unitFmt(t.value)
			ok := t.value >= t.limit
			if t.atMost {
				ok = t.value <= t.limit
			}
			res = "PASS"
			if !ok {
				res, missed = "FAIL", true
			}
		}
		if md {
			fmt.Fprintf(w, "| %s | %s | %s |\n", t.name, val, res)
		} else {
			fmt.Fprintf(w, "  %-4s  %-52s %s\n", res, t.name, val)
		}
	}
	if a, okA := liMed("50k-add"); okA {
		if z, okZ := liMed("empty-add"); okZ {
			if md {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%sinfo: %s ADD at %s / ADD into an empty store: %s\n", bullet(md), li, k, fmtX(a/z))
		}
	}

	// The paired VERSION baselines, for transparency.
	var base []string
	for _, g := range r.pairs {
		a, okA := r.stat(li, g)
		b, okB := r.stat(hl, g)
		if okA && okB {
			base = append(base, fmt.Sprintf("%s %s/%s", strings.TrimPrefix(g, "version@"), fmtMS(a.med), fmtMS(b.med)))
		}
	}
	if len(base) > 1 {
		r.note("VERSION medians (ms, %s/%s) alongside each scenario: %s", li, hl, strings.Join(base, "; "))
	}

	// Notes and failures.
	if len(r.notes) > 0 || len(failures) > 0 {
		fmt.Fprintln(w)
		if md {
			fmt.Fprintln(w, "**notes**")
			fmt.Fprintln(w)
		} else {
			fmt.Fprintln(w, "notes")
		}
		tidy := func(s string) string { return s }
		if md {
			tidy = h.tidy
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "%s%s\n", bullet(md), tidy(n))
		}
		for _, f := range failures {
			fmt.Fprintf(w, "%sERROR %s\n", bullet(md), tidy(f))
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(w, "\nbench: %d scenario group(s) failed: a call misbehaved, see ERROR above\n", len(failures))
	}
	return missed
}

func bullet(md bool) string {
	if md {
		return "- "
	}
	return "  "
}
