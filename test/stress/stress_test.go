package main

// The short version of every stress scenario, against local-ipam only, as part of
// `go test ./...` (and so of `make test` and CI). It execs the built binary, found in
// LOCAL_IPAM_BIN_DIR (default <repo root>/bin, filled by `make build`). Scenarios that need
// root (tmpfs and bind mounts, fanotify, setuid, chattr) are skipped, with the reason,
// when the tests do not run as root; CI runs them as root. The etcd scenarios run against
// an etcd member embedded in the test binary (started by the first of them).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/machine"
)

func TestMain(m *testing.M) {
	// This test binary is also the RSS middleman of the hostile scenario (rss.go) when
	// rsshelper cannot be built.
	cniexec.ServeMiddleman()
	dir, err := os.MkdirTemp("", "stress-rsshelper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if warn := setupRSSHelper(dir); warn != "" {
		fmt.Fprintln(os.Stderr, "warning:", warn)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// localIPAM returns the built local-ipam binary, or fails the test with how to build it.
func localIPAM(t *testing.T) *plugin {
	t.Helper()
	p, err := newPlugin(slotLocal, cniexec.Bin(t, "local-ipam"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStressShort runs every scenario's short version against local-ipam: any invariant
// violation fails the test, with the address or file and why.
func TestStressShort(t *testing.T) {
	p := localIPAM(t)
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountAll(root)
		clearImmutable(root)
	})
	etcd := newEtcdServer(filepath.Join(root, "etcd")) // started by the first etcd scenario
	t.Cleanup(etcd.close)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (go run ./test/stress -short -seed %d -host-local none reproduces the run)", seed, seed)
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.needsRoot != "" && os.Geteuid() != 0 {
				t.Skipf("needs root (%s); CI runs it as root", sc.needsRoot)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res := runScenario(ctx, sc, p, filepath.Join(root, sc.name), root, etcd, true, seed, uint64(i*16), nil)
			if res.err != nil {
				t.Fatalf("the scenario could not run: %v", res.err)
			}
			t.Logf("%d calls, %d faults injected, %.1fs: %s", res.ops.Load(), res.faults.Load(), res.elapsed.Seconds(), strings.Join(res.notes, "; "))
			for _, v := range res.violations {
				t.Errorf("violation: %s", v)
			}
		})
	}
}

// TestHarnessCatchesHostLocal is the suite's own check: run against host-local, the crash
// scenario must find the empty records host-local leaves when killed between create and
// write (so a green local-ipam run means something).
func TestHarnessCatchesHostLocal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (crash-io: fanotify, bind mount); CI runs it as root")
	}
	lp := localIPAM(t)
	hl, err := newPlugin(slotHost, filepath.Join(filepath.Dir(lp.bin), "host-local"))
	if err != nil {
		t.Skipf("host-local not built (%v); `make peers` builds it", err)
	}
	root := t.TempDir()
	t.Cleanup(func() { unmountAll(root) })
	var sc scenario
	for _, s := range scenarios {
		if s.name == "crash-io" {
			sc = s
		}
	}
	res := runScenario(context.Background(), sc, hl, filepath.Join(root, "crash-io"), root, nil, true, 1, 0, nil)
	if res.err != nil {
		t.Fatalf("the scenario could not run: %v", res.err)
	}
	for _, v := range res.violations {
		if strings.Contains(v, "empty record") {
			t.Logf("found, as it should: %s", v)
			return
		}
	}
	t.Errorf("crash-io found no empty record of host-local in %d calls (%d kills); violations: %q", res.ops.Load(), res.faults.Load(), res.violations)
}

// TestReportAndFlags: the command's report ends with the totals, and bad flags exit 2.
// The text report names the binary's and the scratch directory's paths; the Markdown one,
// which goes into the documentation, names neither, nor the date.
func TestReportAndFlags(t *testing.T) {
	p := localIPAM(t)
	var out, errs bytes.Buffer
	tmp := t.TempDir()
	code := run([]string{"-plugin", p.bin, "-host-local", "none", "-short", "-only", "^fault-notdir$", "-tmp", tmp}, &out, &errs)
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	for _, want := range []string{"fault-notdir", "TOTAL", "local-ipam: " + p.bin + " (", "scratch: " + tmp + "/"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"-plugin", p.bin, "-host-local", "none", "-short", "-markdown", "-only", "^fault-notdir$", "-tmp", tmp}, &out, &errs); code != 0 {
		t.Fatalf("-markdown: exit %d", code)
	}
	md := out.String()
	for _, want := range []string{"| `fault-notdir` | local-ipam |", "| **total** |", "\n- local-ipam: local-ipam (this tree)\n", "\n- scratch: a temporary directory on "} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown report lacks %q:\n%s", want, md)
		}
	}
	if leak := machine.Particular(md, tmp, filepath.Dir(p.bin)); leak != "" {
		t.Errorf("markdown report names %q, a path of this machine or a date:\n%s", leak, md)
	}
	if code := run([]string{"-only", "("}, &out, &errs); code != 2 {
		t.Errorf("bad -only: exit %d, want 2", code)
	}
	if code := run([]string{"extra"}, &out, &errs); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}

