package main

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/metricstest"
)

// usageCounts are a range set's counts in the JSON of usage, each as written: a
// json.Number up to 2^53, a string above.
type usageCounts struct {
	size, inUse, excluded, free any
}

// usageSets reads the rangeSets of `usage --json` with numbers kept as written.
func usageSets(t *testing.T, out string) []usageCounts {
	t.Helper()
	var u struct {
		RangeSets []map[string]any `json:"rangeSets"`
	}
	d := json.NewDecoder(strings.NewReader(out))
	d.UseNumber()
	if err := d.Decode(&u); err != nil {
		t.Fatalf("usage --json: %v\n%s", err, out)
	}
	var sets []usageCounts
	for _, s := range u.RangeSets {
		sets = append(sets, usageCounts{s["size"], s["inUse"], s["excluded"], s["free"]})
	}
	return sets
}

// n is a count as usage's JSON must write it: a JSON number.
func n(s string) any { return json.Number(s) }

func TestUsageExact(t *testing.T) {
	t.Parallel()
	const two53 = "9007199254740992" // 0x20000000000000
	for _, c := range []struct {
		name    string
		ipam    map[string]any
		reserve int      // dynamic ADDs before counting
		exclude []string // added to the config after the ADDs
		want    []usageCounts
		table   []string // the rows' SIZE IN USE EXCLUDED FREE, as the table writes them
	}{
		{
			// .1-.254 less the gateway: 253; excluded .200-.207 and .9 (reserved .2-.5 not).
			name: "IPv4 /24", ipam: map[string]any{"subnet": "10.74.0.0/24", "exclude": []string{"10.74.0.200/29", "10.74.0.9"}},
			reserve: 4, exclude: []string{"10.74.0.4/32"},
			want:  []usageCounts{{n("253"), n("4"), n("9"), n("240")}},
			table: []string{"253 4 9 240"},
		},
		{
			name: "IPv6 /64", ipam: map[string]any{"subnet": "fd00:74::/64"}, reserve: 1,
			want:  []usageCounts{{"18446744073709551614", n("1"), n("0"), "18446744073709551613"}},
			table: []string{"2^64-2 1 0 2^64-3"},
		},
		{
			// 2^80-2; excluded a /56 and a /64 (2^72+2^64), and ::3, which is reserved.
			name:    "IPv6 /48 with huge exclusions",
			ipam:    map[string]any{"subnet": "fd00:75::/48", "exclude": []string{"fd00:75:0:100::/56", "fd00:75:0:ff00::/64"}},
			reserve: 2, exclude: []string{"fd00:75::3/128"},
			want: []usageCounts{{"1208925819614629174706174", n("2"), "4740813226943354765312", "1204185006387685819940860"}},
			// 2^72+2^64 = 257*2^64.
			table: []string{"2^80-2 2 257*2^64 65279*2^64-4"},
		},
		{
			// 2^53 is still a JSON number, 2^53+1 a string.
			name: "2^53 and 2^53+1",
			ipam: map[string]any{"ranges": []any{
				[]any{map[string]any{"subnet": "fd00:76::/64", "rangeEnd": "fd00:76::20:0:0:1"}},
				[]any{map[string]any{"subnet": "fd00:77::/64", "rangeEnd": "fd00:77::20:0:0:2"}},
			}},
			want:  []usageCounts{{n(two53), n("0"), n("0"), n(two53)}, {"9007199254740993", n("0"), n("0"), "9007199254740993"}},
			table: []string{"2^53 0 0 2^53", "2^53+1 0 0 2^53+1"},
		},
		{
			// Every IPv6 address but the network address and the gateway; the
			// IPv4-mapped block (2^32) is never handed out.
			name: "IPv6 ::/0", ipam: map[string]any{"subnet": "::/0"},
			want:  []usageCounts{{"340282366920938463463374607431768211454", n("0"), n("4294967296"), "340282366920938463463374607427473244158"}},
			table: []string{"2^128-2 0 4294967296 2^128-4294967298"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			nw := newNet(t, "1.1.0", "exact", c.ipam)
			for i := range c.reserve {
				nw.add(t, fmt.Sprint("c", i), "eth0")
			}
			if c.exclude != nil {
				excl, _ := nw.ipam["exclude"].([]string)
				nw = nw.with(map[string]any{"exclude": append(append([]string{}, excl...), c.exclude...)})
			}
			dir := t.TempDir()
			writeIn(t, dir, "exact.conf", string(nw.conf(t, nil)))
			conf := filepath.Join(dir, "exact.conf")
			o := operator(t, "usage", "--conf", conf, "--json")
			if o.Exit != 0 {
				t.Fatalf("usage --json: %s", o)
			}
			if got := usageSets(t, o.Stdout); fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", c.want) {
				t.Errorf("usage --json counts:\n got %#v\nwant %#v\n%s", got, c.want, o.Stdout)
			}
			if strings.Contains(o.Stdout, "saturated") {
				t.Errorf("usage --json still says saturated:\n%s", o.Stdout)
			}
			o = operator(t, "usage", "--conf", conf)
			lines := strings.Split(strings.TrimRight(o.Stdout, "\n"), "\n")
			if o.Exit != 0 || len(lines) != 2+len(c.table) {
				t.Fatalf("usage: want a title, a header and %d rows: %s", len(c.table), o)
			}
			for i, want := range c.table {
				if f := strings.Fields(lines[2+i]); len(f) < 5 || strings.Join(f[1:5], " ") != want {
					t.Errorf("usage row %d: %q, want SIZE IN USE EXCLUDED FREE %q", i, lines[2+i], want)
				}
			}
		})
	}
}

