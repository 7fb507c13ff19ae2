package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestTypoWarning: a misspelled key of ipam, of a range or of the store is accepted (as
// host-local accepts unknown keys) and named on stderr, once per call, with the key meant
// and its path; the call's result is that of the same config without it.
func TestTypoWarning(t *testing.T) {
	t.Parallel()
	clean := newNet(t, "1.1.0", "typo", map[string]any{"subnet": "10.40.0.0/24"})
	typo := clean.with(map[string]any{"exlcude": []string{"10.40.0.0/28"}})
	typo.dataDir = t.TempDir()

	o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth0", Conf: typo.conf(t, nil)})
	if o.Exit != 0 {
		t.Fatalf("ADD with a misspelled key failed: %s", o)
	}
	want := `local-ipam: unknown key "exlcude", did you mean "exclude"? (at ipam.exlcude)` + "\n"
	if o.Stderr != want {
		t.Errorf("ADD stderr = %q, want %q", o.Stderr, want)
	}
	ref := plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth0", Conf: clean.conf(t, nil)})
	if ref.Exit != 0 {
		t.Fatalf("ADD without the misspelled key failed: %s", ref)
	}
	if ref.Stderr != "" {
		t.Errorf("ADD of a config without misspellings wrote on stderr: %q", ref.Stderr)
	}
	if o.Stdout != ref.Stdout {
		t.Errorf("the misspelled key changed the result:\n%s\nwant\n%s", o.Stdout, ref.Stdout)
	}
	if got := o.Addrs(t); len(got) != 1 || got[0] != "10.40.0.2/24" {
		t.Errorf("ADD got %v: the misspelled exclusion was applied, or the walk changed", got)
	}

	// A key given twice: ADD goes on as host-local does (the last one as written counts)
	// and says so.
	twice := clean.with(nil)
	twice.dataDir = t.TempDir()
	conf := strings.Replace(string(twice.conf(t, nil)), `"subnet":`, `"exclude":["10.40.0.0/28"],"Exclude":[],"subnet":`, 1)
	o = plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth0", Conf: []byte(conf)})
	if w := `local-ipam: key "exclude" is given 2 times (as "exclude", "Exclude"): only one of them counts (which one depends on the runtime): keep one (at ipam.Exclude)` + "\n"; o.Exit != 0 || o.Stderr != w || o.Stdout != ref.Stdout {
		t.Errorf("ADD with a key given twice: want the result of the config without it and stderr %q, got %s", w, o)
	}

	// A key with a line break in it: still one line on stderr.
	nl := clean.with(map[string]any{"exclude\n": []string{"10.40.0.0/28"}})
	nl.dataDir = t.TempDir()
	o = plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth0", Conf: nl.conf(t, nil)})
	if w := `local-ipam: unknown key "exclude\n", did you mean "exclude"? (at ipam["exclude\n"])` + "\n"; o.Exit != 0 || o.Stderr != w {
		t.Errorf("ADD with a key holding a line break: want stderr %q, got %s", w, o)
	}

	// The other verbs, and a range's and the store's keys, with their paths.
	more := typo.with(map[string]any{"freeOnReboo": true, "store": map[string]any{"type": "disk", "nodes": "x"},
		"subnet": nil, "ranges": []any{[]any{map[string]any{"subnet": "10.40.0.0/24", "rangeStrat": "10.40.0.9"}}}})
	wantLines := []string{
		`local-ipam: unknown key "exlcude", did you mean "exclude"? (at ipam.exlcude)`,
		`local-ipam: unknown key "freeOnReboo", did you mean "freeOnReboot"? (at ipam.freeOnReboo)`,
		`local-ipam: unknown key "rangeStrat", did you mean "rangeStart"? (at ipam.ranges[0][0].rangeStrat)`,
		`local-ipam: unknown key "nodes", did you mean "node"? (at ipam.store.nodes)`,
	}
	for _, c := range []struct {
		call  cniexec.Call
		extra map[string]any
	}{
		{cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0"}, nil},
		{cniexec.Call{Cmd: "CHECK", ID: "b", IfName: "eth0"}, nil},
		{cniexec.Call{Cmd: "STATUS"}, nil},
		{cniexec.Call{Cmd: "GC"}, map[string]any{validAttachments: attachments("b/eth0")}},
		{cniexec.Call{Cmd: "DEL", ID: "b", IfName: "eth0"}, nil},
	} {
		c.call.Conf = more.conf(t, c.extra)
		o := plugin(t, c.call)
		if o.Exit != 0 {
			t.Errorf("%s with misspelled keys failed: %s", c.call.Cmd, o)
		}
		if got := strings.TrimSuffix(o.Stderr, "\n"); got != strings.Join(wantLines, "\n") {
			t.Errorf("%s stderr:\n%s\nwant:\n%s", c.call.Cmd, o.Stderr, strings.Join(wantLines, "\n"))
		}
	}
}

// confBlocks returns the JSON code blocks of a markdown file that hold an ipam section.
func confBlocks(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], `"ipam"`) {
			out = append(out, m[1])
		}
	}
	return out
}

