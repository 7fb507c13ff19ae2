package main

// Exec-level tests of the built binary: every test runs bin/local-ipam (and, for the
// takeover case, bin/host-local) exactly as a runtime or an operator would, with the CNI
// environment variables and the config on stdin, or with CLI arguments. The binaries are
// found in LOCAL_IPAM_BIN_DIR, by default <repo root>/bin (`make build peers`). Every
// test uses its own t.TempDir() data dir, so all of them run in parallel.
//
// This file holds the harness; the tests are in gc_test.go, status_test.go (also the
// read-only and full file system cases), check_test.go, reboot_test.go, exclude_test.go,
// errors_test.go, cli_test.go and chained_test.go.

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
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func findBinDir() {
	binDir = os.Getenv("LOCAL_IPAM_BIN_DIR")
	if binDir == "" {
		dir, err := os.Getwd()
		if err != nil {
			binErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				binErr = errors.New("no go.mod above the working directory; set LOCAL_IPAM_BIN_DIR")
				return
			}
			dir = parent
		}
		binDir = filepath.Join(dir, "bin")
	}
	binDir, binErr = filepath.Abs(binDir)
}

// binPath returns the path of one of the built binaries, or fails the test with how to build it.
func binPath(t testing.TB, name string) string {
	t.Helper()
	binOnce.Do(findBinDir)
	if binErr != nil {
		t.Fatalf("cannot locate the binaries: %v", binErr)
	}
	p := filepath.Join(binDir, name)
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		hint := "run make build"
		if name != "local-ipam" {
			hint = "run make peers"
		}
		t.Fatalf("%s is missing or not executable (%v): %s, or point LOCAL_IPAM_BIN_DIR at the binaries", p, err, hint)
	}
	return p
}

// execOut is what one execution left: stdout, stderr and the exit code.
type execOut struct {
	stdout, stderr string
	exit           int
}

func (o execOut) String() string {
	return fmt.Sprintf("exit=%d stdout=%q stderr=%q", o.exit, strings.TrimSpace(o.stdout), strings.TrimSpace(o.stderr))
}

// execute runs path with exactly env (plus PATH) and stdin, with a timeout.
func execute(t testing.TB, path string, env []string, stdin []byte, args ...string) execOut {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	o := execOut{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("running %s %v: %v (%s)", filepath.Base(path), args, err, o)
		}
		o.exit = ee.ExitCode()
	}
	return o
}

// call is one CNI invocation.
type cniCall struct {
	cmd    string   // CNI_COMMAND
	id     string   // CNI_CONTAINERID ("" leaves it unset)
	ifname string   // CNI_IFNAME ("" leaves it unset)
	args   string   // CNI_ARGS
	env    []string // more variables (LOCAL_IPAM_BOOT_ID_FILE)
	conf   []byte   // stdin
}

// runCNI executes the plugin binary at path as a runtime does.
func runCNI(t testing.TB, path string, c cniCall) execOut {
	t.Helper()
	env := []string{"CNI_COMMAND=" + c.cmd, "CNI_NETNS=/var/run/netns/local-ipam-exec-test", "CNI_PATH=" + filepath.Dir(path)}
	if c.id != "" {
		env = append(env, "CNI_CONTAINERID="+c.id)
	}
	if c.ifname != "" {
		env = append(env, "CNI_IFNAME="+c.ifname)
	}
	if c.args != "" {
		env = append(env, "CNI_ARGS="+c.args)
	}
	return execute(t, path, append(env, c.env...), c.conf)
}

// plugin runs local-ipam.
func plugin(t testing.TB, c cniCall) execOut {
	t.Helper()
	return runCNI(t, binPath(t, "local-ipam"), c)
}

// operator runs local-ipam as an operator does: arguments, no CNI_COMMAND.
func operator(t testing.TB, args ...string) execOut {
	t.Helper()
	return execute(t, binPath(t, "local-ipam"), nil, nil, args...)
}

// ---------------------------------------------------------------------------
// Configs.

// netw is one network config under test: its name, data dir and ipam section.
type netw struct {
	version string
	name    string
	dataDir string
	ipam    map[string]any
}

func newNet(t testing.TB, version, name string, ipam map[string]any) *netw {
	t.Helper()
	n := &netw{version: version, name: name, dataDir: t.TempDir(), ipam: map[string]any{"type": "local-ipam"}}
	for k, v := range ipam {
		n.ipam[k] = v
	}
	return n
}

// dir is the network's store directory.
func (n *netw) dir() string { return filepath.Join(n.dataDir, n.name) }

