package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustRange(t *testing.T, s string) v4range {
	t.Helper()
	r, err := newV4Range(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ip(s string) uint32 { return u32(netip.MustParseAddr(s)) }

func TestNewV4Range(t *testing.T) {
	for _, c := range []struct {
		subnet          string
		start, end, gw  string
		span, usable    int
		firstUsableWant string
	}{
		{"10.1.0.0/16", "10.1.0.1", "10.1.255.254", "10.1.0.1", 65534, 65533, "10.1.0.2"},
		{"10.2.0.0/20", "10.2.0.1", "10.2.15.254", "10.2.0.1", 4094, 4093, "10.2.0.2"},
		{"192.168.7.0/24", "192.168.7.1", "192.168.7.254", "192.168.7.1", 254, 253, "192.168.7.2"},
		{"10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1", 2, 1, "10.0.0.2"},
	} {
		r := mustRange(t, c.subnet)
		if r.start != ip(c.start) || r.end != ip(c.end) || r.gw != ip(c.gw) {
			t.Errorf("%s: start %s end %s gw %s", c.subnet, addr4(r.start), addr4(r.end), addr4(r.gw))
		}
		if r.span() != c.span || r.usable() != c.usable {
			t.Errorf("%s: span %d usable %d, want %d %d", c.subnet, r.span(), r.usable(), c.span, c.usable)
		}
		ord := r.order()
		if len(ord) != c.usable || ord[0] != ip(c.firstUsableWant) || slices.Contains(ord, r.gw) {
			t.Errorf("%s: order has %d addresses starting %s", c.subnet, len(ord), addr4(ord[0]))
		}
	}
	for _, bad := range []string{"10.1.0.0/31", "10.1.0.0/32", "10.1.0.1/16", "2001:db8::/64", "nonsense"} {
		if _, err := newV4Range(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestContainerID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := containerID("seed", i)
		if len(id) != 64 {
			t.Fatalf("%q: length %d", id, len(id))
		}
		if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
			t.Fatalf("%q: not lower-case hex", id)
		}
		if seen[id] {
			t.Fatalf("%q twice", id)
		}
		seen[id] = true
	}
	if containerID("seed", 7) != containerID("seed", 7) || containerID("a", 1) == containerID("b", 1) {
		t.Fatal("containerID is not a deterministic function of seed and index")
	}
}

// The first allocations skip the gateway (subnet+1), start at .2 and run through .255 and the
// next .0 (both ordinary hosts inside a /16), the cursor on the last one.
func TestLayoutFilledOrder(t *testing.T) {
	r := mustRange(t, "10.1.0.0/16")
	p, err := layoutFilled(r, 300, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.owner) != 300 {
		t.Fatalf("%d allocations", len(p.owner))
	}
	for i := 0; i < 300; i++ {
		a := ip("10.1.0.2") + uint32(i)
		want := containerID("s", i) + "\r\neth0"
		if p.owner[a] != want {
			t.Fatalf("%s: owner %q, want %q", addr4(a), p.owner[a], want)
		}
	}
	if _, ok := p.owner[ip("10.1.0.1")]; ok {
		t.Fatal("the gateway was allocated")
	}
	for _, s := range []string{"10.1.0.255", "10.1.1.0"} {
		if _, ok := p.owner[ip(s)]; !ok {
			t.Errorf("%s not allocated", s)
		}
	}
	if !p.hasLast || addr4(p.last).String() != "10.1.1.45" {
		t.Fatalf("last %v %s, want 10.1.1.45", p.hasLast, addr4(p.last))
	}
	if a, skipped, ok := p.next(); !ok || addr4(a).String() != "10.1.1.46" || skipped != 0 {
		t.Fatalf("next %s %d %v", addr4(a), skipped, ok)
	}
}

func TestLayoutFull(t *testing.T) {
	r := mustRange(t, "10.9.0.0/24")
	p, err := layoutFilled(r, r.usable(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.owner) != 253 || addr4(p.last).String() != "10.9.0.254" {
		t.Fatalf("%d allocations, last %s", len(p.owner), addr4(p.last))
	}
	if a, skipped, ok := p.next(); ok || skipped != 253 {
		t.Fatalf("full range: next %s skipped %d ok %v", addr4(a), skipped, ok)
	}
	if _, err := layoutFilled(r, r.usable()+1, "f"); err == nil {
		t.Fatal("over-full layout accepted")
	}
	// The /16 of the benchmark: 65,533 usable.
	r16 := mustRange(t, "10.1.0.0/16")
	p16, err := layoutFilled(r16, r16.usable(), "f")
	if err != nil || len(p16.owner) != 65533 {
		t.Fatalf("full /16: %v, %d", err, len(p16.owner))
	}
	if _, _, ok := p16.next(); ok {
		t.Fatal("full /16 has room")
	}
}

// host-local's RangeIter: from last+1, wrapping from rangeEnd to rangeStart, skipping the
// gateway, trying last itself at the very end; from rangeStart when last is not in the range.
func TestPoolNext(t *testing.T) {
	r := mustRange(t, "10.3.0.0/29") // rangeStart .1 = gateway, usable .2-.6
	p := newPool(r)
	if a, _, _ := p.next(); addr4(a).String() != "10.3.0.2" {
		t.Fatalf("empty: %s", addr4(a))
	}
	for _, s := range []string{"10.3.0.2", "10.3.0.3", "10.3.0.4", "10.3.0.5", "10.3.0.6"} {
		p.reserve(ip(s), "c", "eth0")
	}
	p.release(ip("10.3.0.3"))
	if a, skipped, _ := p.next(); addr4(a).String() != "10.3.0.3" || skipped != 1 { // .6 -> wrap, gw, .2 taken, .3
		t.Fatalf("wrap: %s skipped %d", addr4(a), skipped)
	}
	p.release(ip("10.3.0.5"))
	p.last = ip("10.3.0.4")
	if a, _, _ := p.next(); addr4(a).String() != "10.3.0.5" {
		t.Fatalf("after last: %s", addr4(a))
	}
	p.reserve(ip("10.3.0.3"), "c", "eth0")
	p.last = ip("10.3.0.5") // the cursor on a free address: tried last
	if a, skipped, _ := p.next(); addr4(a).String() != "10.3.0.5" || skipped != 4 {
		t.Fatalf("cursor on the hole: %s skipped %d", addr4(a), skipped)
	}
	p.last = ip("10.4.0.9") // not in the range: start at rangeStart
	p.release(ip("10.3.0.2"))
	if a, skipped, _ := p.next(); addr4(a).String() != "10.3.0.2" || skipped != 0 {
		t.Fatalf("foreign cursor: %s skipped %d", addr4(a), skipped)
	}
}

func readStore(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = info.Mode().String() + " " + string(data)
	}
	return m
}

// writeTemp writes p as network net into a new data dir, which it returns.
func writeTemp(t *testing.T, net string, p *pool) string {
	t.Helper()
	data := t.TempDir()
	if err := writeStore(data, net, p); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWriteStore(t *testing.T) {
	r := mustRange(t, "10.1.0.0/16")
	p, err := layoutFilled(r, 10, "w")
	if err != nil {
		t.Fatal(err)
	}
	data := writeTemp(t, "net1", p)
	got := readStore(t, filepath.Join(data, "net1"))
	want := map[string]string{
		"last_reserved_ip.0": "-rw------- 10.1.0.11",
		"lock":               "-rwxr-x--- ",
	}
	for i := 0; i < 10; i++ {
		want[addr4(ip("10.1.0.2")+uint32(i)).String()] = "-rw------- " + containerID("w", i) + "\r\neth0"
	}
	if len(got) != len(want) {
		t.Errorf("files %v", slices.Sorted(maps.Keys(got)))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if st, err := os.Stat(filepath.Join(data, "net1")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("network dir: %v %v", st.Mode(), err)
	}
	if err := verifyStore(data, "net1", p); err != nil {
		t.Fatal(err)
	}

	// An empty store has no cursor file.
	if err := writeStore(data, "empty", newPool(r)); err != nil {
		t.Fatal(err)
	}
	if got := readStore(t, filepath.Join(data, "empty")); len(got) != 1 || got["lock"] == "" {
		t.Fatalf("empty store: %v", got)
	}

	// Stores written together are identical, and verifyStore catches differences.
	cp, cp2 := t.TempDir(), t.TempDir()
	if err := writeStores([]string{cp, cp2}, "net1", p); err != nil {
		t.Fatal(err)
	}
	a, b, c := readStore(t, filepath.Join(data, "net1")), readStore(t, filepath.Join(cp, "net1")), readStore(t, filepath.Join(cp2, "net1"))
	if !maps.Equal(a, b) || !maps.Equal(a, c) {
		t.Fatalf("stores differ:\n%v\n%v\n%v", a, b, c)
	}
	dir := filepath.Join(cp, "net1")
	if err := os.Mkdir(filepath.Join(dir, ".local-ipam"), 0o700); err != nil { // a tool's own subdirectory is fine
		t.Fatal(err)
	}
	if err := verifyStore(cp, "net1", p); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mod  func() error
	}{
		{"content", func() error { return os.WriteFile(filepath.Join(dir, "10.1.0.5"), []byte("x\r\neth0"), 0o600) }},
		{"extra", func() error { return os.WriteFile(filepath.Join(dir, "10.1.0.99"), []byte("x\r\neth0"), 0o600) }},
		{"missing", func() error { return os.Remove(filepath.Join(dir, "10.1.0.7")) }},
		{"cursor", func() error { return os.WriteFile(filepath.Join(dir, lastReservedFile), []byte("10.1.0.3"), 0o600) }},
		{"mode", func() error { return os.Chmod(filepath.Join(dir, "10.1.0.8"), 0o644) }},
	} {
		fresh := writeTemp(t, "net1", p)
		dir = filepath.Join(fresh, "net1")
		if err := c.mod(); err != nil {
			t.Fatal(err)
		}
		if err := verifyStore(fresh, "net1", p); err == nil {
			t.Errorf("%s: change not noticed", c.name)
		}
	}
}

// The /20 of the walk scenario: every usable address but one taken, the cursor just past the
// free one, so the walk tries every other address first, wrapping round the range.
func TestLayoutOneHole20(t *testing.T) {
	r := mustRange(t, "10.2.0.0/20")
	p, hole, last, err := layoutOneHole(r, "h")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.owner) != 4092 || r.usable() != 4093 {
		t.Fatalf("%d taken of %d", len(p.owner), r.usable())
	}
	if hole != last-1 || !p.hasLast || p.last != last {
		t.Fatalf("hole %s last %s cursor %s", addr4(hole), addr4(last), addr4(p.last))
	}
	if _, ok := p.owner[hole]; ok {
		t.Fatal("the hole is taken")
	}
	if _, ok := p.owner[r.gw]; ok {
		t.Fatal("the gateway is taken")
	}
	// Not at the ends, so the walk wraps.
	if last <= r.start+1 || last >= r.end {
		t.Fatalf("cursor %s at an end of the range", addr4(last))
	}
	a, skipped, ok := p.next()
	if !ok || a != hole || skipped != r.usable()-2 {
		t.Fatalf("next %s skipped %d, want %s after %d", addr4(a), skipped, addr4(hole), r.usable()-2)
	}
	// The benchmark's iteration: ADD takes the hole, DEL frees it; the next walk is one step
	// longer (it starts at X, not X+1) and finds the hole again.
	p.reserve(hole, "c", "eth0")
	p.release(hole)
	if a, skipped, _ := p.next(); a != hole || skipped != r.usable()-1 {
		t.Fatalf("second walk: %s skipped %d", addr4(a), skipped)
	}

	// On disk (a /24 to keep the test quick: creating files is slow on some machines).
	r24 := mustRange(t, "10.2.3.0/24")
	q, hole24, last24, err := layoutOneHole(r24, "h")
	if err != nil {
		t.Fatal(err)
	}
	data := writeTemp(t, "walk", q)
	files := readStore(t, filepath.Join(data, "walk"))
	if len(files) != r24.usable()-1+2 {
		t.Fatalf("%d files", len(files))
	}
	for _, name := range []string{addr4(hole24).String(), addr4(r24.gw).String()} {
		if _, ok := files[name]; ok {
			t.Fatalf("%s written", name)
		}
	}
	if files[lastReservedFile] != "-rw------- "+addr4(last24).String() || addr4(last24).String() != "10.2.3.128" {
		t.Fatalf("cursor file %q", files[lastReservedFile])
	}
	if err := verifyStore(data, "walk", q); err != nil {
		t.Fatal(err)
	}
}

func TestNetConf(t *testing.T) {
	prev := json.RawMessage(`{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/16","gateway":"10.1.0.1"}]}`)
	var c map[string]any
	if err := json.Unmarshal(netConf("n", "local-ipam", "10.1.0.0/16", "/d", prev), &c); err != nil {
		t.Fatal(err)
	}
	ipam := c["ipam"].(map[string]any)
	if c["cniVersion"] != "1.0.0" || c["name"] != "n" || c["type"] != "bridge" || ipam["type"] != "local-ipam" ||
		ipam["subnet"] != "10.1.0.0/16" || ipam["dataDir"] != "/d" || c["prevResult"] == nil {
		t.Fatalf("%v", c)
	}
	if strings.Contains(string(netConf("n", "x", "s", "d", nil)), "prevResult") {
		t.Fatal("prevResult without one")
	}
}

func TestStats(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 6, 7, 8, 9}
	if m := median(xs); m != 5.5 {
		t.Errorf("median %v", m)
	}
	if m := median(xs[:5]); m != 3 {
		t.Errorf("odd median %v", m)
	}
	if p := p90(xs); p != 9 {
		t.Errorf("p90 %v", p)
	}
	if p := p90([]float64{4}); p != 4 {
		t.Errorf("p90 of one %v", p)
	}
	if xs[0] != 5 {
		t.Error("input sorted in place")
	}
}

// The generator writes what host-local itself writes, byte for byte, and the model predicts
// every address host-local hands out, through ADDs, DELs and wrap-arounds.
func TestGeneratorMatchesHostLocal(t *testing.T) {
	hl := built(t, "host-local")
	ctx := context.Background()
	r := mustRange(t, "10.5.0.0/28") // usable .2-.14
	const subnet = "10.5.0.0/28"

	// call runs cmd for container id on e's network.
	call := func(e *netEnv, cmd, id string) (req, outcome) {
		t.Helper()
		rq := req{cmd: cmd, id: id, stdin: e.conf(nil)}
		o, err := hl.run(ctx, rq)
		if err != nil {
			t.Fatal(err)
		}
		return rq, o
	}
	// addAt is an ADD that must give container id the address want.
	addAt := func(e *netEnv, id string, want uint32) uint32 {
		t.Helper()
		rq, o := call(e, "ADD", id)
		a, err := expectAdd(hl, rq, o, r, want)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// addPredicted is an ADD that must get the address the model predicts, which it then
	// reserves.
	addPredicted := func(e *netEnv, id string) uint32 {
		t.Helper()
		want, _, _ := e.p.next()
		a := addAt(e, id, want)
		e.p.reserve(a, id, benchIfname)
		return a
	}

	// Five ADDs into an empty store == layoutFilled(5).
	real := t.TempDir()
	e := &netEnv{t: hl, net: "n", subnet: subnet, dataDir: real, p: newPool(r)}
	for i := 0; i < 5; i++ {
		addPredicted(e, containerID("g", i))
	}
	p, err := layoutFilled(r, 5, "g")
	if err != nil {
		t.Fatal(err)
	}
	gen := writeTemp(t, "n", p)
	if a, b := readStore(t, filepath.Join(real, "n")), readStore(t, filepath.Join(gen, "n")); !maps.Equal(a, b) {
		t.Fatalf("host-local wrote\n%q\nthe generator\n%q", a, b)
	}

	// Random ADDs and DELs: every address as predicted, the store as modelled.
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[string]uint32{}
	for i := 0; i < 40; i++ {
		if len(live) > 0 && (rng.IntN(2) == 0 || len(e.p.owner) == r.usable()) {
			ids := slices.Sorted(maps.Keys(live))
			id := ids[rng.IntN(len(ids))]
			rq, o := call(e, "DEL", id)
			if err := expectSilentOK(hl, rq, o); err != nil {
				t.Fatal(err)
			}
			e.p.release(live[id])
			delete(live, id)
			continue
		}
		id := containerID("r", i)
		live[id] = addPredicted(e, id)
	}
	if err := verifyStore(real, "n", e.p); err != nil {
		t.Fatal(err)
	}

	// A full range: ADD fails with a CNI error.
	full, err := layoutFilled(r, r.usable(), "full")
	if err != nil {
		t.Fatal(err)
	}
	fd := writeTemp(t, "n", full)
	fe := &netEnv{t: hl, net: "n", subnet: subnet, dataDir: fd}
	rq, o := call(fe, "ADD", containerID("x", 0))
	if _, err := expectFailure(hl, rq, o); err != nil {
		t.Fatal(err)
	}

	// The one-hole layout: host-local walks round to the hole.
	hp, hole, _, err := layoutOneHole(r, "h")
	if err != nil {
		t.Fatal(err)
	}
	hd := writeTemp(t, "n", hp)
	addAt(&netEnv{t: hl, net: "n", subnet: subnet, dataDir: hd}, containerID("y", 0), hole)
}
