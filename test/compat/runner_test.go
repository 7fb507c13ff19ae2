package compat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// op is one call in a scenario.
type op struct {
	Cmd     string         // ADD, DEL, CHECK, GC, STATUS, VERSION or anything else
	ID      string         // CNI_CONTAINERID
	IfName  string         // CNI_IFNAME; "" = eth0, "-" = unset
	Netns   string         // CNI_NETNS; "" = a fake path, "-" = unset
	Path    string         // CNI_PATH; "" = the bin dir, "-" = unset
	CNIArgs string         // CNI_ARGS
	Extra   map[string]any // top-level keys merged into the config (args, runtimeConfig, ...)
	Conf    string         // replaces the scenario's config template for this call
	Prev    string         // CHECK: prevResult JSON; "" = this side's last ADD result for (ID, IfName), "-" = none
	Want    string         // "ok" or "fail": what host-local does (checked on the reference side); "" = not asserted
	WantIPs []string       // on a successful ADD: the addresses host-local hands out, in order
	// Ours is what local-ipam deliberately does instead of host-local ("ok", or "fail"
	// with code OursCode when non-zero), documented in docs/MIGRATION.md. When the side under test
	// runs local-ipam, its outcome is checked against Ours rather than against host-local's,
	// and the stores are not compared after this step (so such a step that changes one
	// store only must end its scenario).
	Ours     string
	OursCode uint
	// NoErrJSON: on failure, do not require stdout to be a single CNI error object (skel
	// prints the result and then an error when it refuses CNI_NETNS after the ADD).
	NoErrJSON bool
}

func addOK(id string, ips ...string) op { return op{Cmd: "ADD", ID: id, Want: "ok", WantIPs: ips} }
func addFail(id string) op              { return op{Cmd: "ADD", ID: id, Want: "fail"} }
func del(id string) op                  { return op{Cmd: "DEL", ID: id, Want: "ok"} }
func check(id string) op                { return op{Cmd: "CHECK", ID: id, Want: "ok"} }
func checkFail(id string) op            { return op{Cmd: "CHECK", ID: id, Want: "fail"} }

func (o op) ifname(n string) op  { o.IfName = n; return o }
func (o op) cniArgs(a string) op { o.CNIArgs = a; return o }
func (o op) conf(c string) op    { o.Conf = c; return o }
func (o op) prev(p string) op    { o.Prev = p; return o }
func (o op) want(w string) op    { o.Want = w; return o }

// ours marks a deliberate difference: local-ipam answers w ("ok" or "fail") with code.
func (o op) ours(w string, code uint) op { o.Ours, o.OursCode = w, code; return o }
func (o op) extra(k string, v any) op {
	m := map[string]any{}
	for k2, v2 := range o.Extra {
		m[k2] = v2
	}
	m[k] = v
	o.Extra = m
	return o
}

// reqArgs is `"args": {"cni": {"ips": [...]}}`.
func (o op) reqArgs(ips ...string) op {
	return o.extra("args", map[string]any{"cni": map[string]any{"ips": ips}})
}

// reqRuntime is `"runtimeConfig": {"ips": [...]}`.
func (o op) reqRuntime(ips ...string) op {
	return o.extra("runtimeConfig", map[string]any{"ips": ips})
}

// adds returns successful ADDs of prefix-from .. prefix-(to-1), without asserting addresses.
func adds(prefix string, from, to int) []op {
	var ops []op
	for i := from; i < to; i++ {
		ops = append(ops, op{Cmd: "ADD", ID: fmt.Sprintf("%s-%02d", prefix, i), Want: "ok"})
	}
	return ops
}

func dels(prefix string, idx ...int) []op {
	var ops []op
	for _, i := range idx {
		ops = append(ops, del(fmt.Sprintf("%s-%02d", prefix, i)))
	}
	return ops
}

func seq(parts ...any) []op {
	var out []op
	for _, p := range parts {
		switch v := p.(type) {
		case op:
			out = append(out, v)
		case []op:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("seq: %T", p))
		}
	}
	return out
}

// cfg builds a network config around an ipam object.
func cfg(version, ipam string) string {
	v := ""
	if version != "" {
		v = fmt.Sprintf(`"cniVersion": %q, `, version)
	}
	return fmt.Sprintf(`{%s"name": %q, "type": "bridge", "ipam": %s}`, v, netName, ipam)
}

// side is one binary (or alternation of binaries) working on one data dir.
type side struct {
	label   string
	dataDir string
	bin     func(step int) string
	lastAdd map[string][]byte // "id/ifname" -> stdout of the last successful ADD
}

func newSide(label, dataDir string, bin func(int) string) *side {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		panic(err)
	}
	return &side{label: label, dataDir: dataDir, bin: bin, lastAdd: map[string][]byte{}}
}

func always(bin string) func(int) string { return func(int) string { return bin } }

func (s *side) netDir() string { return filepath.Join(s.dataDir, netName) }

// seqRunner runs a sequence on two sides and compares them after every step. Side a is the
// reference (host-local's behaviour); its outcomes are checked against op.Want/WantIPs.
type seqRunner struct {
	t      *testing.T
	tmpl   string
	resolv string
	a, b   *side
	step   int
}

func (r *seqRunner) invocation(s *side, o op) cniexec.Call {
	tmpl := r.tmpl
	if o.Conf != "" {
		tmpl = o.Conf
	}
	extra := o.Extra
	if o.Cmd == "CHECK" && o.Prev != "-" {
		prev := []byte(o.Prev)
		if o.Prev == "" {
			prev = s.lastAdd[o.ID+"/"+ifnameOf(o)]
		}
		if len(prev) > 0 {
			var v any
			if err := json.Unmarshal(prev, &v); err != nil {
				r.t.Fatalf("prevResult for %s is not JSON: %v", o.ID, err)
			}
			extra = cniexec.Merge(map[string]any{"prevResult": v}, extra)
		}
	}
	return cniexec.Call{
		Cmd:    o.Cmd,
		ID:     o.ID,
		IfName: ifnameOf(o),
		Netns:  o.Netns, // the same conventions as op's
		Args:   o.CNIArgs,
		Path:   o.Path,
		Conf:   makeConf(r.t, tmpl, s.dataDir, r.resolv, extra),
	}
}

func ifnameOf(o op) string {
	switch o.IfName {
	case "":
		if o.Cmd == "ADD" || o.Cmd == "DEL" || o.Cmd == "CHECK" {
			return "eth0"
		}
		return ""
	case "-":
		return ""
	}
	return o.IfName
}

// one runs o on side s and records ADD results.
func (r *seqRunner) one(s *side, o op) (cniexec.Out, string) {
	bin := s.bin(r.step)
	out := cniexec.CNI(r.t, bin, r.invocation(s, o))
	if o.Cmd == "ADD" && out.OK() {
		s.lastAdd[o.ID+"/"+ifnameOf(o)] = []byte(out.Stdout)
	}
	return out, filepath.Base(bin)
}

func (r *seqRunner) describe(o op) string {
	d := fmt.Sprintf("step %d: %s", r.step, o.Cmd)
	if o.ID != "" {
		d += " " + o.ID + "/" + ifnameOf(o)
	}
	if o.CNIArgs != "" {
		d += " CNI_ARGS=" + o.CNIArgs
	}
	if len(o.Extra) > 0 {
		b, _ := json.Marshal(o.Extra)
		d += " +" + string(b)
	}
	if o.Conf != "" {
		d += " (own config)"
	}
	return d
}

// checkRef asserts that the reference side behaved as the scenario says host-local does.
func (r *seqRunner) checkRef(o op, out cniexec.Out, bin string) {
	t := r.t
	t.Helper()
	switch o.Want {
	case "ok":
		if !out.OK() {
			t.Fatalf("%s: %s on %s failed, the scenario expects success: %s", r.describe(o), bin, r.a.label, out)
		}
	case "fail":
		if out.OK() {
			t.Fatalf("%s: %s on %s succeeded, the scenario expects failure: %s", r.describe(o), bin, r.a.label, out)
		}
	}
	if o.WantIPs != nil && out.OK() {
		got, err := addresses(out.Stdout)
		if err != nil {
			t.Fatalf("%s: %v", r.describe(o), err)
		}
		if !reflect.DeepEqual(got, o.WantIPs) {
			t.Fatalf("%s: %s gave %v, the scenario expects %v", r.describe(o), bin, got, o.WantIPs)
		}
	}
}

