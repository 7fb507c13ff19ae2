package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	ipam "github.com/local-ipam/local-ipam/internal/plugin"
)

// TestOperatorCLI: local-ipam run by a person, with a subcommand and no CNI_COMMAND.
func TestOperatorCLI(t *testing.T) {
	t.Parallel()

	t.Run("list: aligned table, --network filter, --json, legacy records", func(t *testing.T) {
		t.Parallel()
		start := time.Now().Add(-2 * time.Second)
		a := newNet(t, "1.1.0", "alpha", map[string]any{"subnet": "10.70.0.0/24"})
		b := &netw{version: "1.1.0", name: "beta-network", dataDir: a.dataDir, ipam: map[string]any{"type": "local-ipam", "subnet": "fd00:70::/120"}}
		a.add(t, "container-one", "eth0")
		a.add(t, "container-one", "net1")
		b.add(t, "c2", "eth0")
		for i := 0; i < 8; i++ { // .4 .. .11: sorted as addresses, not as strings
			a.add(t, "filler", "if"+string(rune('a'+i)))
		}
		writeIn(t, a.dir(), "10.70.0.100", "legacy-ctr")
		writeIn(t, a.dir(), "10.70.0.101", "") // empty record: holds nothing, not listed
		writeIn(t, a.dir(), "notes.txt", "x")

		o := operator(t, "list", "--data-dir", a.dataDir)
		if o.Exit != 0 || o.Stderr != "" {
			t.Fatalf("list: %s", o)
		}
		lines := strings.Split(strings.TrimRight(o.Stdout, "\n"), "\n")
		header := strings.Fields(lines[0])
		if strings.Join(header, " ") != "NETWORK ADDRESS CONTAINER IFNAME CREATED" {
			t.Fatalf("list header = %q", lines[0])
		}
		// Aligned: every field of every row starts in its header's column.
		cols := []int{}
		for _, h := range header {
			cols = append(cols, strings.Index(lines[0], h))
		}
		type row struct{ network, address, container, ifname, created string }
		var rows []row
		for _, l := range lines[1:] {
			f := make([]string, len(cols))
			for i, c := range cols {
				if c >= len(l) || (c > 0 && l[c-1] != ' ') || l[c] == ' ' {
					t.Fatalf("row %q: field %d does not start at column %d (header %q)", l, i, c, lines[0])
				}
				end := len(l)
				if i+1 < len(cols) {
					end = cols[i+1]
				}
				f[i] = strings.TrimSpace(l[c:end])
			}
			rows = append(rows, row{f[0], f[1], f[2], f[3], f[4]})
		}
		wantAddrs := []string{"alpha 10.70.0.2 container-one eth0", "alpha 10.70.0.3 container-one net1"}
		for i := 0; i < 8; i++ {
			wantAddrs = append(wantAddrs, "alpha 10.70.0."+strconv.Itoa(4+i)+" filler if"+string(rune('a'+i)))
		}
		wantAddrs = append(wantAddrs, "alpha 10.70.0.100 legacy-ctr -", "beta-network fd00:70::2 c2 eth0")
		var gotAddrs []string
		for _, r := range rows {
			gotAddrs = append(gotAddrs, strings.Join([]string{r.network, r.address, r.container, r.ifname}, " "))
			ts, err := time.Parse(time.RFC3339, r.created)
			if err != nil || ts.Before(start.Truncate(time.Second)) || ts.After(time.Now().Add(time.Minute)) {
				t.Errorf("row %v: CREATED is not a recent RFC 3339 time (%v)", r, err)
			}
		}
		if strings.Join(gotAddrs, "\n") != strings.Join(wantAddrs, "\n") {
			t.Errorf("list rows:\n%s\nwant:\n%s", strings.Join(gotAddrs, "\n"), strings.Join(wantAddrs, "\n"))
		}

		// --network filters.
		o = operator(t, "list", "--data-dir", a.dataDir, "--network", "beta-network")
		if o.Exit != 0 || strings.Count(o.Stdout, "\n") != 2 || !strings.Contains(o.Stdout, "fd00:70::2") || strings.Contains(o.Stdout, "alpha") {
			t.Errorf("list --network beta-network: %s", o)
		}

		// --json: the same entries, RFC 3339 times, "" for a legacy record's ifname.
		js := listJSON(t, "--data-dir", a.dataDir)
		if len(js) != len(rows) {
			t.Fatalf("list --json has %d entries, the table %d", len(js), len(rows))
		}
		for i, e := range js {
			ifname := e.IfName
			if ifname == "" {
				ifname = "-"
			}
			if got := strings.Join([]string{e.Network, e.Address, e.ContainerID, ifname}, " "); got != wantAddrs[i] {
				t.Errorf("list --json entry %d = %s, want %s", i, got, wantAddrs[i])
			}
			if _, err := time.Parse(time.RFC3339, e.Created); err != nil {
				t.Errorf("list --json entry %d: created %q is not RFC 3339: %v", i, e.Created, err)
			}
		}
		if js[10].IfName != "" {
			t.Errorf("legacy record in --json: ifname = %q, want \"\"", js[10].IfName)
		}
		var raw []map[string]any
		o = operator(t, "list", "--json", "--data-dir", a.dataDir, "--network", "alpha")
		if err := json.Unmarshal([]byte(o.Stdout), &raw); err != nil || len(raw) != 11 {
			t.Fatalf("list --json --network alpha: %v %s", err, o)
		}
		for _, k := range []string{"network", "address", "containerID", "ifname", "created"} {
			if _, ok := raw[0][k]; !ok {
				t.Errorf("list --json entries lack %q: %v", k, raw[0])
			}
		}

		// An empty data dir: a header alone, and [] in JSON.
		empty := t.TempDir()
		if o := operator(t, "list", "--data-dir", empty); o.Exit != 0 || strings.Join(strings.Fields(o.Stdout), " ") != "NETWORK ADDRESS CONTAINER IFNAME CREATED" {
			t.Errorf("list of an empty data dir: %s", o)
		}
		if o := operator(t, "list", "--json", "--data-dir", empty); o.Exit != 0 || strings.TrimSpace(o.Stdout) != "[]" {
			t.Errorf("list --json of an empty data dir: %s", o)
		}
	})

	t.Run("usage: network config and conflist, table and --json", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "use", map[string]any{"subnet": "10.71.0.0/24", "exclude": []string{"10.71.0.0/30", "10.71.0.9", "10.71.0.200/29"}})
		for _, id := range []string{"a", "b", "c", "d"} {
			n.add(t, id, "eth0") // .4 .5 .6 .7
		}
		single := n.confFile(t)
		var plain map[string]any
		if err := json.Unmarshal(n.conf(t, nil), &plain); err != nil {
			t.Fatal(err)
		}
		ipam := plain["ipam"]
		list, _ := json.Marshal(map[string]any{
			"cniVersion": "1.1.0", "name": "use",
			"plugins": []any{
				map[string]any{"type": "bridge", "bridge": "cni-use", "ipam": ipam},
				map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			},
		})
		dir := t.TempDir()
		writeIn(t, dir, "use.conflist", string(list))
		conflist := filepath.Join(dir, "use.conflist")
		// 254 addresses .1-.254 less the gateway: 253. Excluded: .2 .3 (the /30 less the
		// gateway and the network address), .9, .200-.207: 11. In use 4. Free 238.
		// Used: 4 of 242 = 1.7 %.
		want := usageSet{Set: 0, Ranges: "10.71.0.1-10.71.0.254", Size: 253, InUse: 4, Excluded: 11, Free: 238, Percent: 1.7}
		for _, f := range []string{single, conflist} {
			o := operator(t, "usage", "--conf", f, "--json")
			var u usageJSON
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &u) != nil || len(u.RangeSets) != 1 {
				t.Fatalf("usage --conf %s --json: %s", filepath.Base(f), o)
			}
			if u.Network != "use" || u.DataDir != n.dataDir || u.RangeSets[0] != want {
				t.Errorf("usage --conf %s --json = %+v, want network use, dataDir %s, %+v", filepath.Base(f), u, n.dataDir, want)
			}
			o = operator(t, "usage", "--conf", f)
			if o.Exit != 0 {
				t.Fatalf("usage --conf %s: %s", filepath.Base(f), o)
			}
			lines := strings.Split(strings.TrimRight(o.Stdout, "\n"), "\n")
			if len(lines) != 3 || !strings.Contains(lines[0], "use") {
				t.Fatalf("usage --conf %s: want a title, a header and one row, got %q", filepath.Base(f), o.Stdout)
			}
			hdr := strings.Join(strings.Fields(lines[1]), " ")
			fields := strings.Join(strings.Fields(lines[2]), " ")
			if hdr != "SET SIZE IN USE EXCLUDED FREE USED RANGES" || fields != "0 253 4 11 238 1.7% 10.71.0.1-10.71.0.254" {
				t.Errorf("usage --conf %s table:\n%s\nwant SIZE 253, IN USE 4, EXCLUDED 11, FREE 238, USED 1.7%%", filepath.Base(f), o.Stdout)
			}
		}
		// Errors: no --conf is a usage error; a conflist without an ipam section a plain one.
		if o := operator(t, "usage"); o.Exit != 2 {
			t.Errorf("usage without --conf: want exit 2, got %s", o)
		}
		noIPAM := filepath.Join(dir, "noipam.conflist")
		if err := os.WriteFile(noIPAM, []byte(`{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if o := operator(t, "usage", "--conf", noIPAM); o.Exit != 1 || !strings.HasPrefix(o.Stderr, "local-ipam: ") {
			t.Errorf("usage of a conflist without ipam: want exit 1 and a local-ipam: error, got %s", o)
		}
	})

	t.Run("release: all of a container's addresses or one ifname, then reusable", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "rel", map[string]any{"ranges": []any{
			[]any{map[string]any{"subnet": "10.72.0.0/24"}},
			[]any{map[string]any{"subnet": "fd00:72::/120"}},
		}})
		n.add(t, "ctr", "eth0") // 10.72.0.2 fd00:72::2
		n.add(t, "ctr", "net1") // 10.72.0.3 fd00:72::3
		n.add(t, "ctr", "net2") // 10.72.0.4 fd00:72::4
		n.add(t, "other", "eth0")
		release := func(args ...string) cniexec.Out {
			t.Helper()
			o := operator(t, append([]string{"release", "--data-dir", n.dataDir, "--network", "rel"}, args...)...)
			if o.Exit != 0 {
				t.Fatalf("release %v: %s", args, o)
			}
			return o
		}

		o := release("--container", "ctr", "--ifname", "net1")
		if strings.TrimSpace(o.Stdout) != "released 10.72.0.3 (container ctr, ifname net1)\nreleased fd00:72::3 (container ctr, ifname net1)" {
			t.Errorf("release --ifname net1 printed %q", o.Stdout)
		}
		if got := recordFiles(t, n.dir()); len(got) != 6 || pathExists(filepath.Join(n.dir(), "10.72.0.3")) {
			t.Errorf("after release --ifname net1: %v", got)
		}

		o = release("--container", "ctr")
		for _, s := range []string{
			"released 10.72.0.2 (container ctr, ifname eth0)", "released fd00:72::2 (container ctr, ifname eth0)",
			"released 10.72.0.4 (container ctr, ifname net2)", "released fd00:72::4 (container ctr, ifname net2)",
		} {
			if !strings.Contains(o.Stdout, s+"\n") {
				t.Errorf("release --container ctr output lacks %q: %q", s, o.Stdout)
			}
		}
		if strings.Count(o.Stdout, "released") != 4 {
			t.Errorf("release --container ctr released more than its 4 addresses: %q", o.Stdout)
		}
		if d := diffMaps(recordFiles(t, n.dir()), map[string]string{"10.72.0.5": recKey("other", "eth0"), "fd00:72::5": recKey("other", "eth0")}); d != "" {
			t.Errorf("records after release --container ctr: %s", d)
		}

		// The released addresses can be ADDed again, and the store is consistent: ctr on
		// eth0 is not a duplicate any more.
		o = plugin(t, cniexec.Call{Cmd: "ADD", ID: "new", IfName: "eth0", Args: "IP=10.72.0.3", Conf: n.conf(t, nil)})
		if o.Exit != 0 || !strings.Contains(o.Stdout, "10.72.0.3/24") {
			t.Errorf("ADD of a released address: %s", o)
		}
		held := n.add(t, "ctr", "eth0").Addrs() // 10.72.0.x/24, fd00:72::y/120
		v4, _, _ := strings.Cut(held[0], "/")
		v6, _, _ := strings.Cut(held[1], "/")

		// Nothing reserved: exit 1, saying so; for an ifname the container does not hold,
		// naming those it does.
		o = operator(t, "release", "--data-dir", n.dataDir, "--network", "rel", "--container", "nobody")
		if o.Exit != 1 || o.Stdout != "" || !strings.Contains(o.Stderr, "nothing reserved for container nobody in network rel") {
			t.Errorf("release of an unknown container: %s", o)
		}
		o = operator(t, "release", "--data-dir", n.dataDir, "--network", "rel", "--container", "ctr", "--ifname", "net9")
		if want := "local-ipam: nothing reserved for container ctr on ifname net9 in network rel; it holds eth0 (" + v4 + ", " + v6 + "): "; o.Exit != 1 || o.Stdout != "" || !strings.HasPrefix(o.Stderr, want) {
			t.Errorf("release of an unknown ifname: want exit 1 and %q, got %s", want, o)
		}

		// A legacy record of the container goes with a release of the container.
		writeIn(t, n.dir(), "10.72.0.200", "old")
		o = release("--container", "old")
		if strings.TrimSpace(o.Stdout) != "released 10.72.0.200 (container old, ifname -)" || pathExists(filepath.Join(n.dir(), "10.72.0.200")) {
			t.Errorf("release of a legacy record: %s", o)
		}
	})

	t.Run("release of an unknown network or data dir leaves the disk as it was", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		n := newNet(t, "1.1.0", "real", map[string]any{"subnet": "10.73.0.0/24"})
		n.dataDir = dataDir
		n.add(t, "ctr", "eth0")
		o := operator(t, "release", "--data-dir", dataDir, "--network", "typo", "--container", "ctr")
		if want := `local-ipam: no network "typo" in ` + dataDir + "; the networks there: real\n"; o.Exit != 1 || o.Stderr != want {
			t.Errorf("release from an unknown network: want exit 1 and %q, got %s", want, o)
		}
		if pathExists(filepath.Join(dataDir, "typo")) {
			t.Errorf("release from an unknown network created %s: %v", filepath.Join(dataDir, "typo"), dirFiles(t, filepath.Join(dataDir, "typo")))
		}
		missing := filepath.Join(t.TempDir(), "no", "such", "dir")
		operator(t, "release", "--data-dir", missing, "--network", "real", "--container", "ctr")
		if pathExists(missing) {
			t.Errorf("release with a mistyped --data-dir created %s", missing)
		}
	})

	t.Run("release --ifname of a legacy record releases it and reports its real owner", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		dir := filepath.Join(dataDir, "leg")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeIn(t, dir, "10.74.0.9", "old") // host-local < 0.7: container ID only
		// Like DEL, a release by attachment falls back to the container's ID-only records.
		o := operator(t, "release", "--data-dir", dataDir, "--network", "leg", "--container", "old", "--ifname", "eth0")
		if o.Exit != 0 || pathExists(filepath.Join(dir, "10.74.0.9")) {
			t.Fatalf("release --ifname of a legacy record: %s", o)
		}
		// The record named no ifname: say so, as release without --ifname does.
		if got := strings.TrimSpace(o.Stdout); got != "released 10.74.0.9 (container old, ifname -)" {
			t.Errorf("release --ifname eth0 of an ID-only record printed %q, want %q", got, "released 10.74.0.9 (container old, ifname -)")
		}
	})

	t.Run("help and version", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
			o := operator(t, args...)
			if o.Exit != 0 || o.Stdout != ipam.UsageText || o.Stderr != "" {
				t.Errorf("local-ipam %v: want exit 0 and the usage on stdout, got %s", args, o)
			}
			for _, verb := range []string{"list", "usage", "release", "version"} {
				if !strings.Contains(o.Stdout, "local-ipam "+verb) {
					t.Errorf("local-ipam %v does not describe %s", args, verb)
				}
			}
		}
		o := operator(t, "version")
		if o.Exit != 0 || !strings.HasPrefix(o.Stdout, "local-ipam ") {
			t.Fatalf("local-ipam version: %s", o)
		}
		if !strings.Contains(o.Stdout, "0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0") {
			t.Errorf("local-ipam version does not list the CNI versions 0.1.0 ... 1.1.0: %q", o.Stdout)
		}
	})

	t.Run("mistyped command line: exit 2, one error line, then the usage", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			args []string
			msg  string
		}{
			{[]string{"lsit"}, `unknown command "lsit"`},
			{[]string{"list", "--bogus"}, "bogus"},
			{[]string{"list", "extra-arg"}, "extra-arg"},
			{[]string{"release", "--network", "n"}, "--container"},
			{[]string{"release", "--container", "c"}, "--network"},
			{[]string{"usage", "--json"}, "--conf"},
		} {
			o := operator(t, c.args...)
			if o.Exit != 2 || o.Stdout != "" {
				t.Errorf("local-ipam %v: want exit 2 and nothing on stdout, got %s", c.args, o)
				continue
			}
			first, rest, _ := strings.Cut(o.Stderr, "\n")
			if !strings.HasPrefix(first, "local-ipam: ") || !strings.Contains(first, c.msg) {
				t.Errorf("local-ipam %v: first stderr line %q, want \"local-ipam: ...%s...\"", c.args, first, c.msg)
			}
			if strings.TrimLeft(rest, "\n") != ipam.UsageText {
				t.Errorf("local-ipam %v: the error line is not followed by the usage: %q", c.args, rest)
			}
		}
	})
}