// conf is the config as sent on stdin, with extra top-level keys.
func (n *netw) conf(t testing.TB, extra map[string]any) []byte {
	t.Helper()
	ipam := map[string]any{"dataDir": n.dataDir}
	for k, v := range n.ipam {
		ipam[k] = v
	}
	m := map[string]any{"cniVersion": n.version, "name": n.name, "type": "bridge", "ipam": ipam}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// with returns a copy of the network with more (or replaced) ipam fields.
func (n *netw) with(ipam map[string]any) *netw {
	c := *n
	c.ipam = map[string]any{}
	for k, v := range n.ipam {
		c.ipam[k] = v
	}
	for k, v := range ipam {
		c.ipam[k] = v
	}
	return &c
}

// add runs ADD and requires success; it returns the result.
func (n *netw) add(t testing.TB, id, ifname string, env ...string) addResult {
	t.Helper()
	o := plugin(t, cniCall{cmd: "ADD", id: id, ifname: ifname, conf: n.conf(t, nil), env: env})
	if o.exit != 0 {
		t.Fatalf("ADD %s/%s failed: %s", id, ifname, o)
	}
	return parseResult(t, o)
}

// del runs DEL and requires success.
func (n *netw) del(t testing.TB, id, ifname string) {
	t.Helper()
	if o := plugin(t, cniCall{cmd: "DEL", id: id, ifname: ifname, conf: n.conf(t, nil)}); o.exit != 0 || o.stdout != "" {
		t.Fatalf("DEL %s/%s: want exit 0 and no output, got %s", id, ifname, o)
	}
}

// addResult is the part of an ADD result the tests look at.
type addResult struct {
	raw        json.RawMessage
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"ips"`
}

func parseResult(t testing.TB, o execOut) addResult {
	t.Helper()
	var r addResult
	if err := json.Unmarshal([]byte(o.stdout), &r); err != nil {
		t.Fatalf("ADD output is not a result (%v): %s", err, o)
	}
	r.raw = json.RawMessage(o.stdout)
	return r
}

// addrs lists the result's addresses (with prefix length).
func (r addResult) addrs() []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address)
	}
	return out
}

// cniErr is the error object a failed call prints.
type cniErr struct {
	CNIVersion string `json:"cniVersion"`
	Code       int    `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// wantError requires a failed call (exit 1) that printed exactly one well-formed CNI
// error object with the given code on stdout, and no Go panic on stderr.
func wantError(t testing.TB, o execOut, code int) cniErr {
	t.Helper()
	if o.exit != 1 {
		t.Fatalf("want exit 1 with CNI error code %d, got %s", code, o)
	}
	noPanic(t, o)
	dec := json.NewDecoder(strings.NewReader(o.stdout))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("stdout of a failed call is not a JSON object (%v): %s", err, o)
	}
	if dec.More() {
		t.Fatalf("stdout of a failed call holds more than one JSON value: %s", o)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "cniVersion,code,details,msg" {
		t.Errorf("error object keys = %s, want cniVersion, code, msg, details: %s", got, o)
	}
	var e cniErr
	if err := json.Unmarshal([]byte(o.stdout), &e); err != nil {
		t.Fatalf("error object does not decode (%v): %s", err, o)
	}
	if e.Code != code {
		t.Fatalf("error code = %d, want %d: %s", e.Code, code, o)
	}
	if e.Msg == "" || e.CNIVersion == "" {
		t.Errorf("error object without msg or cniVersion: %s", o)
	}
	return e
}

func noPanic(t testing.TB, o execOut) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "runtime error", "[signal "} {
		if strings.Contains(o.stderr, s) {
			t.Errorf("stderr looks like a Go crash (%q): %s", s, o)
		}
	}
}

// wantOK requires exit 0 and nothing on stdout (DEL, CHECK, GC, STATUS).
func wantOK(t testing.TB, o execOut, what string) {
	t.Helper()
	if o.exit != 0 || strings.TrimSpace(o.stdout) != "" {
		t.Fatalf("%s: want exit 0 and empty stdout, got %s", what, o)
	}
	noPanic(t, o)
}

// ---------------------------------------------------------------------------
// Stores.

// dirFiles returns the regular files directly in dir (name -> content). Directories (the
// .local-ipam index) are listed as "<dir>".
func dirFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		switch {
		case e.IsDir():
			out[e.Name()] = "<dir>"
		case e.Type().IsRegular():
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = string(b)
		default:
			out[e.Name()] = "<" + e.Type().String() + ">"
		}
	}
	return out
}

// recordFiles is dirFiles without the lock, the cursors and the index directory: the
// reservations (and whatever stray files sit beside them).
func recordFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := dirFiles(t, dir)
	for k := range out {
		if k == "lock" || k == ".local-ipam" || strings.HasPrefix(k, "last_reserved_ip.") {
			delete(out, k)
		}
	}
	return out
}

func writeIn(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pathExists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// recKey is a record's content for an attachment, as host-local writes it.
func recKey(id, ifname string) string { return id + "\r\n" + ifname }

// attachments builds a GC list from "id/ifname" strings.
func attachments(list ...string) []map[string]string {
	out := []map[string]string{}
	for _, s := range list {
		id, ifname, _ := strings.Cut(s, "/")
		out = append(out, map[string]string{"containerID": id, "ifname": ifname})
	}
	return out
}

// listed is one entry of `local-ipam list --json`.
type listed struct {
	Network     string `json:"network"`
	Address     string `json:"address"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Created     string `json:"created"`
}

func listJSON(t testing.TB, args ...string) []listed {
	t.Helper()
	o := operator(t, append([]string{"list", "--json"}, args...)...)
	if o.exit != 0 {
		t.Fatalf("list --json %v: %s", args, o)
	}
	var out []listed
	if err := json.Unmarshal([]byte(o.stdout), &out); err != nil {
		t.Fatalf("list --json output does not decode (%v): %s", err, o)
	}
	return out
}

// diffMaps reports the differences between two name -> content maps.
func diffMaps(got, want map[string]string) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("missing %s (%q)", k, w))
		} else if g != w {
			d = append(d, fmt.Sprintf("%s = %q, want %q", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("unexpected %s (%q)", k, g))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "; ")
}

// usageJSON is the output of `local-ipam usage --json`.
type usageJSON struct {
	Network   string     `json:"network"`
	DataDir   string     `json:"dataDir"`
	RangeSets []usageSet `json:"rangeSets"`
}

type usageSet struct {
	Set      int     `json:"set"`
	Ranges   string  `json:"ranges"`
	Size     uint64  `json:"size"`
	InUse    uint64  `json:"inUse"`
	Excluded uint64  `json:"excluded"`
	Free     uint64  `json:"free"`
	Percent  float64 `json:"percentUsed"`
}

// rawJSON embeds a JSON text in a config as is.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }
