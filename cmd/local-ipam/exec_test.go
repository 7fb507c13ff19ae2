package main

// Exec-level tests of the built binary: every test runs bin/local-ipam (and, for the
// takeover case, bin/host-local) exactly as a runtime or an operator would, with the CNI
// environment variables and the config on stdin, or with CLI arguments. The binaries are
// found in LOCAL_IPAM_BIN_DIR, by default <repo root>/bin (`make build peers`). Every
// test uses its own t.TempDir() data dir, so all of them run in parallel.
//
// Finding and running the binaries, and reading back CNI errors and results, is
// internal/cniexec; this file holds the harness particular to these tests (configs,
// assertions, store inspection); the tests are in gc_test.go, status_test.go (also the
// read-only and full file system cases), check_test.go, reboot_test.go, exclude_test.go,
// errors_test.go, cli_test.go and chained_test.go.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// plugin runs local-ipam as a runtime does.
func plugin(t testing.TB, c cniexec.Call) cniexec.Out {
	t.Helper()
	return cniexec.CNI(t, cniexec.Bin(t, "local-ipam"), c)
}

// operator runs local-ipam as an operator does: arguments, no CNI_COMMAND.
func operator(t testing.TB, args ...string) cniexec.Out {
	t.Helper()
	return cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, args...)
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
	return &netw{version: version, name: name, dataDir: t.TempDir(), ipam: cniexec.Merge(map[string]any{"type": "local-ipam"}, ipam)}
}

// dir is the network's store directory.
func (n *netw) dir() string { return filepath.Join(n.dataDir, n.name) }

// conf is the config as sent on stdin, with extra top-level keys.
func (n *netw) conf(t testing.TB, extra map[string]any) []byte {
	t.Helper()
	return cniexec.NetConf(n.version, n.name, cniexec.Merge(map[string]any{"dataDir": n.dataDir}, n.ipam), extra)
}

// confFile writes the network's config to a file of its own and returns its path, for
// the operator's --conf.
func (n *netw) confFile(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeIn(t, dir, n.name+".conf", string(n.conf(t, nil)))
	return filepath.Join(dir, n.name+".conf")
}

// with returns a copy of the network with more (or replaced) ipam fields.
func (n *netw) with(ipam map[string]any) *netw {
	c := *n
	c.ipam = cniexec.Merge(n.ipam, ipam)
	return &c
}

// add runs ADD and requires success; it returns the result.
func (n *netw) add(t testing.TB, id, ifname string, env ...string) cniexec.Result {
	t.Helper()
	o := plugin(t, cniexec.Call{Cmd: "ADD", ID: id, IfName: ifname, Conf: n.conf(t, nil), Env: env})
	if o.Exit != 0 {
		t.Fatalf("ADD %s/%s failed: %s", id, ifname, o)
	}
	return o.Result(t)
}

// del runs DEL and requires success.
func (n *netw) del(t testing.TB, id, ifname string) {
	t.Helper()
	if o := plugin(t, cniexec.Call{Cmd: "DEL", ID: id, IfName: ifname, Conf: n.conf(t, nil)}); o.Exit != 0 || o.Stdout != "" {
		t.Fatalf("DEL %s/%s: want exit 0 and no output, got %s", id, ifname, o)
	}
}

// check runs CHECK of the attachment with prev, its ADD result, as prevResult.
func (n *netw) check(t testing.TB, id, ifname string, prev json.RawMessage) cniexec.Out {
	t.Helper()
	return plugin(t, cniexec.Call{Cmd: "CHECK", ID: id, IfName: ifname, Conf: n.conf(t, map[string]any{"prevResult": prev})})
}

// gc runs GC with the attachments ("id/ifname") listed as valid under key:
// validAttachments, or the older cni.dev/attachments.
func (n *netw) gc(t testing.TB, key string, valid ...string) cniexec.Out {
	t.Helper()
	return plugin(t, cniexec.Call{Cmd: "GC", Conf: n.conf(t, map[string]any{key: attachments(valid...)})})
}

// validAttachments is the GC key of CNI 1.1.
const validAttachments = "cni.dev/valid-attachments"

// wantRecords requires the network's records to be exactly want (address -> content).
func (n *netw) wantRecords(t testing.TB, want map[string]string, when string) {
	t.Helper()
	if d := diffMaps(recordFiles(t, n.dir()), want); d != "" {
		t.Fatalf("records %s: %s", when, d)
	}
}

// wantError requires a failed call (exit 1) that printed exactly one well-formed CNI
// error object, with all four keys of the spec and the given code, on stdout, and no Go
// panic on stderr.
func wantError(t testing.TB, o cniexec.Out, code uint) cniexec.CNIError {
	t.Helper()
	if o.Exit != 1 {
		t.Fatalf("want exit 1 with CNI error code %d, got %s", code, o)
	}
	noPanic(t, o)
	e, keys, err := cniexec.ParseError(o.Stdout)
	if keys != nil {
		if got := strings.Join(keys, ","); got != "cniVersion,code,details,msg" {
			t.Errorf("error object keys = %s, want cniVersion, code, msg, details: %s", got, o)
		}
	}
	if err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	if e.Code != code {
		t.Fatalf("error code = %d, want %d: %s", e.Code, code, o)
	}
	if (code == 50 || code == 100) && e.Details == "" {
		t.Errorf("code %d without details (what to do): %s", code, o)
	}
	return e
}

func noPanic(t testing.TB, o cniexec.Out) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "runtime error", "[signal "} {
		if strings.Contains(o.Stderr, s) {
			t.Errorf("stderr looks like a Go crash (%q): %s", s, o)
		}
	}
}

// wantOK requires exit 0 and nothing on stdout (DEL, CHECK, GC, STATUS).
func wantOK(t testing.TB, o cniexec.Out, what string) {
	t.Helper()
	if o.Exit != 0 || strings.TrimSpace(o.Stdout) != "" {
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
	if o.Exit != 0 {
		t.Fatalf("list --json %v: %s", args, o)
	}
	var out []listed
	if err := json.Unmarshal([]byte(o.Stdout), &out); err != nil {
		t.Fatalf("list --json output does not decode (%v): %s", err, o)
	}
	return out
}

// diffMaps reports the differences between two name -> content (or value) maps.
func diffMaps[V comparable](got, want map[string]V) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("missing %s (%#v)", k, w))
		} else if g != w {
			d = append(d, fmt.Sprintf("%s = %#v, want %#v", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("unexpected %s (%#v)", k, g))
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
