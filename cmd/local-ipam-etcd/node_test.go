package main

// Machines and their node names: the operator's commands act for no node, and a node name
// is bound to one machine (pkg/store/etcd/node.go). A "machine" here is a machine ID file
// and a boot ID file, given to the binaries by LOCAL_IPAM_MACHINE_ID_FILE and
// LOCAL_IPAM_BOOT_ID_FILE.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

type machine struct {
	id       string
	bootFile string
	env      []string
}

// newMachine makes a machine with a random machine ID, booted with boot ID boot.
func newMachine(t testing.TB, boot string) *machine {
	t.Helper()
	dir := t.TempDir()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	m := &machine{id: hex.EncodeToString(b), bootFile: filepath.Join(dir, "boot_id")}
	idFile := filepath.Join(dir, "machine-id")
	if err := os.WriteFile(idFile, []byte(m.id+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	m.reboot(t, boot)
	m.env = []string{"LOCAL_IPAM_MACHINE_ID_FILE=" + idFile, "LOCAL_IPAM_BOOT_ID_FILE=" + m.bootFile}
	return m
}

// reboot gives the machine a new boot ID (its machine ID stays).
func (m *machine) reboot(t testing.TB, boot string) {
	t.Helper()
	writeFile(t, m.bootFile, []byte(boot+"\n"))
}

// call runs a CNI verb on the machine, as node.
func (m *machine) call(t testing.TB, n *etcdNet, cmd, node, id string, extra map[string]any) cniexec.Out {
	t.Helper()
	return plugin(t, cniexec.Call{Cmd: cmd, ID: id, IfName: "eth0", Env: m.env, Conf: n.conf(t, node, extra)})
}

// operator runs bin/local-ipam with arguments on the machine, as a person does.
func (m *machine) operator(t testing.TB, args ...string) cniexec.Out {
	t.Helper()
	return cniexec.Run(t, cniexec.Bin(t, "local-ipam"), m.env, nil, args...)
}

// listedAs is the network's reservations, each as container@node=address.
func listedAs(t testing.TB, n *etcdNet) []string {
	t.Helper()
	return listedBy(t, n, func(e listed) string { return e.ContainerID + "@" + e.Node + "=" + e.Address })
}

// The operator's commands run on any machine, with the network's config (node included):
// they must not free on reboot for that node with their own machine's boot ID, nor write
// anything else they were not asked to. Before, a list on another machine emptied the
// node, and the next ADD handed a live container's address out again.
func TestOperatorCommandsFreeNothing(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("fr", eps, map[string]any{"subnet": "10.51.0.0/30", "freeOnReboot": true}) // one address: .2
	n1 := newMachine(t, "boot-a")
	o := n1.call(t, n, "ADD", "n1", "c1", nil)
	wantOK(t, o, "ADD c1 on n1")
	if got := o.Addrs(t); !slices.Equal(got, []string{"10.51.0.2/30"}) {
		t.Fatalf("ADD c1 got %v", got)
	}
	conf := writeConf(t, n.conf(t, "n1", nil)) // n1's own config, copied to the operator's machine
	want := []string{"c1@n1=10.51.0.2"}
	for _, op := range []*machine{newMachine(t, "boot-b"), n1} {
		if op == n1 {
			n1.reboot(t, "boot-a2") // n1 rebooted; an operator's command runs before any CNI call
		}
		for _, args := range [][]string{
			{"list", "--conf", conf}, {"list", "--conf", conf, "--json"},
			{"usage", "--conf", conf}, {"usage", "--conf", conf, "--json"},
			{"release", "--conf", conf, "--container", "nobody"},
			{"release", "--conf", conf, "--container", "nobody", "--ifname", "eth0"},
			{"release", "--conf", conf, "--node", "nobody"},
		} {
			o := op.operator(t, args...)
			if args[0] == "release" && args[3] == "--container" {
				// A release of nothing says so and exits 1; it must still free nothing.
				if o.Exit != 1 || !strings.Contains(o.Stderr, "nothing reserved") {
					t.Errorf("%v: exit=%d stderr=%q, want exit 1 and 'nothing reserved'", args, o.Exit, o.Stderr)
				}
			} else {
				wantOK(t, o, strings.Join(args, " "))
			}
			if args[0] == "list" && !strings.Contains(o.Stdout, "c1") {
				t.Errorf("%v printed no c1: %q", args, o.Stdout)
			}
			if got := listedAs(t, n); !slices.Equal(got, want) {
				t.Fatalf("after %v: %v, want %v", args, got, want)
			}
		}
	}
	n1.reboot(t, "boot-a")
	// The pool is still full: no ADD anywhere gets c1's address again.
	wantCode(t, newMachine(t, "boot-c").call(t, n, "ADD", "n2", "c2", nil), 100, "ADD on n2")
	// And n1's boot record is still boot A: its next call of boot A frees nothing.
	wantCode(t, n1.call(t, n, "ADD", "n1", "c3", nil), 100, "ADD on n1, same boot")
	if got := listedAs(t, n); !slices.Equal(got, want) {
		t.Fatalf("after the ADDs: %v, want %v", got, want)
	}
	// release frees exactly what it names.
	o = newMachine(t, "boot-d").operator(t, "release", "--conf", conf, "--container", "c1")
	wantOK(t, o, "release c1")
	if o.Stdout != "released 10.51.0.2 (container c1, ifname eth0)\n" {
		t.Errorf("release c1 printed %q", o.Stdout)
	}
	if got := listedAs(t, n); len(got) != 0 {
		t.Errorf("after release c1: %v", got)
	}
}

// Two machines given one node name: the first to use it has it; the other's ADD, GC,
// STATUS and freeOnReboot are refused with code 7 naming the node and the remedy, and
// never free the first one's reservations. A reboot of the first still frees; release
// --node frees the name for another machine.
func TestNodeNameOfTwoMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)

	// Each subnet is a /26, one block of the default size: addresses come in host-local's
	// order.
	t.Run("freeOnReboot", func(t *testing.T) {
		n := newEtcdNet("twofr", eps, map[string]any{"subnet": "10.53.0.0/26", "freeOnReboot": true})
		a, b := newMachine(t, "boot-a1"), newMachine(t, "boot-b1")
		wantOK(t, a.call(t, n, "ADD", "n", "c1", nil), "ADD c1 on machine a")
		e := wantCode(t, b.call(t, n, "ADD", "n", "c2", nil), 7, "ADD on machine b with a's node name")
		for _, s := range []string{`"n"`, a.id, b.id, "unique store.node", "local-ipam release --conf FILE --node n"} {
			if !strings.Contains(e.Msg, s) {
				t.Errorf("message does not name %q: %s", s, e.Msg)
			}
		}
		for _, cmd := range []string{"DEL", "CHECK"} {
			wantCode(t, b.call(t, n, cmd, "n", "c1", nil), 7, cmd+" with freeOnReboot on machine b")
		}
		gc := map[string]any{"cni.dev/valid-attachments": []any{}}
		wantCode(t, b.call(t, n, "GC", "n", "", gc), 7, "GC on machine b")
		e = wantCode(t, plugin(t, cniexec.Call{Cmd: "STATUS", Env: b.env, Conf: n.conf(t, "n", nil)}), 50, "STATUS on machine b")
		if !strings.Contains(e.Msg, "bound to another machine") {
			t.Errorf("STATUS message: %s", e.Msg)
		}
		if got := listedAs(t, n); !slices.Equal(got, []string{"c1@n=10.53.0.2"}) {
			t.Fatalf("after machine b's calls: %v", got)
		}
		// Machine a reboots: same machine ID, new boot ID. Its first call frees c1.
		a.reboot(t, "boot-a2")
		wantOK(t, a.call(t, n, "ADD", "n", "c3", nil), "ADD c3 after a's reboot")
		if got := listedAs(t, n); !slices.Equal(got, []string{"c3@n=10.53.0.3"}) {
			t.Fatalf("after a's reboot: %v", got)
		}
		// Machine a is gone for good: the operator frees its addresses and its name.
		o := b.operator(t, "release", "--conf", writeConf(t, n.conf(t, "n", nil)), "--node", "n")
		wantOK(t, o, "release --node n")
		if o.Stdout != "releasing 10.53.0.3 (container c3, ifname eth0)\nreleased 10.53.0.3 (container c3, ifname eth0)\nnode name n is no longer bound to a machine in network twofr\n" {
			t.Errorf("release --node n printed %q", o.Stdout)
		}
		wantOK(t, b.call(t, n, "ADD", "n", "c4", nil), "ADD on machine b once the name is free")
		wantCode(t, a.call(t, n, "ADD", "n", "c5", nil), 7, "ADD on machine a once b has the name")
		if got := listedAs(t, n); !slices.Equal(got, []string{"c4@n=10.53.0.4"}) {
			t.Fatalf("at the end: %v", got)
		}
	})

	t.Run("GC", func(t *testing.T) {
		n := newEtcdNet("twogc", eps, map[string]any{"subnet": "10.54.0.0/26"})
		a, b := newMachine(t, "boot-a"), newMachine(t, "boot-b")
		wantOK(t, a.call(t, n, "ADD", "n", "c1", nil), "ADD c1 on machine a")
		wantOK(t, a.call(t, n, "ADD", "n", "c2", nil), "ADD c2 on machine a")
		wantCode(t, b.call(t, n, "ADD", "n", "c3", nil), 7, "ADD on machine b")
		// b's runtime knows none of a's containers: its GC, with an empty list or none,
		// would free them all.
		wantCode(t, b.call(t, n, "GC", "n", "", map[string]any{"cni.dev/valid-attachments": []any{}}), 7, "GC on machine b")
		wantCode(t, b.call(t, n, "GC", "n", "", nil), 7, "GC without a list on machine b")
		// DEL and CHECK act on a container, not on the node: any machine may.
		wantOK(t, b.call(t, n, "DEL", "n", "c2", nil), "DEL c2 on machine b")
		wantOK(t, a.call(t, n, "GC", "n", "", map[string]any{"cni.dev/valid-attachments": []any{
			map[string]any{"containerID": "c1", "ifname": "eth0"},
		}}), "GC on machine a")
		if got := listedAs(t, n); !slices.Equal(got, []string{"c1@n=10.54.0.2"}) {
			t.Fatalf("after the GCs: %v", got)
		}
	})

	t.Run("machine ID unreadable", func(t *testing.T) {
		n := newEtcdNet("noid", eps, map[string]any{"subnet": "10.55.0.0/26"})
		a := newMachine(t, "boot-a")
		wantOK(t, a.call(t, n, "ADD", "n", "c1", nil), "ADD c1 on machine a")
		dir := t.TempDir()
		bad := filepath.Join(dir, "machine-id")
		for _, content := range []string{"", "uninitialized\n"} {
			if content != "" {
				if err := os.WriteFile(bad, []byte(content), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			m := &machine{env: []string{"LOCAL_IPAM_MACHINE_ID_FILE=" + bad}}
			for _, node := range []string{"n", "fresh"} {
				e := wantCode(t, m.call(t, n, "ADD", node, "c2", nil), 7, "ADD without a machine ID")
				if !strings.Contains(e.Msg, bad) || !strings.Contains(e.Msg, "machine's ID cannot be read") {
					t.Errorf("message: %s", e.Msg)
				}
				wantCode(t, m.call(t, n, "GC", node, "", map[string]any{"cni.dev/valid-attachments": []any{}}), 7, "GC without a machine ID")
				wantCode(t, plugin(t, cniexec.Call{Cmd: "STATUS", Env: m.env, Conf: n.conf(t, node, nil)}), 50, "STATUS without a machine ID")
			}
			// What does not act for the node works.
			wantOK(t, m.call(t, n, "DEL", "n", "nobody", nil), "DEL without a machine ID")
			wantOK(t, m.operator(t, "usage", "--conf", writeConf(t, n.conf(t, "n", nil))), "usage without a machine ID")
			if got := listedAs(t, n); !slices.Equal(got, []string{"c1@n=10.55.0.2"}) {
				t.Fatalf("without a machine ID: %v", got)
			}
		}
	})
}

// putKey writes one key of network n straight into etcd (damage, or an earlier version's
// record), under the prefix n.conf gives.
func putKey(t *testing.T, n *etcdNet, key, value string) {
	t.Helper()
	etcdtest.Put(t, etcdtest.Client(t, n.endpoints), "/t/"+t.Name()+"/"+n.name+"/"+key, value)
}

// A damaged node record (not JSON, not a boot ID) must not pass for an earlier version's
// boot ID: then the node was unbound, and another machine's first ADD with freeOnReboot
// bound it and freed the node's live reservations, to be handed out again. Now every
// call acting for the node fails with code 104 naming the key, and nothing is freed. An
// earlier version's record of another boot is bound by the first machine to use it,
// which frees nothing.
func TestDamagedNodeRecord(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("dmg", eps, map[string]any{"subnet": "10.58.0.0/24", "freeOnReboot": true})
	m1 := newMachine(t, "1b4e28ba-2fa1-41d2-883f-0016d3cca427")
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("live%d", i)
		o := m1.call(t, n, "ADD", "g", id, nil)
		wantOK(t, o, "ADD "+id+" on machine 1")
		want = append(want, id+"@g="+strings.TrimSuffix(o.Addrs(t)[0], "/24"))
	}
	slices.Sort(want)
	key := "/t/" + t.Name() + "/dmg/boot/g"
	m2 := newMachine(t, "6fa459ea-ee8a-4ca4-894e-db77e160355e")
	for _, v := range []string{"garbage", "xyz", "\x01\x02", "{"} {
		putKey(t, n, "boot/g", v)
		for i, m := range []*machine{m2, m1} {
			e := wantCode(t, m.call(t, n, "ADD", "g", "intruder", nil), 104, fmt.Sprintf("ADD on machine %d with node record %q", 2-i, v))
			if !strings.Contains(e.Msg+e.Details, key) {
				t.Errorf("the error does not name %s: %+v", key, e)
			}
		}
		if got := listedAs(t, n); !slices.Equal(got, want) {
			t.Fatalf("after the ADDs with node record %q: %v, want %v", v, got, want)
		}
	}
	// An earlier version's record, of a boot that is not machine 2's: machine 2 binds the
	// name and frees nothing; machine 1 is refused (two machines use one name).
	putKey(t, n, "boot/g", "5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6d")
	o := m2.call(t, n, "ADD", "g", "intruder", nil)
	wantOK(t, o, "ADD on machine 2 with an earlier version's record")
	want = append(want, "intruder@g="+strings.TrimSuffix(o.Addrs(t)[0], "/24"))
	slices.Sort(want)
	if got := listedAs(t, n); !slices.Equal(got, want) {
		t.Fatalf("after machine 2 bound the name: %v, want %v", got, want)
	}
	wantCode(t, m1.call(t, n, "ADD", "g", "more", nil), 7, "ADD on machine 1 once machine 2 bound the name")
}
