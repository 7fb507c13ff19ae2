package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Locating the binaries.

type binaries struct {
	dir       string
	hostLocal string // the reference
	plugin    string // the binary under test
	err       error
}

var (
	binsOnce sync.Once
	bins     binaries
	// pluginIsHostLocal is true when COMPAT_PLUGIN points at host-local itself (the
	// self-test mode used while local-ipam is being written).
	pluginIsHostLocal bool
)

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the test directory")
		}
		dir = parent
	}
}

func loadBinaries() {
	dir := os.Getenv("LOCAL_IPAM_BIN_DIR")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			bins.err = err
			return
		}
		dir = filepath.Join(root, "bin")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		bins.err = err
		return
	}
	bins.dir = abs
	bins.hostLocal = filepath.Join(abs, "host-local")
	bins.plugin = os.Getenv("COMPAT_PLUGIN")
	if bins.plugin == "" {
		bins.plugin = filepath.Join(abs, "local-ipam")
	}
	if p, err := filepath.Abs(bins.plugin); err == nil {
		bins.plugin = p
	}
	if err := executable(bins.hostLocal); err != nil {
		bins.err = fmt.Errorf("reference plugin host-local not usable (%v); run `make peers` or set LOCAL_IPAM_BIN_DIR", err)
		return
	}
	if err := executable(bins.plugin); err != nil {
		bins.err = fmt.Errorf("plugin under test %s not usable (%v); run `make build`, or set COMPAT_PLUGIN "+
			"(COMPAT_PLUGIN=%s runs the suite against host-local itself)", bins.plugin, err, bins.hostLocal)
		return
	}
	a, _ := os.Stat(bins.hostLocal)
	b, _ := os.Stat(bins.plugin)
	pluginIsHostLocal = os.SameFile(a, b) || filepath.Base(bins.plugin) == "host-local"
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// needBins returns the binaries or fails the test with a clear message.
func needBins(t testing.TB) binaries {
	t.Helper()
	binsOnce.Do(loadBinaries)
	if bins.err != nil {
		t.Fatalf("compat tests need their binaries: %v", bins.err)
	}
	return bins
}

// ---------------------------------------------------------------------------
// Invoking a plugin as a runtime does.

type invocation struct {
	Cmd     string // CNI_COMMAND
	ID      string // CNI_CONTAINERID
	IfName  string // CNI_IFNAME
	Netns   string // CNI_NETNS
	Args    string // CNI_ARGS
	Path    string // CNI_PATH; "-" = leave unset
	Conf    []byte // stdin
	Timeout time.Duration
}

type outcome struct {
	Stdout []byte
	Stderr []byte
	Exit   int
}

func (o outcome) ok() bool { return o.Exit == 0 }

func (o outcome) String() string {
	return fmt.Sprintf("exit=%d stdout=%q stderr=%q", o.Exit, bytes.TrimSpace(o.Stdout), bytes.TrimSpace(o.Stderr))
}

// fakeNetns is a path that does not exist: plugins only pass CNI_NETNS through, and skel
// accepts a path it cannot open (it only refuses the plugin's own namespace).
const fakeNetns = "/var/run/netns/compat-test-does-not-exist"

// invoke runs bin once with the CNI environment of inv and the config on stdin. Only the
// CNI variables (and PATH) are passed, as a runtime does. It fails the test if the binary
// cannot be run or hangs; use run from other goroutines.
func invoke(t testing.TB, bin string, inv invocation) outcome {
	t.Helper()
	o, err := run(bin, inv)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// run is invoke without a testing.TB, safe to call from any goroutine.
func run(bin string, inv invocation) (outcome, error) {
	timeout := inv.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + inv.Cmd}
	if inv.ID != "" {
		env = append(env, "CNI_CONTAINERID="+inv.ID)
	}
	if inv.IfName != "" {
		env = append(env, "CNI_IFNAME="+inv.IfName)
	}
	if inv.Netns != "" {
		env = append(env, "CNI_NETNS="+inv.Netns)
	}
	if inv.Args != "" {
		env = append(env, "CNI_ARGS="+inv.Args)
	}
	switch inv.Path {
	case "-":
	case "":
		env = append(env, "CNI_PATH="+filepath.Dir(bin))
	default:
		env = append(env, "CNI_PATH="+inv.Path)
	}
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(inv.Conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	o := outcome{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return o, fmt.Errorf("running %s %s: %v", bin, inv.Cmd, err)
		}
		if ctx.Err() != nil {
			return o, fmt.Errorf("%s %s (container %s) did not finish within %v", filepath.Base(bin), inv.Cmd, inv.ID, timeout)
		}
		o.Exit = ee.ExitCode()
		if o.Exit == 0 {
			o.Exit = -1
		}
	}
	return o, nil
}

// cniError is the error object a plugin prints on stdout when it fails.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       *int   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`

	raw map[string]json.RawMessage
}