// confDirNet is a network of the config directory of TestUsagePrometheus.
type confDirNet struct {
	file    string
	name    string
	ipam    map[string]any
	list    bool // written as a conflist: bridge with the ipam, then portmap
	reserve int
}

func (c confDirNet) write(t *testing.T, dir string) {
	t.Helper()
	b := cniexec.NetConf("1.1.0", c.name, c.ipam)
	if c.list {
		b = cniexec.Conf(map[string]any{"cniVersion": "1.1.0", "name": c.name, "plugins": []any{
			map[string]any{"type": "bridge", "bridge": "cni0", "ipam": c.ipam},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		}})
	}
	writeIn(t, dir, c.file, string(b))
}

func TestUsagePrometheus(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ipam := func(typ string, m map[string]any) map[string]any {
		return cniexec.Merge(map[string]any{"type": typ, "dataDir": dataDir}, m)
	}
	// pods: a /28 (13 addresses), 3 excluded, 9 in use: 90 %. half: 2 of 5. full: 1 of 1.
	nets := []confDirNet{
		{file: "10-pods.conflist", name: "pods", list: true, reserve: 9, ipam: ipam("host-local", map[string]any{
			"ranges":  []any{[]any{map[string]any{"subnet": "10.9.0.0/28"}}, []any{map[string]any{"subnet": "fd00:9::/64"}}},
			"exclude": []string{"10.9.0.12/30"}})},
		{file: "20-half.conf", name: "half", reserve: 2, ipam: ipam("local-ipam", map[string]any{"subnet": "10.10.0.0/29"})},
		{file: "30-full.conf", name: "full", reserve: 1, ipam: ipam("local-ipam", map[string]any{"subnet": "10.11.0.0/30"})},
	}
	dir := t.TempDir()
	for _, nw := range nets {
		nw.write(t, dir)
		conf := cniexec.NetConf("1.1.0", nw.name, nw.ipam)
		for i := range nw.reserve {
			if o := plugin(t, cniexec.Call{Cmd: "ADD", ID: fmt.Sprint(nw.name, i), IfName: "eth0", Conf: conf}); o.Exit != 0 {
				t.Fatalf("ADD: %s", o)
			}
		}
	}
	// Skipped: another IPAM, no IPAM, not a config file, a network named again.
	confDirNet{file: "40-dhcp.conf", name: "dhcp", ipam: map[string]any{"type": "dhcp"}}.write(t, dir)
	writeIn(t, dir, "50-noipam.conflist", `{"cniVersion":"1.1.0","name":"noipam","plugins":[{"type":"macvlan","master":"eth0"},{"type":"tuning"}]}`)
	writeIn(t, dir, "README.txt", "not a config")
	confDirNet{file: "70-again.conf", name: "pods", ipam: ipam("local-ipam", map[string]any{"subnet": "10.12.0.0/24"})}.write(t, dir)
	// Unreadable: not JSON; a config local-ipam refuses.
	writeIn(t, dir, "60-broken.json", `{"cniVersion":`)
	confDirNet{file: "80-bad.conf", name: "bad", ipam: ipam("local-ipam", map[string]any{"subnet": "10.13.0.0/33"})}.write(t, dir)

	o := operator(t, "usage", "--conf-dir", dir, "--format", "prometheus")
	if o.Exit != 0 {
		t.Fatalf("usage --format prometheus: %s", o)
	}
	for _, f := range []string{"60-broken.json", "80-bad.conf"} {
		if !strings.Contains(o.Stderr, f) {
			t.Errorf("stderr does not name the unreadable %s: %q", f, o.Stderr)
		}
	}
	metricstest.Check(t, o.Stdout)
	samples := metricstest.Parse(t, o.Stdout)

	// Every series, exactly (the /64 rounded to float64: 2^64-2 is 2^64).
	v4 := func(name, ranges, family, set string) map[string]string {
		return map[string]string{"network": name, "range_set": set, "ranges": ranges, "family": family}
	}
	want := map[string]float64{}
	put := func(labels map[string]string, size, inUse, excluded, free float64) {
		for metric, v := range map[string]float64{"size": size, "in_use": inUse, "excluded": excluded, "free": free} {
			want[metricstest.Sample{Name: "local_ipam_range_set_" + metric, Labels: labels}.Series()] = v
		}
	}
	put(v4("pods", "10.9.0.1-10.9.0.14", "ipv4", "0"), 13, 9, 3, 1)
	put(v4("pods", "fd00:9::1-fd00:9::ffff:ffff:ffff:ffff", "ipv6", "1"), 1<<64, 9, 0, 1<<64)
	put(v4("half", "10.10.0.1-10.10.0.6", "ipv4", "0"), 5, 2, 0, 3)
	put(v4("full", "10.11.0.1-10.11.0.2", "ipv4", "0"), 1, 1, 0, 0)
	for name, ready := range map[string]float64{"pods": 1, "half": 1, "full": 0} {
		want[fmt.Sprintf(`local_ipam_network_ready{network=%q}`, name)] = ready
	}
	want[fmt.Sprintf(`local_ipam_network_unreadable{file=%q,network=""}`, filepath.Join(dir, "60-broken.json"))] = 1
	want[fmt.Sprintf(`local_ipam_network_unreadable{file=%q,network="bad"}`, filepath.Join(dir, "80-bad.conf"))] = 1
	want["local_ipam_usage_errors{}"] = 2
	got := map[string]float64{}
	for _, s := range samples {
		got[s.Series()] = s.Value
	}
	if d := diffMaps(got, want); d != "" {
		t.Errorf("metrics: %s\n%s", d, o.Stdout)
	}

	// The ready gauge is STATUS's answer.
	for _, nw := range nets {
		st := plugin(t, cniexec.Call{Cmd: "STATUS", Conf: cniexec.NetConf("1.1.0", nw.name, nw.ipam)})
		if ready := metricstest.Find(samples, "local_ipam_network_ready", map[string]string{"network": nw.name}); len(ready) != 1 || (ready[0].Value == 1) != (st.Exit == 0) {
			t.Errorf("network %s: ready gauge %v, STATUS %s", nw.name, ready, st)
		}
	}

	// The documented alert rules, over these metrics held for 20 minutes: pods (90 %)
	// and full (100 %) fire after 5 minutes, half (40 %) never; full is not ready; the
	// two unreadable configs fire after 15 minutes.
	rules := metricstest.RulesFromDoc(t, "../../docs/MONITORING.md", "local-ipam.rules.yml")
	metricstest.TestRules(t, rules, samples, 20, []metricstest.RulesCase{
		{EvalTime: "4m", AlertName: "LocalIPAMPoolAlmostFull", Alerts: []metricstest.Alert{}},
		{EvalTime: "10m", AlertName: "LocalIPAMPoolAlmostFull", Alerts: []metricstest.Alert{
			alert(v4("pods", "10.9.0.1-10.9.0.14", "ipv4", "0"), "warning",
				"local-ipam network pods, range set 0 (10.9.0.1-10.9.0.14): 90% in use"),
			alert(v4("full", "10.11.0.1-10.11.0.2", "ipv4", "0"), "warning",
				"local-ipam network full, range set 0 (10.11.0.1-10.11.0.2): 100% in use"),
		}},
		{EvalTime: "10m", AlertName: "LocalIPAMNetworkNotReady", Alerts: []metricstest.Alert{
			alert(map[string]string{"network": "full"}, "critical",
				"local-ipam network full cannot serve an ADD: see local-ipam usage --conf-dir /etc/cni/net.d"),
		}},
		{EvalTime: "10m", AlertName: "LocalIPAMUsageUnreadable", Alerts: []metricstest.Alert{}},
		{EvalTime: "16m", AlertName: "LocalIPAMUsageUnreadable", Alerts: []metricstest.Alert{
			alert(map[string]string{}, "warning", "local-ipam usage could not read 2 network(s): see local_ipam_network_unreadable"),
		}},
	})

	// The table and JSON of the same directory: the networks, then the unreadable ones
	// named on stderr, exit 1.
	o = operator(t, "usage", "--conf-dir", dir)
	if o.Exit != 1 || !strings.Contains(o.Stdout, "network pods (") || !strings.Contains(o.Stdout, "network full (") ||
		!strings.Contains(o.Stdout, "NOT READY: no free address in range set(s) 10.11.0.1-10.11.0.2") ||
		strings.Contains(o.Stdout, "dhcp") || !strings.Contains(o.Stderr, "2 network(s)") || !strings.Contains(o.Stderr, "80-bad.conf") {
		t.Errorf("usage --conf-dir (table): %s", o)
	}
	o = operator(t, "usage", "--conf-dir", dir, "--json")
	var rep struct {
		Networks []struct {
			Network string `json:"network"`
			File    string `json:"file"`
			Ready   bool   `json:"ready"`
		} `json:"networks"`
		Errors []struct {
			File, Network, Error string
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(o.Stdout), &rep); o.Exit != 1 || err != nil || len(rep.Networks) != 3 || len(rep.Errors) != 2 ||
		rep.Networks[0].Network != "pods" || rep.Networks[0].File != filepath.Join(dir, "10-pods.conflist") || rep.Networks[2].Ready ||
		rep.Errors[1].Network != "bad" {
		t.Errorf("usage --conf-dir --json: %v, %+v: %s", err, rep, o)
	}
}

// alert is an alert of the documented rules, with its labels, severity and summary.
func alert(labels map[string]string, severity, summary string) metricstest.Alert {
	l := map[string]string{"severity": severity}
	for k, v := range labels {
		l[k] = v
	}
	return metricstest.Alert{Labels: l, Annotations: map[string]string{"summary": summary}}
}

// TestUsagePrometheusOneConf: --conf alone, and what happens without local-ipam-metrics.
func TestUsagePrometheusOneConf(t *testing.T) {
	t.Parallel()
	nw := newNet(t, "1.1.0", "one", map[string]any{"subnet": "10.14.0.0/24"})
	nw.add(t, "a", "eth0")
	dir := t.TempDir()
	writeIn(t, dir, "one.conf", string(nw.conf(t, nil)))
	conf := filepath.Join(dir, "one.conf")
	o := operator(t, "usage", "--conf", conf, "--format", "prometheus")
	if o.Exit != 0 {
		t.Fatalf("usage --conf --format prometheus: %s", o)
	}
	metricstest.Check(t, o.Stdout)
	in := metricstest.Find(metricstest.Parse(t, o.Stdout), "local_ipam_range_set_in_use", map[string]string{"network": "one", "family": "ipv4"})
	if len(in) != 1 || in[0].Value != 1 {
		t.Errorf("in use: %v\n%s", in, o.Stdout)
	}

	// A config that cannot be read: a metric, not a failure.
	bad := filepath.Join(t.TempDir(), "bad.conf")
	writeIn(t, filepath.Dir(bad), "bad.conf", "{")
	o = operator(t, "usage", "--conf", bad, "--format", "prometheus")
	if o.Exit != 0 || !strings.Contains(o.Stdout, "local_ipam_usage_errors 1") || !strings.Contains(o.Stderr, "bad.conf") {
		t.Errorf("usage --format prometheus of an unreadable config: %s", o)
	}

	// local-ipam alone in its directory: a clear error, exit 1, nothing on stdout.
	o = cniexec.Run(t, cniexec.Alone(t, "local-ipam"), nil, nil, "usage", "--conf", conf, "--format", "prometheus")
	if o.Exit != 1 || o.Stdout != "" || !strings.Contains(o.Stderr, "needs local-ipam-metrics, installed in the same directory") {
		t.Errorf("usage --format prometheus without local-ipam-metrics: %s", o)
	}

	// Mistyped formats are usage errors.
	for _, args := range [][]string{
		{"usage", "--conf", conf, "--format", "yaml"},
		{"usage", "--conf", conf, "--json", "--format", "prometheus"},
		{"usage", "--conf", conf, "--json", "--format", "table"},
		{"usage", "--conf", conf, "--conf-dir", filepath.Dir(conf)},
	} {
		if o := operator(t, args...); o.Exit != 2 {
			t.Errorf("local-ipam %v: want exit 2, got %s", args, o)
		}
	}
}

// TestPluginLinksNoPrometheus: the Prometheus libraries (protobuf with them) and the etcd
// client stay out of local-ipam, which a runtime starts for every call; they live in
// local-ipam-metrics and local-ipam-etcd (docs/PERFORMANCE.md).
func TestPluginLinksNoPrometheus(t *testing.T) {
	t.Parallel()
	heavy := func(bin string) []string {
		info, err := buildinfo.ReadFile(cniexec.Bin(t, bin))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range info.Deps {
			if strings.HasPrefix(d.Path, "github.com/prometheus/") || d.Path == "google.golang.org/protobuf" || strings.HasPrefix(d.Path, "go.etcd.io/") {
				out = append(out, d.Path)
			}
		}
		return out
	}
	if h := heavy("local-ipam"); len(h) > 0 {
		t.Errorf("local-ipam links %v", h)
	}
	if h := heavy("local-ipam-metrics"); !slices.Contains(h, "github.com/prometheus/client_golang") {
		t.Errorf("local-ipam-metrics does not link client_golang (%v): the check above sees nothing", h)
	}
}

// TestUsageConfDirNullIPAM: a conflist whose first plugin says "ipam": null (a meta plugin
// generated with every field) has its network in the next plugin's ipam section, as the
// runtime runs it: usage --conf-dir shows it rather than skip it without a word.
func TestUsageConfDirNullIPAM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	list := `{"cniVersion":"1.1.0","name":"nullfirst","plugins":[{"type":"tuning","ipam":null},` +
		`{"type":"bridge","ipam":{"type":"host-local","dataDir":` + strconv.Quote(t.TempDir()) + `,"subnet":"10.77.0.0/24"}}]}`
	if err := os.WriteFile(filepath.Join(dir, "10-nullfirst.conflist"), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	o := operator(t, "usage", "--conf-dir", dir)
	if o.Exit != 0 || !strings.Contains(o.Stdout, "network nullfirst ") || !strings.Contains(o.Stdout, "10.77.0.1-10.77.0.254") {
		t.Errorf("usage --conf-dir: want the network nullfirst, got %s", o)
	}
	o = operator(t, "usage", "--conf", filepath.Join(dir, "10-nullfirst.conflist"))
	if o.Exit != 0 || !strings.Contains(o.Stdout, "network nullfirst ") {
		t.Errorf("usage --conf: want the network nullfirst, got %s", o)
	}
}

// TestUsageConfDirNothingOrEtcdType: a network whose ipam type is local-ipam-etcd (the
// form that skips the hand-off) is counted, not skipped; a directory with no network to
// count is an error (exit 1) naming what it read, not an empty answer with exit 0.
func TestUsageConfDirNothingOrEtcdType(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, conf string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-dhcp.conf", `{"cniVersion":"1.1.0","name":"d","type":"macvlan","ipam":{"type":"dhcp"}}`)
	o := operator(t, "usage", "--conf-dir", dir)
	if want := "local-ipam: no local-ipam or host-local network in " + dir + " (1 config file read)\n"; o.Exit != 1 || o.Stdout != "" || o.Stderr != want {
		t.Errorf("usage --conf-dir of no network: want exit 1 and %q, got %s", want, o)
	}
	empty := t.TempDir()
	if o := operator(t, "usage", "--conf-dir", empty, "--json"); o.Exit != 1 || !strings.Contains(o.Stderr, "no local-ipam or host-local network in "+empty+" (0 config files read)") {
		t.Errorf("usage --conf-dir of an empty directory: %s", o)
	}
	// The disk store served by local-ipam-etcd directly (it serves both stores).
	write("20-direct.conf", `{"cniVersion":"1.1.0","name":"direct","type":"bridge","ipam":{"type":"local-ipam-etcd","dataDir":`+strconv.Quote(t.TempDir())+`,"subnet":"10.78.0.0/24"}}`)
	o = operator(t, "usage", "--conf-dir", dir)
	if o.Exit != 0 || !strings.Contains(o.Stdout, "network direct ") {
		t.Errorf("usage --conf-dir with a local-ipam-etcd network: want it counted, got %s", o)
	}
}