// TestRSSMiddleman: a call through the middleman reports the plugin's own peak, not the
// harness's.
func TestRSSMiddleman(t *testing.T) {
	p := localIPAM(t)
	ballast := bytes.Repeat([]byte{1}, 64<<20) // the harness's peak: must not show
	o, err := p.run(context.Background(), call{cmd: "VERSION", stdin: []byte(`{"cniVersion":"1.1.0"}`), rss: true, timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !o.ok() || !bytes.Contains(o.stdout, []byte("supportedVersions")) {
		t.Fatalf("VERSION through the middleman: %s", describe(o))
	}
	if o.maxrss <= 0 || o.maxrss > 48<<10 {
		t.Errorf("peak RSS of VERSION: %d KiB (floor %d KiB)", o.maxrss, o.rssFloor)
	}
	_ = ballast[len(ballast)-1]
}

// TestKillAndTimeout: a SIGKILL lands, and a hung call is killed at its timeout.
func TestKillAndTimeout(t *testing.T) {
	p := localIPAM(t)
	o, err := p.run(context.Background(), call{cmd: "VERSION", stdin: []byte(`{"cniVersion":"1.1.0"}`), kill: true, killAfter: 0})
	if err != nil {
		t.Fatal(err)
	}
	if !o.killedByUs() && !o.ok() {
		t.Errorf("killed VERSION: %s", describe(o))
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"bridge","ipam":{"type":"local-ipam","dataDir":%q,"subnet":"10.1.0.0/24","resolvConf":%q}}`, t.TempDir(), fifo)
	t0 := time.Now()
	o, err = p.run(context.Background(), call{cmd: "ADD", id: "c", stdin: []byte(conf), timeout: 300 * time.Millisecond})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	if time.Since(t0) > 5*time.Second {
		t.Errorf("a call with a 300ms timeout took %v", time.Since(t0))
	}
	if !o.ok() && !o.timedOut {
		if _, bad := parseError(o); bad != "" {
			t.Errorf("ADD with a FIFO resolvConf: %s", bad)
		}
	}
}

// TestEtcdChecksSeeReservations is the etcd checks' own test: reservations read with
// `local-ipam list` that the harness does not account for are violations (a stray one, one
// tagged with another machine's node), and DEL of everything leaves the list empty.
func TestEtcdChecksSeeReservations(t *testing.T) {
	p := localIPAM(t)
	root := t.TempDir()
	etcd := newEtcdServer(filepath.Join(root, "etcd"))
	t.Cleanup(etcd.close)
	sc := scenario{name: "etcd-self-test", run: func(x *job) error {
		n, sets := loadSpec{name: "self", subnets: []string{"10.29.0.0/28"}}.network(x.dir + "/data")
		n, err := x.etcdNetwork(n, 3)
		if err != nil {
			return err
		}
		stray := &att{id: "stray", ifname: "eth0", node: "node-1"}
		moved := &att{id: "moved", ifname: "eth0", node: "node-2"}
		tr := newTracker(x, sets)
		x.doAdd(tr, n, stray, killSpec{})
		x.doAdd(tr, n, moved, killSpec{})
		if !stray.live || !moved.live {
			return fmt.Errorf("ADDs failed: %q", x.res.violations)
		}
		moved.node = "node-0" // the harness thinks its ADD ran on node-0
		if got := x.checkRecords(n.records(), sets, []*att{moved}, "self-test"); got != 2 {
			return fmt.Errorf("checkRecords counted %d reservations, want 2", got)
		}
		x.delAll(n, []*att{stray, moved}, 2)
		x.expectNoRecords(n.records(), "self-test, all DELeted")
		return nil
	}}
	res := runScenario(context.Background(), sc, p, filepath.Join(root, sc.name), root, etcd, true, 1, 0, nil)
	if res.err != nil {
		t.Fatalf("the self-test could not run: %v", res.err)
	}
	want := []string{"which is no attachment's key", `whose ADD ran on node "node-0", but is tagged with node "node-2"`}
	if len(res.violations) != len(want) {
		t.Fatalf("violations %q, want one containing each of %q", res.violations, want)
	}
	for i, w := range want {
		if !strings.Contains(res.violations[i], w) {
			t.Errorf("violation %d: %q lacks %q", i, res.violations[i], w)
		}
	}
}