// checkCNIError verifies that a failed call printed a well-formed CNI error.
func checkCNIError(o outcome) error {
	if o.ok() {
		return errors.New("call succeeded, an error was expected")
	}
	var e cniError
	dec := json.NewDecoder(bytes.NewReader(o.Stdout))
	if err := dec.Decode(&e.raw); err != nil {
		return fmt.Errorf("stdout of a failed call is not a CNI error JSON (%v): %s", err, o)
	}
	if dec.More() {
		return fmt.Errorf("stdout of a failed call has more than one JSON value: %s", o)
	}
	if err := json.Unmarshal(o.Stdout, &e); err != nil {
		return fmt.Errorf("stdout of a failed call is not a CNI error JSON (%v): %s", err, o)
	}
	// SPEC 1.x lists cniVersion in the error object, but skel (and so host-local) prints
	// only code, msg and details: cniVersion is checked when present, not required.
	if raw, has := e.raw["cniVersion"]; has {
		var v string
		if json.Unmarshal(raw, &v) != nil || v == "" {
			return fmt.Errorf("CNI error with an invalid cniVersion: %s", o)
		}
	}
	if e.Code == nil || *e.Code == 0 {
		return fmt.Errorf("CNI error without a non-zero code: %s", o)
	}
	if e.Msg == "" {
		return fmt.Errorf("CNI error without msg: %s", o)
	}
	return nil
}

func errorCode(o outcome) int {
	var e cniError
	if json.Unmarshal(o.Stdout, &e) != nil || e.Code == nil {
		return 0
	}
	return *e.Code
}

// ---------------------------------------------------------------------------
// Configs.

const netName = "compat-net"

// makeConf turns a config template into the bytes sent on stdin: "@RESOLV@" is replaced by
// resolv (a path), ipam.dataDir is set to dataDir (when the config has an ipam object) and
// extra top-level keys are merged in. A template that is not a JSON object is sent as is.
func makeConf(t testing.TB, tmpl, dataDir, resolv string, extra map[string]any) []byte {
	t.Helper()
	s := strings.ReplaceAll(tmpl, "@RESOLV@", resolv)
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return []byte(s) // deliberately broken config
	}
	if ipam, ok := m["ipam"].(map[string]any); ok {
		if _, has := ipam["dataDir"]; !has {
			ipam["dataDir"] = dataDir
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---------------------------------------------------------------------------
// Stores.

type fileState struct {
	Content string
	Mode    fs.FileMode
}

// snapshot returns every regular file below dataDir (relative path -> content and mode),
// leaving out local-ipam's private `.local-ipam/` directories and the flock `lock` files.
func snapshot(t testing.TB, dataDir string) map[string]fileState {
	t.Helper()
	snap := map[string]fileState{}
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			if d.Name() == ".local-ipam" {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == "lock" {
			return nil
		}
		rel, _ := filepath.Rel(dataDir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			snap[rel] = fileState{Content: "<not a regular file>", Mode: info.Mode()}
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		snap[rel] = fileState{Content: string(b), Mode: info.Mode().Perm()}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dataDir, err)
	}
	return snap
}

func diffSnapshots(a, b map[string]fileState) string {
	var keys []string
	seen := map[string]bool{}
	for k := range a {
		keys = append(keys, k)
		seen[k] = true
	}
	for k := range b {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		fa, inA := a[k]
		fb, inB := b[k]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("  %s: only in B (%q %v)", k, fb.Content, fb.Mode))
		case !inB:
			out = append(out, fmt.Sprintf("  %s: only in A (%q %v)", k, fa.Content, fa.Mode))
		case fa != fb:
			out = append(out, fmt.Sprintf("  %s: A=%q %v, B=%q %v", k, fa.Content, fa.Mode, fb.Content, fb.Mode))
		}
	}
	return strings.Join(out, "\n")
}

// records returns the reservations of one network directory: address -> trimmed content.
// lock, last_reserved_ip.* and the .local-ipam directory are not reservations.
func records(t testing.TB, netDir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(netDir)
	if err != nil {
		t.Fatalf("reading %s: %v", netDir, err)
	}
	recs := map[string]string{}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "lock" || strings.HasPrefix(n, "last_reserved_ip.") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(netDir, n))
		if err != nil {
			t.Fatalf("reading record %s: %v", n, err)
		}
		recs[n] = strings.TrimSpace(string(b))
	}
	return recs
}

// copyTree copies a data directory (regular files and directories, modes kept).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, b, info.Mode().Perm()); err != nil {
			return err
		}
		return os.Chmod(target, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}

// ---------------------------------------------------------------------------
// Results.

type ipConfig struct {
	Address string `json:"address"`
	Gateway string `json:"gateway"`
}

type cniResult struct {
	CNIVersion string     `json:"cniVersion"`
	IPs        []ipConfig `json:"ips"`
	IP4        *struct {
		IP      string `json:"ip"`
		Gateway string `json:"gateway"`
	} `json:"ip4"`
	IP6 *struct {
		IP      string `json:"ip"`
		Gateway string `json:"gateway"`
	} `json:"ip6"`
}

// addresses lists the addresses (CIDR form) of an ADD result of any version.
func addresses(stdout []byte) ([]string, error) {
	var r cniResult
	if err := json.Unmarshal(stdout, &r); err != nil {
		return nil, fmt.Errorf("result is not JSON: %v: %q", err, stdout)
	}
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
	return out, nil
}

// jsonEqual compares two outputs as JSON values; two empty outputs are equal.
func jsonEqual(a, b []byte) (bool, error) {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b), nil
	}
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		return false, fmt.Errorf("A output is not JSON: %v", err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		return false, fmt.Errorf("B output is not JSON: %v", err)
	}
	return reflect.DeepEqual(va, vb), nil
}
