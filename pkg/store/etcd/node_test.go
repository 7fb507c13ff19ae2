package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
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
	cli := etcdtest.Client(t, shared)
	ctx := context.Background()
	code := func(err error) uint { return cnierr.Code(err) }

	// A node record of earlier versions, a plain boot ID: bound by the first call, which
	// keeps the boot ID (the same boot frees nothing).
	const boot1 = "0f5b2c1e-7d44-4b8a-9c3e-2a6d8e1f4b70"
	a := mustOpen(t, onMachine("n", machineA), network)
	etcdtest.Put(t, cli, a.bootKey(), boot1)
	a = mustOpen(t, onMachine("n", machineA), network)
	mustReserve(t, a, "10.5.0.1", own("c1", "eth0"))
	a = mustOpen(t, onMachine("n", machineA), network)
	if n, err := a.FreeOnReboot(boot1); err != nil || n != 0 {
		t.Fatalf("FreeOnReboot of the boot the old record names = %d, %v", n, err)
	}
	resp, err := cli.Get(ctx, a.bootKey())
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"machine":"`+machineA+`","boot":"`+boot1+`"}` {
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
	var releasing, freed []Record
	n, cleared, err := op.ReleaseNode("fresh", func(rs []Record) {
		if len(freed) != 0 {
			t.Errorf("told of the batch after its release")
		}
		releasing = append(releasing, rs...)
	}, func(rs []Record) { freed = append(freed, rs...) })
	if err != nil || n != 1 || !cleared || len(freed) != 1 || freed[0].Addr != netip.MustParseAddr("10.5.1.1") || freed[0].Owner != own("f1", "eth0") || !slices.Equal(releasing, freed) {
		t.Fatalf("ReleaseNode = %d, %v, %v; releasing %+v, freed %+v", n, cleared, err, releasing, freed)
	}
	b = mustOpen(t, onMachine("fresh", machineB), network)
	mustReserve(t, b, "10.5.1.2", own("f2", "eth0"))
	if n, cleared, err := op.ReleaseNode("never-used", func([]Record) {}, func([]Record) {}); err != nil || n != 0 || cleared {
		t.Errorf("ReleaseNode of an unknown node = %d, %v, %v", n, cleared, err)
	}

	// A damaged node record: what acts for the node is refused with code 104 naming the
	// key; ReleaseNode removes it.
	k := mustOpen(t, onMachine("k", machineA), network)
	etcdtest.Put(t, cli, k.bootKey(), `{"machine":"not hex"}`)
	k = mustOpen(t, onMachine("k", machineA), network)
	if _, err := k.Reserve(netip.MustParseAddr("10.5.3.1"), own("k1", "eth0")); code(err) != cnierr.StoreCorrupt || !strings.Contains(err.Error(), k.bootKey()) {
		t.Errorf("Reserve with a damaged node record = %v; want code 104 naming it", err)
	}
	if _, cleared, err := op.ReleaseNode("k", func([]Record) {}, func([]Record) {}); err != nil || !cleared {
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
	wantLeft(t, a, 4)
}

// TestNodeRecordNotBootID: a node record that is neither local-ipam's JSON nor a kernel
// boot ID (a UUID, the only plain value earlier versions wrote) is damage: whatever acts
// for the node is refused with code 104 naming the key, on every machine, and nothing is
// freed. Read as an earlier version's boot ID, it left the node unbound, and another
// machine's first call with freeOnReboot bound it and freed the node's live reservations.
func TestNodeRecordNotBootID(t *testing.T) {
	network := newNetwork()
	cli := etcdtest.Client(t, shared)
	ctx := context.Background()
	a := mustOpen(t, onMachine("g", machineA), network)
	for i := range 10 {
		mustReserve(t, a, fmt.Sprintf("10.7.0.%d", i+1), own(fmt.Sprintf("live%d", i), "eth0"))
	}
	nodeIndex := a.nodePrefix("g")
	for _, v := range []string{
		"garbage", "xyz", "\x01\x02", "", " \n", "{",
		"5e0c6d3b2a9e4d5c9a570f1e3c8b7a6d",        // no dashes
		"5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6",     // one digit short
		"5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6dx",   // one too many
		"5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6g",    // not hexadecimal
		"5e0c6d3b_2a9e_4d5c_9a57_0f1e3c8b7a6d",    // not the dashes
		"5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6d\nx", // something after it
	} {
		etcdtest.Put(t, cli, a.bootKey(), v)
		for _, m := range []string{machineA, machineB} {
			what := fmt.Sprintf("node record %q, machine %s", v, m[:4])
			s := mustOpen(t, onMachine("g", m), network)
			if n, err := s.FreeOnReboot("d3b07384-d9a0-4c9b-8f3e-1a2b3c4d5e6f"); cnierr.Code(err) != cnierr.StoreCorrupt || n != 0 || !strings.Contains(err.Error(), a.bootKey()) {
				t.Errorf("%s: FreeOnReboot = %d, %v; want code 104 naming %s", what, n, err, a.bootKey())
			}
			s = mustOpen(t, onMachine("g", m), network)
			if ok, err := s.Reserve(netip.MustParseAddr("10.7.0.100"), own("new", "eth0")); cnierr.Code(err) != cnierr.StoreCorrupt || ok {
				t.Errorf("%s: Reserve = %v, %v; want code 104", what, ok, err)
			}
			s = mustOpen(t, onMachine("g", m), network)
			if removed, err := s.GC(nil); cnierr.Code(err) != cnierr.StoreCorrupt || len(removed) != 0 {
				t.Errorf("%s: GC = %v, %v; want code 104", what, removed, err)
			}
		}
		if n := countKeys(t, cli, nodeIndex); n != 10 {
			t.Fatalf("node record %q: node g holds %d reservations, want its 10", v, n)
		}
		got, err := cli.Get(ctx, a.bootKey())
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != v {
			t.Fatalf("node record %q was rewritten: %v, %v", v, got.Kvs, err)
		}
	}
	checkConsistent(t, cli, a)
}

// TestOldNodeRecord: the record of an earlier version (a plain boot ID) is unbound, and
// no call frees anything on an unbound record: a machine cannot tell its own reboot from
// another machine using the same name. The first machine to use the node binds it with
// its boot and frees nothing; from then on, it frees on reboot and GCs as usual, and the
// other machine is refused.
func TestOldNodeRecord(t *testing.T) {
	network := newNetwork()
	cli := etcdtest.Client(t, shared)
	ctx := context.Background()
	const (
		oldBoot = "5e0c6d3b-2a9e-4d5c-9a57-0f1e3c8b7a6d"
		newBoot = "d3b07384-d9a0-4c9b-8f3e-1a2b3c4d5e6f"
	)
	a := mustOpen(t, onMachine("u", machineA), network)
	for i := range 3 {
		mustReserve(t, a, fmt.Sprintf("10.8.0.%d", i+1), own(fmt.Sprintf("c%d", i), "eth0"))
	}
	record := func() string {
		t.Helper()
		r, err := cli.Get(ctx, a.bootKey())
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("node record: %v, %v", r, err)
		}
		return string(r.Kvs[0].Value)
	}
	held := func() int64 { return countKeys(t, cli, a.nodePrefix("u")) }

	// The boot differs from machine b's: a reboot, or another machine? b binds the name
	// and frees nothing.
	etcdtest.Put(t, cli, a.bootKey(), oldBoot)
	b := mustOpen(t, onMachine("u", machineB), network)
	if n, err := b.FreeOnReboot(newBoot); err != nil || n != 0 {
		t.Fatalf("FreeOnReboot on an old record of another boot = %d, %v; want 0, nil", n, err)
	}
	if got, want := record(), `{"machine":"`+machineB+`","boot":"`+newBoot+`"}`; got != want || held() != 3 {
		t.Fatalf("after the first call: record %s (want %s), %d held (want 3)", got, want, held())
	}
	if _, err := mustOpen(t, onMachine("u", machineA), network).FreeOnReboot(oldBoot); cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("machine a once b bound the name: FreeOnReboot = %v; want code 7", err)
	}

	// As the kernel writes it, with a line break, and the same boot: bound, kept.
	etcdtest.Put(t, cli, a.bootKey(), oldBoot+"\n")
	if n, err := mustOpen(t, onMachine("u", machineA), network).FreeOnReboot(oldBoot); err != nil || n != 0 {
		t.Fatalf("FreeOnReboot on an old record of this boot = %d, %v", n, err)
	}
	if got, want := record(), `{"machine":"`+machineA+`","boot":"`+oldBoot+`"}`; got != want || held() != 3 {
		t.Fatalf("record %s (want %s), %d held", got, want, held())
	}

	// GC binds an unbound record and frees nothing; the next GC, bound, does.
	for _, rec := range []string{oldBoot, ""} { // an old record; none at all
		if rec == "" {
			if _, err := cli.Delete(ctx, a.bootKey()); err != nil {
				t.Fatal(err)
			}
		} else {
			etcdtest.Put(t, cli, a.bootKey(), rec)
		}
		if removed, err := mustOpen(t, onMachine("u", machineB), network).GC(nil); err != nil || len(removed) != 0 {
			t.Fatalf("GC on an unbound record (%q) = %v, %v; want nothing removed", rec, removed, err)
		}
		if got := record(); !strings.Contains(got, machineB) || held() != 3 {
			t.Fatalf("after GC on an unbound record (%q): record %s, %d held", rec, got, held())
		}
		if removed, err := mustOpen(t, onMachine("u", machineA), network).GC(nil); cnierr.Code(err) != cnierr.InvalidConfig || len(removed) != 0 {
			t.Fatalf("GC of machine a once b bound the name = %v, %v; want code 7", removed, err)
		}
	}
	if removed, err := mustOpen(t, onMachine("u", machineB), network).GC(nil); err != nil || len(removed) != 3 {
		t.Fatalf("GC on the bound record = %v, %v; want the 3 removed", removed, err)
	}
	checkConsistent(t, cli, a)
}