// run executes o on both sides and compares outcome, output and stores.
func (r *seqRunner) run(o op) {
	t := r.t
	t.Helper()
	r.step++
	oa, binA := r.one(r.a, o)
	ob, binB := r.one(r.b, o)
	desc := r.describe(o)
	r.checkRef(o, oa, binA)
	if o.Ours != "" && binB != "host-local" {
		r.checkOurs(o, ob, binB, desc)
		return
	}
	if oa.OK() != ob.OK() {
		t.Fatalf("%s: outcomes differ\n  A (%s, %s): %s\n  B (%s, %s): %s",
			desc, binA, r.a.label, oa, binB, r.b.label, ob)
	}
	if oa.OK() {
		eq, err := jsonEqual(oa.Stdout, ob.Stdout)
		if err != nil || !eq {
			t.Fatalf("%s: outputs differ (%v)\n  A (%s): %s\n  B (%s): %s", desc, err, binA, oa.Stdout, binB, ob.Stdout)
		}
	} else if !o.NoErrJSON {
		if err := checkCNIError(oa); err != nil {
			t.Errorf("%s: A (%s): %v", desc, binA, err)
		}
		if err := checkCNIError(ob); err != nil {
			t.Errorf("%s: B (%s): %v", desc, binB, err)
		}
	}
	if d := diffSnapshots(snapshot(t, r.a.dataDir), snapshot(t, r.b.dataDir)); d != "" {
		t.Fatalf("%s: stores differ after the call (A = %s by %s, B = %s by %s):\n%s",
			desc, r.a.label, binA, r.b.label, binB, d)
	}
}

// checkOurs asserts local-ipam's deliberate behaviour for o.
func (r *seqRunner) checkOurs(o op, out cniexec.Out, bin, desc string) {
	t := r.t
	t.Helper()
	switch {
	case o.Ours == "ok" && !out.OK():
		t.Fatalf("%s: %s failed, local-ipam should succeed here: %s", desc, bin, out)
	case o.Ours == "fail" && out.OK():
		t.Fatalf("%s: %s succeeded, local-ipam should fail here: %s", desc, bin, out)
	case o.Ours == "fail":
		if err := checkCNIError(out); err != nil {
			t.Errorf("%s: %s: %v", desc, bin, err)
		}
		if o.OursCode != 0 {
			if c := errorCode(out); c != o.OursCode {
				t.Errorf("%s: %s: code %d, want %d: %s", desc, bin, c, o.OursCode, out)
			}
		}
	}
}

func (r *seqRunner) runAll(ops []op) {
	r.t.Helper()
	for _, o := range ops {
		r.run(o)
	}
}

// build runs ops on one side only (no comparison), checking Want, to prepare a store.
func (r *seqRunner) build(s *side, ops []op) {
	t := r.t
	t.Helper()
	for _, o := range ops {
		r.step++
		out, bin := r.one(s, o)
		switch {
		case o.Want == "ok" && !out.OK():
			t.Fatalf("building the store on %s: %s: %s failed: %s", s.label, r.describe(o), bin, out)
		case o.Want == "fail" && out.OK():
			t.Fatalf("building the store on %s: %s: %s succeeded, expected failure: %s", s.label, r.describe(o), bin, out)
		}
		if o.WantIPs != nil && out.OK() {
			got, _ := addresses(out.Stdout)
			if !reflect.DeepEqual(got, o.WantIPs) {
				t.Fatalf("building the store on %s: %s: %s gave %v, expected %v", s.label, r.describe(o), bin, got, o.WantIPs)
			}
		}
	}
}

// resolvFixture is a resolv.conf exercising host-local's parser: comments, blank and
// short lines, repeated keys, surrounding whitespace, unknown keys.
const resolvFixture = `# resolv.conf fixture for the compat tests
; semicolon comment
nameserver 10.0.0.53
  nameserver   fd00::53   
nameserver
domain first.example.test
search a.example.test b.example.test
search c.example.test
options ndots:5 rotate
options timeout:1
sortlist 10.0.0.0/8
	domain last.example.test

`

func writeResolv(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte(resolvFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeFile writes a file inside a network directory (creating it), mode 0600 as
// host-local writes its records.
func writeFile(t *testing.T, netDir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(netDir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// scenario is one row of the differential table.
type scenario struct {
	name  string
	conf  string
	setup func(t *testing.T, netDir string) // prepares each side's network dir
	ops   []op
}

// runDifferential runs sc with host-local on data dir A and the plugin under test on B.
func runDifferential(t *testing.T, sc scenario) {
	b := needBins(t)
	dir := t.TempDir()
	r := &seqRunner{
		t:      t,
		tmpl:   sc.conf,
		resolv: writeResolv(t),
		a:      newSide("A", filepath.Join(dir, "A"), always(b.hostLocal)),
		b:      newSide("B", filepath.Join(dir, "B"), always(b.plugin)),
	}
	if sc.setup != nil {
		sc.setup(t, r.a.netDir())
		sc.setup(t, r.b.netDir())
	}
	r.runAll(sc.ops)
}

func idList(ids ...string) []map[string]string {
	out := []map[string]string{}
	for _, id := range ids {
		parts := strings.SplitN(id, "/", 2)
		ifn := "eth0"
		if len(parts) == 2 {
			ifn = parts[1]
		}
		out = append(out, map[string]string{"containerID": parts[0], "ifname": ifn})
	}
	return out
}
