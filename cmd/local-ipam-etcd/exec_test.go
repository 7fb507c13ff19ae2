package main

// Exec-level tests of the etcd store: the built binaries (bin/local-ipam, which hands etcd
// networks to bin/local-ipam-etcd) run as a runtime runs them, against real etcd servers
// started by the tests (internal/etcdtest). Different "machines" are different node
// names in the config, as different hosts' configs would say.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// etcdNet is one network kept in etcd.
type etcdNet struct {
	name      string
	endpoints []string
	ipam      map[string]any
	timeout   time.Duration
	store     map[string]any // more keys of ipam.store (blockSize)
}

func newEtcdNet(name string, endpoints []string, ipam map[string]any) *etcdNet {
	return &etcdNet{name: name, endpoints: endpoints, ipam: ipam, timeout: 3 * time.Second}
}

// newDualStack is a network of two range sets: the IPv4 subnet v4, the IPv6 subnet v6.
func newDualStack(name string, endpoints []string, v4, v6 string) *etcdNet {
	return newEtcdNet(name, endpoints, map[string]any{"ranges": []any{
		[]any{map[string]any{"subnet": v4}},
		[]any{map[string]any{"subnet": v6}},
	}})
}

// conf is the config node would send, with extra top-level keys.
func (n *etcdNet) conf(t testing.TB, node string, extra map[string]any) []byte {
	t.Helper()
	store := cniexec.Merge(map[string]any{"type": "etcd", "endpoints": n.endpoints, "node": node, "timeout": n.timeout.String(), "prefix": "/t/" + t.Name()}, n.store)
	return cniexec.NetConf("1.1.0", n.name, cniexec.Merge(map[string]any{"type": "local-ipam", "store": store}, n.ipam), extra)
}

// plugin runs bin/local-ipam (the binary runtimes are configured with).
func plugin(t testing.TB, c cniexec.Call) cniexec.Out {
	t.Helper()
	return cniexec.CNI(t, cniexec.Bin(t, "local-ipam"), c)
}

func add(t testing.TB, n *etcdNet, node, id string) cniexec.Out {
	t.Helper()
	return plugin(t, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: n.conf(t, node, nil)})
}

func del(t testing.TB, n *etcdNet, node, id string) cniexec.Out {
	t.Helper()
	return plugin(t, cniexec.Call{Cmd: "DEL", ID: id, IfName: "eth0", Conf: n.conf(t, node, nil)})
}

func wantOK(t testing.TB, o cniexec.Out, what string) {
	t.Helper()
	if o.Exit != 0 {
		t.Fatalf("%s failed: %s", what, o)
	}
}

func wantCode(t testing.TB, o cniexec.Out, code uint, what string) cniexec.CNIError {
	t.Helper()
	e, ok := o.Error()
	if !ok || e.Code != code {
		t.Fatalf("%s: want CNI error code %d, got %s", what, code, o)
	}
	if (code == 50 || code == 100) && e.Details == "" {
		t.Errorf("%s: code %d without details (what to do): %s", what, code, o)
	}
	return e
}

// operator runs bin/local-ipam with arguments, as a person does.
func operator(t testing.TB, args ...string) cniexec.Out {
	t.Helper()
	return cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, args...)
}

// writeFile writes b to the file at path, mode 0644.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeConf writes a network config to a file of its own, for the operator's --conf.
func writeConf(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "net.conf")
	writeFile(t, p, b)
	return p
}

