package etcd

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

const (
	machineA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
	machineB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
)

func onMachine(node, machine string) Config {
	c := cfgFor(shared, node)
	c.Machine = machine
	return c
}

func TestMachineID(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "machine-id")
	t.Setenv(machineIDEnv, f)
	for _, c := range []struct{ content, want, err string }{
		{"", "", "no such file"},
		{"0123456789ABCDEF0123456789abcdef\n", "0123456789abcdef0123456789abcdef", ""},
		{"uninitialized\n", "", "not a machine ID"},
		{"00000000000000000000000000000000", "", "not a machine ID"},
		{"0123456789abcdef0123456789abcdeg", "", "not a machine ID"},
		{"0123456789abcdef0123456789abcdef0", "", "not a machine ID"},
	} {
		os.Remove(f)
		if c.content != "" {
			if err := os.WriteFile(f, []byte(c.content), 0o444); err != nil {
				t.Fatal(err)
			}
		}
		id, err := MachineID()
		if id != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("machine-id %q: MachineID() = %q, %v; want %q, error with %q", c.content, id, err, c.want, c.err)
		}
	}
	t.Setenv(machineIDEnv, "")
	if got := MachineIDFiles(); strings.Join(got, " ") != "/etc/machine-id /var/lib/dbus/machine-id" {
		t.Errorf("MachineIDFiles() = %v", got)
	}
}

