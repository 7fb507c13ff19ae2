package compat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// ---------------------------------------------------------------------------
// The binaries, and invoking them as a runtime does (internal/cniexec).

// binaries are the reference and the plugin under test.
type binaries struct {
	hostLocal string // the reference
	plugin    string // the binary under test
	// pluginIsHostLocal is true when COMPAT_PLUGIN points at host-local itself (the
	// self-test mode used while local-ipam is being written).
	pluginIsHostLocal bool
}

// needBins returns the binaries or fails the test with a clear message.
func needBins(t testing.TB) binaries {
	t.Helper()
	b := binaries{hostLocal: cniexec.Bin(t, "host-local"), plugin: os.Getenv("COMPAT_PLUGIN")}
	if b.plugin == "" {
		dir, err := cniexec.BinDir()
		if err != nil {
			t.Fatalf("compat tests need their binaries: %v", err)
		}
		b.plugin = filepath.Join(dir, "local-ipam")
	}
	if p, err := filepath.Abs(b.plugin); err == nil {
		b.plugin = p
	}
	if err := cniexec.Executable(b.plugin); err != nil {
		t.Fatalf("compat tests need their binaries: plugin under test %s not usable (%v); run `make build`, or set COMPAT_PLUGIN "+
			"(COMPAT_PLUGIN=%s runs the suite against host-local itself)", b.plugin, err, b.hostLocal)
	}
	hl, _ := os.Stat(b.hostLocal)
	pl, _ := os.Stat(b.plugin)
	b.pluginIsHostLocal = os.SameFile(hl, pl) || filepath.Base(b.plugin) == "host-local"
	return b
}

// checkCNIError verifies that a failed call printed a well-formed CNI error. SPEC 1.x
// lists cniVersion in the error object, but skel (and so host-local) prints only code,
// msg and details: cniVersion is checked when present, not required.
func checkCNIError(o cniexec.Out) error {
	if o.OK() {
		return errors.New("call succeeded, an error was expected")
	}
	if _, _, err := cniexec.ParseError(o.Stdout); err != nil {
		return fmt.Errorf("%v: %s", err, o)
	}
	return nil
}

// errorCode is the code of the error object o printed (0 when there is none).
func errorCode(o cniexec.Out) uint {
	e, _, _ := cniexec.ParseError(o.Stdout)
	return e.Code
}

// addresses lists the addresses (CIDR form) of an ADD result of any version.
func addresses(stdout string) ([]string, error) {
	r, err := cniexec.ParseResult(stdout)
	return r.Addrs(), err
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
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return []byte(s) // deliberately broken config
	}
	if ipam, ok := m["ipam"].(map[string]any); ok {
		if _, has := ipam["dataDir"]; !has {
			ipam["dataDir"] = dataDir
		}
	}
	return cniexec.Conf(m, extra)
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

// jsonEqual compares two outputs as JSON values; two empty outputs are equal.
func jsonEqual(sa, sb string) (bool, error) {
	a, b := []byte(strings.TrimSpace(sa)), []byte(strings.TrimSpace(sb))
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
