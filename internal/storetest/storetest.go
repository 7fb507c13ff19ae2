// Package storetest is the conformance suite every store.Store backend passes: the
// allocator may rely on exactly what is checked here and nothing more.
package storetest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/store"
)

// Opener opens the same network's store afresh, as a new CNI call would; the suite closes
// each store it opens. Each call of the suite's subtests gets a fresh network from newNet.
type Opener func(t *testing.T) store.Store

// Run runs the suite. newNet returns an opener for a new, empty network.
func Run(t *testing.T, newNet func(t *testing.T) Opener) {
	t.Run("ReserveIsExclusive", func(t *testing.T) { testReserveExclusive(t, newNet(t)) })
	t.Run("ReleaseOnlyByOwner", func(t *testing.T) { testReleaseByOwner(t, newNet(t)) })
	t.Run("OwnedIsExact", func(t *testing.T) { testOwnedExact(t, newNet(t)) })
	t.Run("LastReserved", func(t *testing.T) { testLastReserved(t, newNet(t)) })
	t.Run("FirstFreeIPv4Model", func(t *testing.T) {
		testFirstFreeModel(t, newNet(t), netip.MustParseAddr("10.7.0.0"), 3*65536)
	})
	t.Run("FirstFreeIPv6Model", func(t *testing.T) {
		testFirstFreeModel(t, newNet(t), netip.MustParseAddr("fd00:1:2:3::"), 3*65536)
	})
	t.Run("FirstFreeEdges", func(t *testing.T) { testFirstFreeEdges(t, newNet(t)) })
	t.Run("SurvivesReopen", func(t *testing.T) { testReopen(t, newNet(t)) })
	t.Run("ReserveAt", func(t *testing.T) { testReserveAt(t, newNet(t)) })
}

// testReserveAt: a store.CursorReserver's ReserveAt is Reserve plus, on success only,
// SetLastReserved.
func testReserveAt(t *testing.T, open Opener) {
	s := open(t)
	cr, ok := s.(store.CursorReserver)
	if !ok {
		mustClose(t, s)
		t.Skip("this store has no ReserveAt; the allocator calls Reserve and SetLastReserved instead")
	}
	a, b := netip.MustParseAddr("10.3.0.7"), netip.MustParseAddr("10.3.0.9")
	if ok, err := cr.ReserveAt(a, alice, 2); err != nil || !ok {
		t.Fatalf("ReserveAt(%v) = %v, %v", a, ok, err)
	}
	if ok, err := cr.ReserveAt(a, bob, 2); err != nil || ok {
		t.Fatalf("ReserveAt of a taken address = %v, %v", ok, err)
	}
	if got, _ := s.LastReserved(2); got != a {
		t.Errorf("cursor after ReserveAt(%v) and a refused ReserveAt: %v", a, got)
	}
	mustClose(t, s)
	s = open(t)
	defer mustClose(t, s)
	if got, _ := s.LastReserved(2); got != a {
		t.Errorf("cursor after reopen: %v, want %v", got, a)
	}
	if h, ok, _ := s.Holder(a); !ok || h != alice {
		t.Errorf("holder of %v: %v %v", a, h, ok)
	}
	if ok, err := s.(store.CursorReserver).ReserveAt(b, bob, 2); err != nil || !ok {
		t.Fatalf("ReserveAt(%v) = %v, %v", b, ok, err)
	}
	if got, _ := s.LastReserved(2); got != b {
		t.Errorf("cursor after ReserveAt(%v): %v", b, got)
	}
}