type listed struct {
	Address     string `json:"address"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Node        string `json:"node"`
}

func list(t testing.TB, n *etcdNet) []listed {
	t.Helper()
	o := operator(t, "list", "--conf", writeConf(t, n.conf(t, "operator", nil)), "--json")
	wantOK(t, o, "list")
	var out []listed
	if err := json.Unmarshal([]byte(o.Stdout), &out); err != nil {
		t.Fatalf("list --json: %v: %s", err, o)
	}
	return out
}

// listedBy is the network's reservations as `list` shows them, each written by say,
// sorted.
func listedBy(t testing.TB, n *etcdNet, say func(listed) string) []string {
	t.Helper()
	var out []string
	for _, e := range list(t, n) {
		out = append(out, say(e))
	}
	slices.Sort(out)
	return out
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestHandoff(t *testing.T) {
	t.Run("local-ipam without local-ipam-etcd: code 50 naming what to install", func(t *testing.T) {
		dir := t.TempDir()
		b, err := os.ReadFile(cniexec.Bin(t, "local-ipam"))
		if err != nil {
			t.Fatal(err)
		}
		alone := filepath.Join(dir, "local-ipam")
		if err := os.WriteFile(alone, b, 0o755); err != nil {
			t.Fatal(err)
		}
		n := newEtcdNet("alone", []string{closedPort(t)}, map[string]any{"subnet": "10.20.0.0/24"})
		for _, cmd := range []string{"ADD", "DEL", "CHECK", "STATUS"} {
			o := cniexec.CNI(t, alone, cniexec.Call{Cmd: cmd, ID: "c", IfName: "eth0", Conf: n.conf(t, "a", nil)})
			e := wantCode(t, o, 50, cmd)
			if !strings.Contains(e.Msg, "local-ipam-etcd") {
				t.Errorf("%s: message does not say what is missing: %q", cmd, e.Msg)
			}
		}
		// Disk networks do not need it.
		disk := []byte(`{"cniVersion":"1.1.0","name":"d","ipam":{"type":"local-ipam","subnet":"10.21.0.0/24","dataDir":"` + t.TempDir() + `"}}`)
		wantOK(t, cniexec.CNI(t, alone, cniexec.Call{Cmd: "ADD", ID: "c", IfName: "eth0", Conf: disk}), "disk ADD without local-ipam-etcd")
	})

	t.Run("etcd unreachable: code 11 within the timeout, from every verb and command", func(t *testing.T) {
		n := newEtcdNet("down", []string{closedPort(t)}, map[string]any{"subnet": "10.20.0.0/24"})
		n.timeout = time.Second
		conf := n.conf(t, "a", nil)
		for _, cmd := range []string{"ADD", "DEL", "CHECK", "GC"} {
			extra := map[string]any{}
			if cmd == "GC" {
				extra["cni.dev/valid-attachments"] = []any{}
			}
			o := plugin(t, cniexec.Call{Cmd: cmd, ID: "c", IfName: "eth0", Conf: n.conf(t, "a", extra)})
			e := wantCode(t, o, 11, cmd)
			if !strings.Contains(e.Msg+e.Details, strings.TrimPrefix(n.endpoints[0], "http://")) {
				t.Errorf("%s: the error does not name the endpoint: %+v", cmd, e)
			}
			if o.Took > n.timeout+3*time.Second {
				t.Errorf("%s took %v with a %v timeout", cmd, o.Took, n.timeout)
			}
		}
		o := plugin(t, cniexec.Call{Cmd: "STATUS", Conf: conf})
		wantCode(t, o, 50, "STATUS")
		for _, args := range [][]string{{"list", "--conf"}, {"usage", "--conf"}} {
			o := operator(t, append(args, writeConf(t, conf))...)
			if o.Exit != 1 || !strings.Contains(o.Stderr, "etcd") {
				t.Errorf("%v with etcd down: want exit 1 and a message, got %s", args, o)
			}
		}
	})
}

// TestSameAsDisk runs one script of calls against a disk network and an etcd network,
// with blocks (the default) and without, and wants the same answers: results byte for
// byte, errors with the same code.
func TestSameAsDisk(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	for _, bs := range []any{nil, 0} {
		t.Run(fmt.Sprintf("blockSize=%v", bs), func(t *testing.T) { sameAsDisk(t, eps, bs) })
	}
}

func sameAsDisk(t *testing.T, eps []string, blockSize any) {
	ipamSec := map[string]any{
		"ranges": []any{
			[]any{map[string]any{"subnet": "10.30.0.0/28", "gateway": "10.30.0.1"}},
			[]any{map[string]any{"subnet": "fd00:30::/124"}},
		},
		"exclude": []any{"10.30.0.4"},
		"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
	}
	e := newEtcdNet("same", eps, ipamSec)
	if blockSize != nil {
		e.store = map[string]any{"blockSize": blockSize}
	}
	dataDir := t.TempDir()
	diskConf := func(extra map[string]any) []byte {
		return cniexec.NetConf("1.1.0", "same", cniexec.Merge(map[string]any{"type": "local-ipam", "dataDir": dataDir}, ipamSec), extra)
	}
	type step struct {
		cmd, id, args string
		prevOf        string // CHECK: the prevResult of this container's ADD
		valid         []string
	}
	script := []step{
		{cmd: "ADD", id: "c1"}, {cmd: "ADD", id: "c2"}, {cmd: "ADD", id: "c3"},
		{cmd: "ADD", id: "c1"}, // duplicate: 103
		{cmd: "DEL", id: "c2"},
		{cmd: "ADD", id: "c4"}, // round robin: after c3, not c2's old address
		{cmd: "ADD", id: "c5", args: "IP=10.30.0.9"},
		{cmd: "ADD", id: "c6", args: "IP=10.30.0.9"},   // in use: 101
		{cmd: "ADD", id: "c7", args: "IP=10.30.0.4"},   // excluded: 102
		{cmd: "ADD", id: "c8", args: "IP=10.99.0.4"},   // outside: 102
		{cmd: "CHECK", id: "c1", prevOf: "c1"},         // ok
		{cmd: "CHECK", id: "c2", prevOf: "c2"},         // deleted: 105
		{cmd: "DEL", id: "never-added"},                // ok
		{cmd: "GC", valid: []string{"c1", "c3", "c4"}}, // c5 goes
		{cmd: "CHECK", id: "c5", prevOf: "c5"},         // 105
	}
	for i := 10; i < 24; i++ {
		script = append(script, step{cmd: "ADD", id: fmt.Sprintf("f%d", i)}) // runs the /28 and the /124 full: 100
	}
	script = append(script, step{cmd: "DEL", id: "f12"}, step{cmd: "ADD", id: "again"})

	prev := map[string][2]json.RawMessage{}
	for i, s := range script {
		var outs [2]cniexec.Out
		for k := range 2 {
			extra := map[string]any{}
			if s.prevOf != "" {
				extra["prevResult"] = prev[s.prevOf][k]
			}
			if s.cmd == "GC" {
				var v []any
				for _, id := range s.valid {
					v = append(v, map[string]any{"containerID": id, "ifname": "eth0"})
				}
				extra["cni.dev/valid-attachments"] = v
			}
			conf := diskConf(extra)
			if k == 1 {
				conf = e.conf(t, "node-a", extra)
			}
			outs[k] = plugin(t, cniexec.Call{Cmd: s.cmd, ID: s.id, IfName: "eth0", Args: s.args, Conf: conf})
			if s.cmd == "ADD" && outs[k].Exit == 0 {
				p := prev[s.id]
				p[k] = json.RawMessage(outs[k].Stdout)
				prev[s.id] = p
			}
		}
		d, et := outs[0], outs[1]
		if d.Exit != et.Exit {
			t.Fatalf("step %d %+v: disk %s, etcd %s", i, s, d, et)
		}
		if d.Exit == 0 {
			if d.Stdout != et.Stdout {
				t.Fatalf("step %d %+v: results differ:\ndisk %s\netcd %s", i, s, d.Stdout, et.Stdout)
			}
			continue
		}
		de, _ := d.Error()
		ee, ok := et.Error()
		if !ok || de.Code != ee.Code {
			t.Fatalf("step %d %+v: disk error %+v, etcd %s", i, s, de, et)
		}
	}
}

// TestMachines: eight machines allocate from one pool at once, through the plugin.
func TestMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("pool", eps, map[string]any{"subnet": "10.40.0.0/24"}) // 253 addresses (.1 is the gateway)
	const machines, each = 8, 40                                           // 320 asks for 253 addresses
	type got struct {
		id, addr string
		code     uint
	}
	var mu sync.Mutex
	var all []got
	var wg sync.WaitGroup
	for m := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("m%d-c%d", m, i)
				o := add(t, n, fmt.Sprintf("m%d", m), id)
				g := got{id: id}
				if o.Exit == 0 {
					g.addr = o.Addrs(t)[0]
				} else if e, ok := o.Error(); ok {
					g.code = e.Code
				} else {
					t.Errorf("ADD %s: %s", id, o)
				}
				mu.Lock()
				all = append(all, g)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	seen := map[string]string{}
	var failed []got
	for _, g := range all {
		if g.addr == "" {
			failed = append(failed, g)
			continue
		}
		if other, dup := seen[g.addr]; dup {
			t.Errorf("%s given to %s and %s", g.addr, other, g.id)
		}
		seen[g.addr] = g.id
	}
	if len(seen) != 253 {
		t.Errorf("%d addresses given out, want all 253", len(seen))
	}
	for _, f := range failed {
		if f.code != 100 {
			t.Errorf("ADD %s failed with code %d, want 100 (pool full) only", f.id, f.code)
		}
	}
	if l := list(t, n); len(l) != 253 {
		t.Errorf("list shows %d reservations, want 253", len(l))
	}
	// Every machine lets go of everything; the pool is whole again.
	var ids []string
	for _, g := range all {
		if g.addr != "" {
			ids = append(ids, g.id)
		}
	}
	var dwg sync.WaitGroup
	for m := range machines {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for i := m; i < len(ids); i += machines {
				node, _, _ := strings.Cut(ids[i], "-")
				wantOK(t, del(t, n, node, ids[i]), "DEL "+ids[i])
			}
		}()
	}
	dwg.Wait()
	if l := list(t, n); len(l) != 0 {
		t.Fatalf("after every DEL, list shows %d reservations", len(l))
	}
	o := operator(t, "usage", "--conf", writeConf(t, n.conf(t, "x", nil)), "--json")
	wantOK(t, o, "usage")
	if !strings.Contains(o.Stdout, `"inUse": 0`) {
		t.Errorf("usage after every DEL: %s", o.Stdout)
	}
	// And fully usable: 253 more ADDs, all distinct.
	again := map[string]bool{}
	for i := range 253 {
		a := add(t, n, "m0", fmt.Sprintf("again%d", i)).Addrs(t)[0]
		if again[a] {
			t.Fatalf("%s twice after the pool was emptied", a)
		}
		again[a] = true
	}
	wantCode(t, add(t, n, "m0", "one-too-many"), 100, "ADD to a full pool")
}

// TestAcrossMachines: GC, freeOnReboot, STATUS, CHECK and the operator's commands with
// two machines sharing one pool.
func TestAcrossMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)

	t.Run("GC touches only its own machine's reservations", func(t *testing.T) {
		n := newEtcdNet("gc", eps, map[string]any{"subnet": "10.50.0.0/24"})
		for _, c := range []string{"a1", "a2", "a3"} {
			wantOK(t, add(t, n, "a", c), "ADD "+c)
		}
		for _, c := range []string{"b1", "b2"} {
			wantOK(t, add(t, n, "b", c), "ADD "+c)
		}
		// Machine a's runtime knows only a1 and a3 (b's containers are not its business).
		gc := n.conf(t, "a", map[string]any{"cni.dev/valid-attachments": []any{
			map[string]any{"containerID": "a1", "ifname": "eth0"}, map[string]any{"containerID": "a3", "ifname": "eth0"},
		}})
		wantOK(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: gc}), "GC")
		idAtNode := func(e listed) string { return e.ContainerID + "@" + e.Node }
		left := listedBy(t, n, idAtNode)
		if want := []string{"a1@a", "a3@a", "b1@b", "b2@b"}; !slices.Equal(left, want) {
			t.Errorf("after a's GC: %v, want %v", left, want)
		}
		// A list that is not a list is refused, as for the disk store, and frees nothing.
		for _, v := range []any{"all", 3, map[string]any{}} {
			wantCode(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: n.conf(t, "a", map[string]any{"cni.dev/valid-attachments": v})}), 7, fmt.Sprintf("GC with valid-attachments %v", v))
		}
		if got := len(list(t, n)); got != 4 {
			t.Fatalf("after GCs refused: %d reservations, want 4", got)
		}
		// Machine b is gone for good: the operator releases what it held.
		conf := writeConf(t, n.conf(t, "op", nil))
		o := operator(t, "release", "--conf", conf, "--node", "b")
		wantOK(t, o, "release --node b")
		if strings.Count(o.Stdout, "released ") != 2 || !strings.Contains(o.Stdout, "container b1") || !strings.Contains(o.Stdout, "container b2") {
			t.Errorf("release --node b printed %q", o.Stdout)
		}
		left = listedBy(t, n, idAtNode)
		if want := []string{"a1@a", "a3@a"}; !slices.Equal(left, want) {
			t.Errorf("after release --node b: %v, want %v", left, want)
		}
		if o := operator(t, "release", "--conf", conf, "--node", "b"); o.Exit != 0 || !strings.Contains(o.Stdout, "nothing reserved by node b") {
			t.Errorf("second release --node b: %s", o)
		}
		if o := operator(t, "release", "--conf", conf, "--node", "b", "--container", "a1"); o.Exit != 2 {
			t.Errorf("release with both --node and --container: want exit 2, got %s", o)
		}
	})

	// No list (cnitool gc), null (libcni for a runtime with no live attachment) or []:
	// nothing is valid, as host-local reads it; still only this node's reservations go.
	for i, extra := range []map[string]any{nil, {"cni.dev/valid-attachments": nil}, {"cni.dev/valid-attachments": []any{}}} {
		t.Run(fmt.Sprintf("GC with %v frees every reservation of its node", extra), func(t *testing.T) {
			n := newEtcdNet(fmt.Sprintf("gcnone%d", i), eps, map[string]any{"subnet": "10.56.0.0/24"})
			for _, c := range []string{"a1", "a2"} {
				wantOK(t, add(t, n, "a", c), "ADD "+c)
			}
			wantOK(t, add(t, n, "b", "b1"), "ADD b1")
			wantOK(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: n.conf(t, "a", extra)}), "GC")
			var left []string
			for _, e := range list(t, n) {
				left = append(left, e.ContainerID+"@"+e.Node)
			}
			if want := []string{"b1@b"}; !slices.Equal(left, want) {
				t.Errorf("after a's GC: %v, want %v", left, want)
			}
		})
	}

	t.Run("freeOnReboot frees only the rebooted machine's reservations", func(t *testing.T) {
		n := newEtcdNet("reboot", eps, map[string]any{"subnet": "10.51.0.0/24", "freeOnReboot": true})
		boot := filepath.Join(t.TempDir(), "boot_id")
		setBoot := func(id string) []string {
			writeFile(t, boot, []byte(id+"\n"))
			return []string{"LOCAL_IPAM_BOOT_ID_FILE=" + boot}
		}
		env := setBoot("boot-1")
		for _, c := range []string{"a1", "a2"} {
			wantOK(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: c, IfName: "eth0", Env: env, Conf: n.conf(t, "a", nil)}), "ADD "+c)
		}
		wantOK(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "b1", IfName: "eth0", Env: env, Conf: n.conf(t, "b", nil)}), "ADD b1")
		env = setBoot("boot-2") // machine a reboots
		o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "a3", IfName: "eth0", Env: env, Conf: n.conf(t, "a", nil)})
		wantOK(t, o, "ADD after reboot")
		left := listedBy(t, n, func(e listed) string { return e.ContainerID })
		if want := []string{"a3", "b1"}; !slices.Equal(left, want) {
			t.Errorf("after a's reboot: %v, want %v", left, want)
		}
	})

	t.Run("STATUS, CHECK and release", func(t *testing.T) {
		n := newEtcdNet("status", eps, map[string]any{"subnet": "10.52.0.0/29"}) // .2-.6: 5 addresses
		wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, "a", nil)}), "STATUS of an empty pool")
		res := map[string]string{}
		for i := range 5 {
			id := fmt.Sprintf("s%d", i)
			o := add(t, n, string(rune('a'+i%2)), id)
			wantOK(t, o, "ADD "+id)
			res[id] = o.Stdout
		}
		e := wantCode(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, "b", nil)}), 50, "STATUS of a full pool")
		if !strings.Contains(e.Msg, "no free address") {
			t.Errorf("STATUS message: %q", e.Msg)
		}
		// CHECK from another machine: the reservation is the cluster's, not the node's.
		wantOK(t, plugin(t, cniexec.Call{Cmd: "CHECK", ID: "s0", IfName: "eth0",
			Conf: n.conf(t, "b", map[string]any{"prevResult": json.RawMessage(res["s0"])})}), "CHECK s0")
		wantCode(t, plugin(t, cniexec.Call{Cmd: "CHECK", ID: "s1", IfName: "eth0",
			Conf: n.conf(t, "a", map[string]any{"prevResult": json.RawMessage(res["s0"])})}), 105, "CHECK with another's prevResult")
		conf := writeConf(t, n.conf(t, "op", nil))
		o := operator(t, "release", "--conf", conf, "--container", "s3")
		wantOK(t, o, "release")
		if !strings.Contains(o.Stdout, "released 10.52.0.5") {
			t.Errorf("release printed %q", o.Stdout)
		}
		wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, "a", nil)}), "STATUS after release")
		o = operator(t, "usage", "--conf", conf)
		wantOK(t, o, "usage")
		if !strings.Contains(o.Stdout, "etcd") || !regexpFields(o.Stdout, "0", "5", "4", "0", "1", "80.0%") {
			t.Errorf("usage: %s", o.Stdout)
		}
		o = operator(t, "list", "--conf", conf)
		wantOK(t, o, "list")
		if !strings.Contains(o.Stdout, "NODE") || strings.Count(o.Stdout, "\n") != 5 {
			t.Errorf("list: %s", o.Stdout)
		}
	})
}

// regexpFields reports whether some line of out holds these fields in order.
func regexpFields(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// TestCluster: a three-member etcd cluster, members killed with SIGKILL under the plugin.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills three etcd processes: not in -short")
	}
	c := etcdtest.StartCluster(t, 3)
	n := newEtcdNet("ha", c.Endpoints(), map[string]any{"subnet": "10.60.0.0/24"})
	ok := map[string]string{}
	addOK := func(id string) {
		t.Helper()
		o := add(t, n, "a", id)
		wantOK(t, o, "ADD "+id)
		ok[id] = o.Addrs(t)[0]
	}
	for i := range 5 {
		addOK(fmt.Sprintf("before%d", i))
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		addOK(fmt.Sprintf("one-down%d", i))
	}
	wantOK(t, del(t, n, "a", "before0"), "DEL with one member down")
	delete(ok, "before0")
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		o := add(t, n, "a", fmt.Sprintf("no-quorum%d", i))
		wantCode(t, o, 11, "ADD without quorum")
		if o.Took > 3*time.Second+4*time.Second {
			t.Errorf("ADD without quorum took %v (timeout 3s)", o.Took)
		}
	}
	wantCode(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, "a", nil)}), 50, "STATUS without quorum")
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	// The cluster needs a moment to elect a leader: a runtime retries on code 11.
	deadline := time.Now().Add(30 * time.Second)
	for {
		o := add(t, n, "a", "after")
		if o.Exit == 0 {
			ok["after"] = o.Addrs(t)[0]
			break
		}
		if e, isErr := o.Error(); !isErr || e.Code != 11 || time.Now().After(deadline) {
			t.Fatalf("ADD after restart: %s", o)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Nothing lost, nothing half-written: exactly the successful ADDs hold addresses.
	got := map[string]string{}
	for _, e := range list(t, n) {
		got[e.ContainerID] = e.Address
	}
	if len(got) != len(ok) {
		t.Errorf("after the outage the pool holds %v, want %v", got, ok)
	}
	for id, cidr := range ok {
		if a, _, _ := strings.Cut(cidr, "/"); got[id] != a {
			t.Errorf("%s holds %q, want %s", id, got[id], a)
		}
	}
}

// TestKilled: ADDs of a dual-stack network SIGKILLed at random instants (the process is
// local-ipam, then local-ipam-etcd after the hand-off). Whatever a killed ADD managed is a
// whole reservation of its container, so the runtime's DEL of each container leaves the
// pool empty, and the pool is then fully usable.
func TestKilled(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newDualStack("killed", eps, "10.70.0.0/27", "fd00:70::/123")
	bin := cniexec.Bin(t, "local-ipam")
	rng := rand.New(rand.NewPCG(7, 7))
	const calls = 60
	killed := 0
	for i := range calls {
		id := fmt.Sprintf("k%d", i)
		cmd := exec.Command(bin)
		cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0", "CNI_NETNS=/x", "CNI_PATH=" + filepath.Dir(bin)}
		cmd.Stdin = bytes.NewReader(n.conf(t, "a", nil))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// From a few microseconds (still local-ipam) to 12 ms (local-ipam-etcd mid-way).
		time.Sleep(time.Duration(rng.IntN(12000)) * time.Microsecond)
		_ = cmd.Process.Kill()
		if err := cmd.Wait(); err != nil {
			killed++
		}
	}
	t.Logf("%d of %d ADDs killed before they finished", killed, calls)
	if killed < calls/4 {
		t.Fatalf("only %d of %d ADDs were killed: the test did not test much", killed, calls)
	}
	// Every reservation left is whole: its container and both families are consistent
	// with what list and CHECK-like reads see; DEL of every container empties the pool.
	left := list(t, n)
	t.Logf("%d reservations left by the killed and finished ADDs", len(left))
	for _, e := range left {
		if !strings.HasPrefix(e.ContainerID, "k") || e.IfName != "eth0" {
			t.Errorf("reservation %+v of no container this test made", e)
		}
	}
	for i := range calls {
		wantOK(t, del(t, n, "a", fmt.Sprintf("k%d", i)), "DEL")
	}
	if l := list(t, n); len(l) != 0 {
		t.Fatalf("after DEL of every container: %v", l)
	}
	// Fully usable: the /27 gives its 29 addresses (.1 is the gateway) to 29 ADDs.
	for i := range 29 {
		wantOK(t, add(t, n, "a", fmt.Sprintf("after%d", i)), "ADD after the kills")
	}
	wantCode(t, add(t, n, "a", "one-too-many"), 100, "ADD to the full /27")
}

// TestBigConfigHandoff: a config of megabytes goes through the hand-off whole (local-ipam
// reads it, then gives it to local-ipam-etcd on a memfd as stdin). Once, a big config let
// the garbage collector close the real stdin, the memfd became descriptor 0, and the
// hand-off failed with EINVAL.
func TestBigConfigHandoff(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	var routes []any
	for i := range 50000 {
		routes = append(routes, map[string]any{"dst": fmt.Sprintf("20.%d.%d.0/24", i/256, i%256)})
	}
	n := newEtcdNet("big", eps, map[string]any{"subnet": "10.90.0.0/24", "routes": routes})
	conf := n.conf(t, "a", nil)
	if len(conf) < 1<<20 {
		t.Fatalf("config of %d bytes: not big enough to test anything", len(conf))
	}
	o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "big", IfName: "eth0", Conf: conf})
	wantOK(t, o, "ADD with a big config")
	var res struct {
		IPs    []any `json:"ips"`
		Routes []any `json:"routes"`
	}
	if err := json.Unmarshal([]byte(o.Stdout), &res); err != nil || len(res.IPs) != 1 || len(res.Routes) != len(routes) {
		t.Fatalf("result: %d addresses, %d routes (%v), want 1 and %d", len(res.IPs), len(res.Routes), err, len(routes))
	}

	// Errors name a long endpoint list by its first few.
	many := make([]string, 5000)
	for i := range many {
		many[i] = closedPort(t)
	}
	down := newEtcdNet("down", many, map[string]any{"subnet": "10.91.0.0/24"})
	down.timeout = time.Second
	e := wantCode(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "c", IfName: "eth0", Conf: down.conf(t, "a", nil)}), 11, "ADD with 5,000 dead endpoints")
	if !strings.Contains(e.Msg, "and 4995 more") || len(e.Msg) > 1000 {
		t.Errorf("message of %d bytes: %.300q", len(e.Msg), e.Msg)
	}
}

// TestSameAttachmentTwoMachines: a runtime bug (or two runtimes) ADDs one attachment from
// two machines at the same instant. As for two ADDs in a row, one succeeds and the other
// is refused with code 103: never two addresses in one range set for one attachment.
// The duplicate check is in the reservation's transaction (pkg/store/etcd reserve).
func TestSameAttachmentTwoMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newDualStack("twice", eps, "10.56.0.0/24", "fd00:56::/120")
	bin := cniexec.Bin(t, "local-ipam")
	const rounds = 30
	confs := [2][]byte{n.conf(t, "m0", nil), n.conf(t, "m1", nil)}
	wins := [2]int{}
	for r := range rounds {
		id := fmt.Sprintf("dup%d", r)
		var outs [2]cniexec.Out
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				outs[i], errs[i] = cniexec.CNIExec(bin, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: confs[i]})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, o := range outs {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if o.Exit == 0 {
				ok++
				wins[i]++
				continue
			}
			if e, isErr := o.Error(); !isErr || e.Code != 103 {
				t.Errorf("round %d, machine m%d: want success or code 103, got %s", r, i, o)
			}
		}
		if ok != 1 {
			t.Errorf("round %d: %d of the two ADDs of %s/eth0 succeeded, want exactly 1", r, ok, id)
		}
	}
	t.Logf("successes by machine: %v", wins)
	held := map[string][]string{}
	for _, e := range list(t, n) {
		held[e.ContainerID] = append(held[e.ContainerID], e.Address)
	}
	for r := range rounds {
		id := fmt.Sprintf("dup%d", r)
		a := held[id]
		if len(a) != 2 || strings.Contains(a[0], ":") == strings.Contains(a[1], ":") {
			t.Errorf("%s/eth0 holds %v, want one IPv4 and one IPv6 address", id, a)
		}
	}
}

// TestAddDelSameAttachment: an ADD on one machine and a DEL on another of the same
// attachment at once, round after round (a runtime that gives up on a slow ADD and
// DELs it). Whatever the order, the ADD either fails (code 11: the DEL freed what it had
// reserved in its first range set) and leaves nothing, or every address it answered is
// still reserved for the attachment, or the DEL came after it and freed them all. Never
// an answered address that the store has freed: the next ADD would get it while the
// container uses it. Before, a DEL that read the attachment between the ADD's two
// reservations freed the first one, and the ADD answered both.
func TestAddDelSameAttachment(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newDualStack("adddel", eps, "10.59.0.0/24", "fd00:59::/120")
	bin := cniexec.Bin(t, "local-ipam")
	addConf, delConf := n.conf(t, "tn1", nil), n.conf(t, "tn2", nil)
	look, err := etcd.Open(etcd.Config{Endpoints: eps, Prefix: "/t/" + t.Name(), Node: "look", Timeout: 10 * time.Second}, n.name)
	if err != nil {
		t.Fatal(err)
	}
	defer look.Close()
	const rounds = 60
	var failed, emptied, kept int
	for r := range rounds {
		id := fmt.Sprintf("c%d", r)
		var addOut, delOut cniexec.Out
		var addErr, delErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			addOut, addErr = cniexec.CNIExec(bin, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: addConf})
		}()
		go func() {
			defer wg.Done()
			// The DEL lands anywhere from before the ADD's first reservation to after
			// its last.
			time.Sleep(time.Duration(rand.IntN(6000)) * time.Microsecond)
			delOut, delErr = cniexec.CNIExec(bin, cniexec.Call{Cmd: "DEL", ID: id, IfName: "eth0", Conf: delConf})
		}()
		wg.Wait()
		if addErr != nil || delErr != nil {
			t.Fatal(addErr, delErr)
		}
		if delOut.Exit != 0 {
			t.Errorf("round %d: DEL failed: %s", r, delOut)
		}
		held, err := look.Owned(store.Owner{ID: id, IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, a := range held {
			have = append(have, a.String())
		}
		slices.Sort(have)
		if addOut.Exit != 0 {
			if e, ok := addOut.Error(); !ok || e.Code != 11 {
				t.Errorf("round %d: ADD failed with other than code 11: %s", r, addOut)
			}
			if len(have) != 0 {
				t.Errorf("round %d: the ADD failed, yet %s holds %v", r, id, have)
			}
			failed++
			continue
		}
		var answered []string
		for _, a := range addOut.Addrs(t) {
			answered = append(answered, netip.MustParsePrefix(a).Addr().String())
		}
		slices.Sort(answered)
		switch {
		case len(have) == 0:
			emptied++ // the DEL came after the ADD
		case slices.Equal(have, answered):
			kept++ // the DEL came first
		default:
			t.Errorf("round %d: the ADD answered %v, the store holds %v for %s", r, answered, have, id)
		}
	}
	t.Logf("%d rounds: ADD failed %d, DEL after the ADD %d, DEL before it %d", rounds, failed, emptied, kept)
	if got := strings.Count(fmt.Sprint(list(t, n)), "10.59."); got != kept {
		t.Errorf("%d IPv4 reservations in the network, want the %d kept", got, kept)
	}
}
