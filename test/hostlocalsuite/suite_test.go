package hostlocalsuite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"
	// The spec module builds against the same ginkgo and gomega as this one: importing
	// them here keeps them, at the versions the plugins module pins, in go.mod and go.sum.
	_ "github.com/onsi/gomega"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// pluginsModule holds the suite; its version is the one in go.mod.
const (
	pluginsModule = "github.com/containernetworking/plugins"
	specDir       = "plugins/ipam/host-local"
	pluginEnv     = "HOSTLOCALSUITE_PLUGIN" // read by testdata/exec_shim.go
)

// TestHostLocalSuite runs host-local's specs against host-local and local-ipam, each verb
// exec'd, and requires every spec that passes for host-local to pass for local-ipam.
func TestHostLocalSuite(t *testing.T) {
	hostLocal, localIPAM := cniexec.Bin(t, "host-local"), cniexec.Bin(t, "local-ipam")
	suite := buildSuite(t)

	ref := runSuite(t, suite, hostLocal)
	got := runSuite(t, suite, localIPAM)

	var table strings.Builder
	fmt.Fprintf(&table, "%-10s  %-10s  spec\n", "host-local", "local-ipam")
	var regressions, both []string
	for _, name := range ref.order {
		r, g := ref.specs[name], got.specs[name]
		if g.state == "" {
			g.state = "absent"
		}
		mark := ""
		switch {
		case r.passed() && !g.passed():
			mark = "  <-- fails only for local-ipam"
			regressions = append(regressions, fmt.Sprintf("%s: %s", name, g.message))
		case !r.passed() && !g.passed():
			both = append(both, fmt.Sprintf("%s: host-local: %s; local-ipam: %s", name, r.message, g.message))
		}
		fmt.Fprintf(&table, "%-10s  %-10s  %s%s\n", r.state, g.state, name, mark)
	}
	for _, name := range got.order {
		if _, ok := ref.specs[name]; !ok {
			t.Errorf("spec %q ran for local-ipam only", name)
		}
	}
	t.Logf("per spec (%s %s, %s):\n%s", pluginsModule, ref.version, specDir, table.String())
	t.Logf("host-local passes %d of %d specs; local-ipam passes %d of %d", ref.passed(), len(ref.order), got.passed(), len(got.order))
	for _, b := range both {
		t.Logf("fails for both (not local-ipam's doing): %s", b)
	}
	if len(ref.order) == 0 || ref.passed() == 0 {
		t.Fatalf("host-local passed no spec: the suite did not run as meant")
	}
	for _, r := range regressions {
		t.Errorf("passes for host-local, fails for local-ipam: %s", r)
	}
}

// outcome is one spec's result.
type outcome struct {
	state   string // ginkgo's: passed, failed, panicked, skipped, ...
	message string // the failure, with its location
}

func (o outcome) passed() bool { return o.state == types.SpecStatePassed.String() }

// run is one run of the suite: its specs by full text, in the order they ran.
type run struct {
	version string
	specs   map[string]outcome
	order   []string
}

func (r run) passed() int {
	n := 0
	for _, o := range r.specs {
		if o.passed() {
			n++
		}
	}
	return n
}

// suiteBin is the built suite and the module it was built in.
type suiteBin struct {
	path, dir, version string
}

// buildSuite copies host-local's spec files from the module cache into a temporary
// module (this module's go.mod and go.sum under another name), with the exec shim, and
// builds the test binary.
func buildSuite(t *testing.T) suiteBin {
	t.Helper()
	modFile := goOut(t, "", "env", "GOMOD")
	if modFile == "" || modFile == os.DevNull {
		t.Fatal("not inside a Go module")
	}
	root := filepath.Dir(modFile)
	var mod struct{ Dir, Version, Error string }
	if err := json.Unmarshal([]byte(goOut(t, root, "mod", "download", "-json", pluginsModule)), &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", pluginsModule, err, mod.Error)
	}

	dir := t.TempDir()
	specs, err := filepath.Glob(filepath.Join(mod.Dir, specDir, "*_test.go"))
	if err != nil || len(specs) == 0 {
		t.Fatalf("no spec files in %s: %v", filepath.Join(mod.Dir, specDir), err)
	}
	shim, err := filepath.Abs(filepath.Join("testdata", "exec_shim.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(specs, shim) {
		cniexec.CopyFile(t, f, filepath.Join(dir, filepath.Base(f)), 0o644)
	}
	gomod, err := os.ReadFile(modFile)
	if err != nil {
		t.Fatal(err)
	}
	gomod = regexp.MustCompile(`(?m)^module .*$`).ReplaceAll(gomod, []byte("module hostlocalsuite"))
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), gomod, 0o644); err != nil {
		t.Fatal(err)
	}
	cniexec.CopyFile(t, filepath.Join(root, "go.sum"), filepath.Join(dir, "go.sum"), 0o644)

	bin := filepath.Join(dir, "host-local.test")
	goOut(t, dir, "test", "-c", "-o", bin, ".")
	return suiteBin{path: bin, dir: dir, version: mod.Version}
}

// runSuite runs the suite with each verb exec'ing plugin and reads ginkgo's JSON report.
func runSuite(t *testing.T, s suiteBin, plugin string) run {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, s.path, "-ginkgo.no-color", "-ginkgo.json-report="+report)
	c.Dir = s.dir
	c.Env = append(os.Environ(), pluginEnv+"="+plugin)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run() // fails when a spec fails: the report says which
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("the suite against %s wrote no report (%v; exit: %v):\n%s", plugin, rerr, err, out.String())
	}
	var reports []types.Report
	if err := json.Unmarshal(b, &reports); err != nil {
		t.Fatalf("the suite's report against %s: %v", plugin, err)
	}
	r := run{version: s.version, specs: map[string]outcome{}}
	for _, rep := range reports {
		for _, sp := range rep.SpecReports {
			if sp.LeafNodeType != types.NodeTypeIt {
				continue
			}
			name := sp.FullText()
			if _, dup := r.specs[name]; dup {
				t.Fatalf("two specs named %q", name)
			}
			o := outcome{state: sp.State.String()}
			if sp.Failure.Message != "" {
				o.message = fmt.Sprintf("%s (%s)", strings.Join(strings.Fields(sp.Failure.Message), " "), sp.Failure.Location)
			}
			r.specs[name] = o
			r.order = append(r.order, name)
		}
	}
	return r
}

// goOut runs the go command in dir (this module's dependencies, no workspace, no cgo) and
// returns its trimmed stdout, failing the test with its output when it fails.
func goOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	c := exec.Command(cniexec.GoCmd(), args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("go %s (in %s): %v\n%s%s", strings.Join(args, " "), dir, err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}