func mustClose(t *testing.T, s store.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func reserve(t *testing.T, s store.Store, a string, o store.Owner) bool {
	t.Helper()
	ok, err := s.Reserve(netip.MustParseAddr(a), o)
	if err != nil {
		t.Fatalf("Reserve(%s): %v", a, err)
	}
	return ok
}

var (
	alice = store.Owner{ID: "alice", IfName: "eth0"}
	bob   = store.Owner{ID: "bob", IfName: "eth0"}
)

func testReserveExclusive(t *testing.T, open Opener) {
	s := open(t)
	if !reserve(t, s, "10.0.0.5", alice) {
		t.Fatal("first Reserve of a free address failed")
	}
	if reserve(t, s, "10.0.0.5", bob) {
		t.Fatal("second Reserve of the same address succeeded: duplicate")
	}
	if reserve(t, s, "10.0.0.5", alice) {
		t.Fatal("Reserve of an address already held by the same owner succeeded")
	}
	mustClose(t, s)
	s = open(t)
	defer mustClose(t, s)
	if reserve(t, s, "10.0.0.5", bob) {
		t.Fatal("Reserve after reopen succeeded on a taken address")
	}
}

func testReleaseByOwner(t *testing.T, open Opener) {
	s := open(t)
	defer mustClose(t, s)
	reserve(t, s, "10.0.0.9", alice)
	if ok, err := s.Release(netip.MustParseAddr("10.0.0.9"), bob); err != nil || ok {
		t.Fatalf("Release by another owner = %v, %v; want false", ok, err)
	}
	if ok, err := s.Release(netip.MustParseAddr("10.0.0.9"), alice.Legacy()); err != nil || ok {
		t.Fatalf("Release by the ID-only owner = %v, %v; want false", ok, err)
	}
	if o, ok, err := s.Holder(netip.MustParseAddr("10.0.0.9")); err != nil || !ok || o != alice {
		t.Fatalf("Holder = %v, %v, %v; want alice", o, ok, err)
	}
	if _, ok, err := s.Holder(netip.MustParseAddr("10.0.0.10")); err != nil || ok {
		t.Fatalf("Holder of a free address = %v, %v", ok, err)
	}
	if ok, err := s.Release(netip.MustParseAddr("10.0.0.9"), alice); err != nil || !ok {
		t.Fatalf("Release by the owner = %v, %v; want true", ok, err)
	}
	if ok, err := s.Release(netip.MustParseAddr("10.0.0.9"), alice); err != nil || ok {
		t.Fatalf("second Release = %v, %v; want false", ok, err)
	}
	if !reserve(t, s, "10.0.0.9", bob) {
		t.Fatal("released address cannot be reserved again")
	}
}

func testOwnedExact(t *testing.T, open Opener) {
	s := open(t)
	reserve(t, s, "10.0.0.3", alice)
	reserve(t, s, "fd00::3", alice)
	reserve(t, s, "10.0.0.4", alice.Legacy())
	reserve(t, s, "10.0.0.5", store.Owner{ID: "alice", IfName: "eth1"})
	reserve(t, s, "10.0.0.6", bob)
	mustClose(t, s)
	s = open(t)
	defer mustClose(t, s)
	for _, c := range []struct {
		o    store.Owner
		want []string
	}{
		{alice, []string{"10.0.0.3", "fd00::3"}},
		{alice.Legacy(), []string{"10.0.0.4"}},
		{store.Owner{ID: "alice", IfName: "eth1"}, []string{"10.0.0.5"}},
		{bob, []string{"10.0.0.6"}},
		{store.Owner{ID: "carol", IfName: "eth0"}, nil},
	} {
		got, err := s.Owned(c.o)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, netip.Addr.Compare)
		if fmt.Sprint(got) != fmt.Sprint(addrs(c.want)) {
			t.Errorf("Owned(%q) = %v, want %v", c.o.Key(), got, c.want)
		}
	}
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func testLastReserved(t *testing.T, open Opener) {
	s := open(t)
	if a, err := s.LastReserved(0); err != nil || a.IsValid() {
		t.Fatalf("LastReserved on a new store = %v, %v; want none", a, err)
	}
	// Lengths that grow and shrink: the cursor must read back exactly each time.
	for _, v := range []string{"10.0.0.9", "10.0.0.10", "10.0.0.255", "10.0.1.0", "10.0.0.2", "fd00::1:2"} {
		if err := s.SetLastReserved(0, netip.MustParseAddr(v)); err != nil {
			t.Fatal(err)
		}
		if a, _ := s.LastReserved(0); a.String() != v {
			t.Fatalf("LastReserved(0) = %v after setting %v", a, v)
		}
	}
	if err := s.SetLastReserved(1, netip.MustParseAddr("10.9.0.1")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = open(t)
	defer mustClose(t, s)
	if a, _ := s.LastReserved(0); a.String() != "fd00::1:2" {
		t.Errorf("LastReserved(0) after reopen = %v", a)
	}
	if a, _ := s.LastReserved(1); a.String() != "10.9.0.1" {
		t.Errorf("LastReserved(1) after reopen = %v", a)
	}
}

// testFirstFreeModel checks FirstFree against a plain set over random reservations and
// releases spanning several 65,536-address blocks, reopening now and then.
func testFirstFreeModel(t *testing.T, open Opener, base netip.Addr, span int) {
	rng := rand.New(rand.NewPCG(1, 2))
	at := func(off int) netip.Addr {
		a := base
		for i := 0; i < off%256; i++ {
			a = a.Next()
		}
		// coarse steps keep this cheap: off = 256*k + r
		for k := 0; k < off/256; k++ {
			for i := 0; i < 256; i++ {
				a = a.Next()
			}
		}
		return a
	}
	// Addresses clustered around block boundaries, where off-by-ones live.
	var pool []int
	for _, c := range []int{0, 65536 - 70, 65536, 2*65536 - 64, 2 * 65536, span - 70} {
		for i := 0; i < 70; i++ {
			pool = append(pool, c+i)
		}
	}
	addrOf := map[int]netip.Addr{}
	for _, off := range pool {
		addrOf[off] = at(off)
	}
	taken := map[int]bool{}
	s := open(t)
	for step := 0; step < 1500; step++ {
		off := pool[rng.IntN(len(pool))]
		if taken[off] {
			if ok, err := s.Release(addrOf[off], alice); err != nil || !ok {
				t.Fatalf("Release(%v) = %v, %v", addrOf[off], ok, err)
			}
			delete(taken, off)
		} else {
			if ok, err := s.Reserve(addrOf[off], alice); err != nil || !ok {
				t.Fatalf("Reserve(%v) = %v, %v", addrOf[off], ok, err)
			}
			taken[off] = true
		}
		if step%300 == 299 {
			mustClose(t, s)
			s = open(t)
		}
		if step%10 != 0 {
			continue
		}
		from := pool[rng.IntN(len(pool))]
		to := pool[rng.IntN(len(pool))]
		if from > to {
			from, to = to, from
		}
		want, found := -1, false
		for o := from; o <= to; o++ {
			if !taken[o] {
				want, found = o, true
				break
			}
		}
		got, ok, err := s.FirstFree(addrOf[from], at(to))
		if err != nil {
			t.Fatal(err)
		}
		if ok != found || (found && got != at(want)) {
			t.Fatalf("step %d: FirstFree(%v, %v) = %v, %v; want %v, %v", step, addrOf[from], at(to), got, ok, at(want), found)
		}
	}
	mustClose(t, s)
}

func testFirstFreeEdges(t *testing.T, open Opener) {
	s := open(t)
	defer mustClose(t, s)
	const top6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	// In order, each step's reservations kept for the next ones.
	for _, c := range []struct {
		reserve  []string
		from, to string
		want     string // "none": no free address
		what     string
	}{
		{[]string{"255.255.255.255", "255.255.255.254"}, "255.255.255.254", "255.255.255.255", "none", "top of IPv4"},
		{nil, "255.255.255.250", "255.255.255.255", "255.255.255.250", "below the top of IPv4"},
		{[]string{top6}, top6, top6, "none", "top of IPv6"},
		{nil, "10.0.0.9", "10.0.0.1", "none", "reversed bounds"},
		{nil, "0.0.0.0", "0.0.0.0", "0.0.0.0", "single free"},
		// IPv4 and IPv6 are separate spaces: ::a00:1 is not 10.0.0.1.
		{[]string{"10.0.0.1"}, "::a00:1", "::a00:1", "::a00:1", "IPv6 ::a00:1 taken by IPv4 10.0.0.1"},
		// A huge IPv6 stretch with nothing taken answers at once.
		{nil, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::", "empty huge range"},
	} {
		for _, a := range c.reserve {
			reserve(t, s, a, alice)
		}
		a, ok, err := s.FirstFree(netip.MustParseAddr(c.from), netip.MustParseAddr(c.to))
		if err != nil {
			t.Fatal(err)
		}
		got := "none"
		if ok {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("%s: FirstFree(%s, %s) = %s, want %s", c.what, c.from, c.to, got, c.want)
		}
	}
}

func testReopen(t *testing.T, open Opener) {
	s := open(t)
	for i := 1; i <= 50; i++ {
		reserve(t, s, fmt.Sprintf("10.1.0.%d", i), store.Owner{ID: fmt.Sprintf("c%d", i), IfName: "eth0"})
	}
	mustClose(t, s)
	s = open(t)
	defer mustClose(t, s)
	for i := 1; i <= 50; i++ {
		got, err := s.Owned(store.Owner{ID: fmt.Sprintf("c%d", i), IfName: "eth0"})
		if err != nil || len(got) != 1 || got[0].String() != fmt.Sprintf("10.1.0.%d", i) {
			t.Fatalf("c%d owns %v, %v", i, got, err)
		}
	}
	if a, ok, _ := s.FirstFree(netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.255")); !ok || a.String() != "10.1.0.51" {
		t.Fatalf("FirstFree after reopen = %v %v", a, ok)
	}
}