// lint runs local-ipam lint on conf (given on stdin with "-", else in a file).
func lint(t *testing.T, conf string, viaStdin bool, args ...string) cniexec.Out {
	t.Helper()
	if viaStdin {
		return cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, []byte(conf), append([]string{"lint", "--conf", "-"}, args...)...)
	}
	f := filepath.Join(t.TempDir(), "net.conflist")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return operator(t, append([]string{"lint", "--conf", f}, args...)...)
}

// TestLintExamples: every example config of the README and the docs is clean.
func TestLintExamples(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../docs/*.md")
	n := 0
	for _, f := range append([]string{"../../README.md"}, files...) {
		for _, conf := range confBlocks(t, f) {
			n++
			o := lint(t, conf, n%2 == 0)
			if o.Exit != 0 || !strings.HasSuffix(o.Stdout, ": no findings\n") {
				t.Errorf("lint of an example of %s: %s\n%s", f, o, conf)
			}
			j := lint(t, conf, false, "--json")
			if j.Exit != 0 || strings.TrimSpace(j.Stdout) != "[]" {
				t.Errorf("lint --json of an example of %s: %s", f, j)
			}
		}
	}
	if n < 3 {
		t.Fatalf("found only %d example configs in the README and docs", n)
	}
}

type finding struct {
	Path     string `json:"path"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

// TestLintFindings: each check of docs/LINT.md finds its mistake, at its JSON path, in a
// config and in a conflist; exit 1, the same findings with --json; usage errors exit 2.
func TestLintFindings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ipam string
		path, sev  string
		msg        string // in the message
	}{
		{"misspelled ipam key", `"subnet":"10.40.0.0/24","exlcude":["10.40.0.0/28"]`, "ipam.exlcude", "error", `did you mean "exclude"?`},
		{"misspelled range key", `"ranges":[[{"subnet":"10.40.0.0/24","gatway":"10.40.0.9"}]]`, "ipam.ranges[0][0].gatway", "error", `did you mean "gateway"?`},
		{"misspelled store key", `"subnet":"10.40.0.0/24","store":{"type":"etcd","endpoint":["http://e:2379"]}`, "ipam.store.endpoint", "error", `did you mean "endpoints"?`},
		{"misspelled route key", `"subnet":"10.40.0.0/24","routes":[{"dts":"0.0.0.0/0"}]`, "ipam.routes[0].dts", "error", `did you mean "dst"?`},
		{"unknown ipam key", `"subnet":"10.40.0.0/24","comment":"x"`, "ipam.comment", "warning", "ignores it"},
		{"unparsable subnet", `"ranges":[[{"subnet":"10.40.0.0/24"}],[{"subnet":"10.41.0.0/33"}]]`, "ipam.ranges[1][0]", "error", "invalid CIDR"},
		{"wrong JSON type", `"subnet":"10.40.0.0/24","freeOnReboot":"yes"`, "ipam.freeOnReboot", "error", "cannot unmarshal"},
		{"overlap in a set", `"ranges":[[{"subnet":"10.40.0.0/24"},{"subnet":"10.40.0.128/25"}]]`, "ipam.ranges[0]", "error", "overlap"},
		{"overlapping sets", `"ranges":[[{"subnet":"10.40.0.0/24"}],[{"subnet":"10.40.0.0/25"}]]`, "ipam.ranges[1][0]", "error", "ipam.ranges[0][0]: range sets must not overlap"},
		{"legacy range overlapping ranges", `"subnet":"10.40.0.0/24","ranges":[[{"subnet":"10.40.0.0/25"}]]`, "ipam.ranges[0][0]", "error", "ipam: range sets must not overlap"},
		{"bad exclusion", `"subnet":"10.40.0.0/24","exclude":["10.40.0.1/24"]`, "ipam.exclude[0]", "error", "host bits"},
		{"exclusion covering the set", `"ranges":[[{"subnet":"10.40.0.0/29"}]],"exclude":["10.40.0.0/30","10.40.0.4/30"]`, "ipam.ranges[0]", "error", "every assignable address"},
		{"only the gateway", `"ranges":[[{"subnet":"10.40.0.0/24","rangeStart":"10.40.0.1","rangeEnd":"10.40.0.1"}]]`, "ipam.ranges[0]", "error", "holds no address but its gateway"},
		{"exclusion of nothing", `"subnet":"10.40.0.0/24","exclude":["10.99.0.0/24"]`, "ipam.exclude[0]", "warning", "excludes no address"},
		{"gateway outside the subnet", `"ranges":[[{"subnet":"10.40.0.0/24","gateway":"10.41.0.1"}]]`, "ipam.ranges[0][0]", "error", "not in network"},
		{"gateway the network address", `"ranges":[[{"subnet":"10.40.0.0/24","gateway":"10.40.0.0"}]]`, "ipam.ranges[0][0].gateway", "warning", "network address"},
		{"gateway the broadcast address", `"subnet":"10.40.0.0/24","gateway":"10.40.0.255"`, "ipam.gateway", "warning", "broadcast address"},
		{"gateway excluded", `"ranges":[[{"subnet":"10.40.0.0/24","gateway":"10.40.0.9"}]],"exclude":["10.40.0.8/29"]`, "ipam.ranges[0][0].gateway", "warning", "inside the exclusion 10.40.0.8-10.40.0.15"},
		{"legacy gateway without subnet", `"ranges":[[{"subnet":"10.40.0.0/24"}]],"gateway":"10.40.0.1"`, "ipam.gateway", "warning", "ipam.subnet"},
		{"bad store", `"subnet":"10.40.0.0/24","store":{"type":"etcd"}`, "ipam.store", "error", "endpoints"},
		{"etcd field with the disk store", `"subnet":"10.40.0.0/24","store":{"type":"disk","certFile":"/c.pem"}`, "ipam.store.certFile", "warning", "only the etcd store"},
		{"no ranges", `"type":"local-ipam"`, "", "error", "no IP ranges"},
		{"resolvConf that cannot be read", `"subnet":"10.40.0.0/24","resolvConf":"/nonexistent/resolv.conf"`, "ipam.resolvConf", "warning", "no such file or directory (on this machine): every ADD fails where it cannot be read"},
		// A key given twice counts only the last time (encoding/json, host-local): an
		// exclusion or a gateway silently undone.
		{"key given twice", `"subnet":"10.40.0.0/24","exclude":["10.40.0.0/28"],"exclude":[]`, "ipam.exclude", "error", `key "exclude" is given 2 times (as "exclude", "exclude"): only one of them counts`},
		{"key given again in another case", `"subnet":"10.40.0.0/24","exclude":["10.40.0.0/28"],"Exclude":[]`, "ipam.Exclude", "error", `(as "exclude", "Exclude")`},
		{"range key given twice", `"ranges":[[{"subnet":"10.40.0.0/24","gateway":"10.40.0.1","GATEWAY":"10.40.0.9"}]]`, "ipam.ranges[0][0].GATEWAY", "error", `key "gateway" is given 2 times`},
		{"store key given twice", `"subnet":"10.40.0.0/24","store":{"type":"etcd","endpoints":["http://e:2379"],"prefix":"/a","prefix":"/b"}`, "ipam.store.prefix", "error", `key "prefix" is given 2 times`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conf := `{"cniVersion":"1.0.0","name":"n","type":"bridge","isGateway":true,"ipam":{"type":"local-ipam",` + c.ipam + `}}`
			list := `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"tuning","mtu":1400},{"type":"bridge","hairpinMode":true,"ipam":{"type":"local-ipam",` + c.ipam + `}}]}`
			for _, v := range []struct {
				conf, prefix string
			}{{conf, ""}, {list, "plugins[1]"}} {
				want := c.path
				if v.prefix != "" {
					want = strings.TrimSuffix(v.prefix+"."+c.path, ".")
				}
				o := lint(t, v.conf, v.prefix != "")
				if o.Exit != 1 {
					t.Errorf("lint: %s, want exit 1\n%s", o, v.conf)
				}
				shown := want
				if shown == "" {
					shown = "(config)"
				}
				line := c.sev + ": " + shown + ": "
				if !strings.Contains(o.Stdout, line) || !strings.Contains(o.Stdout, c.msg) {
					t.Errorf("lint output lacks %q ... %q:\n%s", line, c.msg, o.Stdout)
				}
				j := lint(t, v.conf, false, "--json")
				var fs []finding
				if err := json.Unmarshal([]byte(j.Stdout), &fs); err != nil || j.Exit != 1 {
					t.Fatalf("lint --json: %v: %s", err, j)
				}
				found := false
				for _, f := range fs {
					found = found || (f.Path == want && f.Severity == c.sev && strings.Contains(f.Message, c.msg))
				}
				if !found {
					t.Errorf("lint --json: no %s at %q saying %q: %s", c.sev, want, c.msg, j.Stdout)
				}
				if n := strings.Count(o.Stdout, "\n"); n != len(fs) {
					t.Errorf("lint printed %d lines, --json %d findings", n, len(fs))
				}
			}
		})
	}

	// Misspelled keys of a conflist and of its plugins' top level; other plugins' own
	// fields are no findings.
	o := lint(t, `{"cniVersion":"1.0.0","nmae":"n","plugins":[{"type":"bridge","ipMasq":true,"mtu":1400,"ipma":{}},
		{"type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"local-ipam","subnet":"10.40.0.0/24"}}]}`, false)
	for _, w := range []string{`error: nmae: unknown key "nmae", did you mean "name"?`, `error: plugins[0].ipma: unknown key "ipma", did you mean "ipam"?`} {
		if !strings.Contains(o.Stdout, w+"\n") {
			t.Errorf("conflist lint lacks %q: %s", w, o)
		}
	}
	if n := strings.Count(o.Stdout, "\n"); n != 2 || o.Exit != 1 {
		t.Errorf("conflist lint: want exactly the two findings, exit 1: %s", o)
	}

	for _, args := range [][]string{{"lint"}, {"lint", "--conf"}, {"lint", "--conf", "x", "extra"}, {"lint", "--cnof", "x"}} {
		if o := operator(t, args...); o.Exit != 2 {
			t.Errorf("%v: %s, want exit 2", args, o)
		}
	}
	if o := operator(t, "lint", "--conf", filepath.Join(t.TempDir(), "none")); o.Exit != 1 || !strings.Contains(o.Stderr, "no such file") {
		t.Errorf("lint of a missing file: %s, want exit 1 naming the error", o)
	}
	if o := lint(t, "not json", true); o.Exit != 1 || !strings.Contains(o.Stdout, "error: (config): not a JSON object") {
		t.Errorf("lint of a non-JSON config: %s", o)
	}
}

// TestLintSecondIPAM: a conflist with two plugins that have an ipam section gets a warning
// at the second: the operator's commands given it by --conf read only the first's store,
// so a release through it would leave the second's addresses reserved.
func TestLintSecondIPAM(t *testing.T) {
	t.Parallel()
	list := `{"cniVersion":"1.0.0","name":"n","plugins":[
		{"type":"bridge","ipam":{"type":"local-ipam","subnet":"10.40.0.0/24"}},
		{"type":"portmap","capabilities":{"portMappings":true}},
		{"type":"macvlan","master":"eth0","ipam":{"type":"host-local","subnet":"10.41.0.0/24","dataDir":"/run/other"}}]}`
	o := lint(t, list, false)
	want := "warning: plugins[2].ipam: a second plugin with an ipam section: local-ipam's commands given this conflist by --conf (list, usage, release) read only the first one's (plugins[0])\n"
	if o.Exit != 1 || o.Stdout != want {
		t.Errorf("lint: want exit 1 and\n%s got %s", want, o)
	}
}

// TestLintRefusedBySkel: a config that skel refuses before any verb reads it (a missing or
// invalid network name, an unsupported cniVersion) is an error finding at its key, exit 1,
// in a config and in a conflist (the list's name and version); an ADD of it fails too.
func TestLintRefusedBySkel(t *testing.T) {
	t.Parallel()
	ipam := `{"type":"local-ipam","subnet":"10.40.0.0/24","dataDir":"` + t.TempDir() + `"}`
	cases := []struct {
		name, top, path, msg string
		code                 uint
	}{
		{"missing name", `"cniVersion":"1.0.0"`, "name", "missing network name", 7},
		{"invalid name", `"cniVersion":"1.0.0","name":"my net"`, "name", `network name "my net": invalid characters`, 7},
		{"name starting with a dot", `"cniVersion":"1.0.0","name":".n"`, "name", "invalid characters", 7},
		{"unsupported cniVersion", `"cniVersion":"2.0.0","name":"n"`, "cniVersion", `cniVersion "2.0.0" is not supported`, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conf := `{` + c.top + `,"type":"bridge","ipam":` + ipam + `}`
			list := `{` + c.top + `,"plugins":[{"type":"bridge","ipam":` + ipam + `}]}`
			for _, v := range []string{conf, list} {
				o := lint(t, v, false)
				if want := "error: " + c.path + ": "; o.Exit != 1 || !strings.Contains(o.Stdout, want) || !strings.Contains(o.Stdout, c.msg) {
					t.Errorf("lint: %s, want exit 1 and %q ... %q\n%s", o, want, c.msg, v)
				}
			}
			wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth0", Conf: []byte(conf)}), c.code)
		})
	}
	if o := lint(t, `{"name":"n","type":"bridge","ipam":`+ipam+`}`, true); o.Exit != 0 {
		t.Errorf("lint of a config without cniVersion (read as 0.1.0): %s, want exit 0", o)
	}
}