// TestNodeBinding: a node name is bound to the first machine that reserves, GCs or frees
// on reboot for it; another machine's attempts are refused with code 7 and change
// nothing; ReleaseNode frees the name.
func TestNodeBinding(t *testing.T) {
	network := newNetwork()
	cli := rawClient(t, shared)
	ctx := context.Background()
	code := func(err error) uint { return cnierr.Code(err) }

	// A node record of earlier versions, a plain boot ID: bound by the first call, which
	// keeps the boot ID (the same boot frees nothing).
	a := mustOpen(t, onMachine("n", machineA), network)
	if _, err := cli.Put(ctx, a.bootKey(), "boot-1"); err != nil {
		t.Fatal(err)
	}
	a = mustOpen(t, onMachine("n", machineA), network)
	mustReserve(t, a, "10.5.0.1", own("c1", "eth0"))
	a = mustOpen(t, onMachine("n", machineA), network)
	if n, err := a.FreeOnReboot("boot-1"); err != nil || n != 0 {
		t.Fatalf("FreeOnReboot of the boot the old record names = %d, %v", n, err)
	}
	resp, err := cli.Get(ctx, a.bootKey())
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"machine":"`+machineA+`","boot":"boot-1"}` {
		t.Fatalf("node record after the first call: %v, %v", resp.Kvs, err)
	}

	// Machine b with the same node name: everything acting for the node is refused.
	b := mustOpen(t, onMachine("n", machineB), network)
	if ok, err := b.Reserve(netip.MustParseAddr("10.5.0.2"), own("c2", "eth0")); code(err) != cnierr.InvalidConfig || ok || !strings.Contains(err.Error(), machineA) {
		t.Errorf("Reserve on machine b = %v, %v; want code 7 naming machine a", ok, err)
	}
	if n, err := b.FreeOnReboot("boot-b"); code(err) != cnierr.InvalidConfig || n != 0 {
		t.Errorf("FreeOnReboot on machine b = %d, %v; want code 7", n, err)
	}
	if removed, err := b.GC(nil); code(err) != cnierr.InvalidConfig || len(removed) != 0 {
		t.Errorf("GC on machine b = %v, %v; want code 7", removed, err)
	}
	if err := b.Writable(); code(err) != cnierr.InvalidConfig {
		t.Errorf("Writable on machine b = %v; want code 7", err)
	}
	// What acts on a container is not the node's: any machine may.
	if got, err := b.Owned(own("c1", "eth0")); err != nil || len(got) != 1 {
		t.Errorf("Owned on machine b = %v, %v", got, err)
	}
	if held := checkConsistent(t, cli, a); len(held) != 1 {
		t.Fatalf("after machine b's attempts: %v", held)
	}
	// A reboot of machine a still frees.
	a = mustOpen(t, onMachine("n", machineA), network)
	if n, err := a.FreeOnReboot("boot-2"); err != nil || n != 1 {
		t.Errorf("FreeOnReboot after a's reboot = %d, %v; want 1", n, err)
	}

	// Two machines binding a fresh name at once: both read it unbound; the first
	// reservation binds it, the second is refused and reserves nothing.
	a = mustOpen(t, onMachine("fresh", machineA), network)
	b = mustOpen(t, onMachine("fresh", machineB), network)
	mustReserve(t, a, "10.5.1.1", own("f1", "eth0"))
	if ok, err := b.Reserve(netip.MustParseAddr("10.5.1.2"), own("f2", "eth0")); code(err) != cnierr.InvalidConfig || ok {
		t.Errorf("Reserve of the second machine = %v, %v; want code 7", ok, err)
	}
	// And GC binds too: a name first used by a GC is that machine's.
	b = mustOpen(t, onMachine("gc-first", machineB), network)
	if _, err := b.GC(nil); err != nil {
		t.Fatal(err)
	}
	a = mustOpen(t, onMachine("gc-first", machineA), network)
	if ok, err := a.Reserve(netip.MustParseAddr("10.5.2.1"), own("g1", "eth0")); code(err) != cnierr.InvalidConfig || ok {
		t.Errorf("Reserve after another machine's GC bound the name = %v, %v; want code 7", ok, err)
	}

	// ReleaseNode frees the reservations and the name.
	op := mustOpen(t, cfgFor(shared, "operator"), network)
	var freed []Record
	n, cleared, err := op.ReleaseNode("fresh", func(rs []Record) { freed = append(freed, rs...) })
	if err != nil || n != 1 || !cleared || len(freed) != 1 || freed[0].Addr != netip.MustParseAddr("10.5.1.1") || freed[0].Owner != own("f1", "eth0") {
		t.Fatalf("ReleaseNode = %d, %v, %v; freed %+v", n, cleared, err, freed)
	}
	b = mustOpen(t, onMachine("fresh", machineB), network)
	mustReserve(t, b, "10.5.1.2", own("f2", "eth0"))
	if n, cleared, err := op.ReleaseNode("never-used", func([]Record) {}); err != nil || n != 0 || cleared {
		t.Errorf("ReleaseNode of an unknown node = %d, %v, %v", n, cleared, err)
	}

	// A damaged node record: what acts for the node is refused with code 104 naming the
	// key; ReleaseNode removes it.
	k := mustOpen(t, onMachine("k", machineA), network)
	if _, err := cli.Put(ctx, k.bootKey(), `{"machine":"not hex"}`); err != nil {
		t.Fatal(err)
	}
	k = mustOpen(t, onMachine("k", machineA), network)
	if _, err := k.Reserve(netip.MustParseAddr("10.5.3.1"), own("k1", "eth0")); code(err) != cnierr.StoreCorrupt || !strings.Contains(err.Error(), k.bootKey()) {
		t.Errorf("Reserve with a damaged node record = %v; want code 104 naming it", err)
	}
	if _, cleared, err := op.ReleaseNode("k", func([]Record) {}); err != nil || !cleared {
		t.Fatalf("ReleaseNode of the damaged node = %v, %v", cleared, err)
	}
	k = mustOpen(t, onMachine("k", machineA), network)
	mustReserve(t, k, "10.5.3.1", own("k1", "eth0"))

	// No machine ID: what acts for the node fails with code 7 saying why.
	t.Setenv(machineIDEnv, filepath.Join(t.TempDir(), "missing"))
	u := mustOpen(t, cfgFor(shared, "unknown"), network)
	if _, err := u.Reserve(netip.MustParseAddr("10.5.4.1"), own("u1", "eth0")); code(err) != cnierr.InvalidConfig || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Reserve without a machine ID = %v; want code 7 naming the file", err)
	}
	if _, err := u.GC(nil); code(err) != cnierr.InvalidConfig {
		t.Errorf("GC without a machine ID = %v; want code 7", err)
	}
	checkConsistent(t, cli, op)
}

// TestDuplicateCheckInTransaction: a reservation made after Owned of its owner goes
// through only if no reservation of the owner (or of its ID-only form) was made since.
func TestDuplicateCheckInTransaction(t *testing.T) {
	network := newNetwork()
	a := mustOpen(t, cfgFor(shared, "node-a"), network)
	b := mustOpen(t, cfgFor(shared, "node-b"), network)
	o := own("c", "eth0")
	for _, s := range []*Store{a, b} {
		for _, ow := range []store.Owner{o, o.Legacy()} {
			if got, err := s.Owned(ow); err != nil || len(got) != 0 {
				t.Fatalf("Owned = %v, %v", got, err)
			}
		}
	}
	if ok, err := a.ReserveAt(netip.MustParseAddr("10.6.0.1"), o, 0); err != nil || !ok {
		t.Fatalf("first ReserveAt = %v, %v", ok, err)
	}
	if ok, err := b.ReserveAt(netip.MustParseAddr("10.6.0.2"), o, 0); !errors.Is(err, store.ErrOwnerChanged) || ok {
		t.Errorf("ReserveAt after the owner reserved elsewhere = %v, %v; want ErrOwnerChanged", ok, err)
	}
	// Read again (the allocator's check sees a's address), the check passes.
	if got, err := b.Owned(o); err != nil || len(got) != 1 {
		t.Fatalf("Owned again = %v, %v", got, err)
	}
	if _, err := b.Owned(o.Legacy()); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, b, "fd00:6::1", o)

	// The container's ID-only records count as its own.
	o2 := own("d", "eth0")
	if _, err := b.Owned(o2); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, a, "10.6.0.3", o2.Legacy())
	if ok, err := b.Reserve(netip.MustParseAddr("10.6.0.4"), o2); !errors.Is(err, store.ErrOwnerChanged) || ok {
		t.Errorf("Reserve after an ID-only reservation of the container = %v, %v; want ErrOwnerChanged", ok, err)
	}
	// Without an Owned first (a requested address) there is no such check, as on disk.
	mustReserve(t, b, "10.6.0.4", o2)
	if held := checkConsistent(t, rawClient(t, shared), a); len(held) != 4 {
		t.Errorf("held: %v", held)
	}
}
