package allocator_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	hl "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	hltesting "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/testing"

	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/internal/storetest/memory"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

func owner(id string) store.Owner { return store.Owner{ID: id, IfName: "eth0"} }

func pool(sets ...ranges.Set) ranges.Pool { return ranges.Pool{Sets: sets} }

func mustRange(t testing.TB, subnet, start, end, gw string) ranges.Range {
	t.Helper()
	return storetest.Range(t, subnet, start, end, gw)
}

func toHostLocal(set ranges.Set) hl.RangeSet {
	var out hl.RangeSet
	for _, r := range set {
		out = append(out, hl.Range{
			RangeStart: r.Start.AsSlice(),
			RangeEnd:   r.End.AsSlice(),
			Subnet:     hlNet(r.Subnet),
			Gateway:    r.Gateway.AsSlice(),
		})
	}
	return out
}

func hlNet(p netip.Prefix) (n struct {
	IP   net.IP
	Mask net.IPMask
}) {
	n.IP = p.Addr().AsSlice()
	n.Mask = net.CIDRMask(p.Bits(), p.Addr().BitLen())
	return n
}

// randomSet builds a small set of 1-3 ranges in one family, with random bounds and
// gateways, so that walks cross ranges, skip gateways and wrap.
func randomSet(t testing.TB, rng *rand.Rand, v6 bool) ranges.Set {
	n := 1 + rng.IntN(3)
	var rs []ranges.Range
	for i := 0; i < n; i++ {
		var subnet string
		var base netip.Addr
		if v6 {
			subnet = fmt.Sprintf("fd00:%x::/124", i+1)
			base = netip.MustParsePrefix(subnet).Addr()
		} else {
			subnet = fmt.Sprintf("10.%d.0.0/28", i+1)
			base = netip.MustParsePrefix(subnet).Addr()
		}
		at := func(k int) netip.Addr {
			a := base
			for j := 0; j < k; j++ {
				a = a.Next()
			}
			return a
		}
		lo := 1 + rng.IntN(5)
		hi := lo + rng.IntN(9)
		start, end, gw := "", "", ""
		if rng.IntN(2) == 0 {
			start = at(lo).String()
		}
		if rng.IntN(2) == 0 {
			end = at(hi).String()
		}
		if rng.IntN(2) == 0 {
			gw = at(1 + rng.IntN(13)).String()
		}
		rs = append(rs, mustRange(t, subnet, start, end, gw))
	}
	set, err := ranges.NewSet(rs)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestMatchesHostLocal runs host-local's own allocator (from the plugins module) and ours
// side by side over random sequences of ADD, ADD with a requested address, and DEL: every
// call must give the same address or fail in both.
func TestMatchesHostLocal(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		set := randomSet(t, rng, seed%3 == 0)
		hset := toHostLocal(set)
		if err := hset.Canonicalize(); err != nil {
			t.Fatalf("seed %d: host-local refuses our set %v: %v", seed, set, err)
		}
		fake := hltesting.NewFakeStore(map[string]string{}, map[string]net.IP{})
		mem := memory.New()
		live := []string{}
		for step := 0; step < 60; step++ {
			switch op := rng.IntN(10); {
			case op < 6 || len(live) == 0: // ADD
				id := fmt.Sprintf("c%d", step)
				var req netip.Addr
				if op == 5 {
					// a requested address somewhere in or near the set
					r := set[rng.IntN(len(set))]
					req = r.Start
					for k := rng.IntN(6); k > 0; k-- {
						req = req.Next()
					}
				}
				var reqs []netip.Addr
				var hreq net.IP
				if req.IsValid() {
					reqs, hreq = []netip.Addr{req}, req.AsSlice()
				}
				var (
					got     []allocator.Allocation
					ourErr  error
					hlConf  interface{ String() string }
					hlErr   error
					hlAddr  string
					ourAddr string
				)
				if req.IsValid() && !set.Contains(req) {
					// host-local's cmdAdd allocates dynamically from the set, then fails on the
					// unmet request and releases, keeping the moved cursor. Ours must too.
					if _, err := hl.NewIPAllocator(&hset, fake, 0).Get(id, "eth0", nil); err == nil {
						_ = fake.ReleaseByID(id, "eth0")
					}
					_, ourErr = allocator.Allocate(mem, pool(set), owner(id), reqs)
					if ourErr == nil {
						t.Fatalf("seed %d step %d: request %v outside the set succeeded", seed, step, req)
					}
					continue
				}
				ipc, err := hl.NewIPAllocator(&hset, fake, 0).Get(id, "eth0", hreq)
				hlErr = err
				if err == nil {
					hlConf = &ipc.Address
					hlAddr = hlConf.String()
				}
				got, ourErr = allocator.Allocate(mem, pool(set), owner(id), reqs)
				if ourErr == nil {
					ourAddr = got[0].Prefix.String()
					live = append(live, id)
				}
				if (hlErr == nil) != (ourErr == nil) || hlAddr != ourAddr {
					t.Fatalf("seed %d step %d set %v: ADD %s (req %v): host-local %q/%v, local-ipam %q/%v",
						seed, step, set, id, req, hlAddr, hlErr, ourAddr, ourErr)
				}
			default: // DEL
				i := rng.IntN(len(live))
				id := live[i]
				live = append(live[:i], live[i+1:]...)
				_ = fake.ReleaseByID(id, "eth0")
				if _, _, err := allocator.Release(mem, owner(id)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func TestGatewayAndCursor(t *testing.T) {
	set := ranges.Set{mustRange(t, "10.0.0.0/29", "", "", "")} // .1 gateway, .2-.6
	mem := memory.New()
	var got []string
	for i := 0; i < 5; i++ {
		a, err := allocator.Allocate(mem, pool(set), owner(fmt.Sprint(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a[0].Addr.String())
	}
	if fmt.Sprint(got) != "[10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6]" {
		t.Fatalf("sequence %v", got)
	}
	_, err := allocator.Allocate(mem, pool(set), owner("x"), nil)
	if cnierr.Code(err) != cnierr.NoFreeAddress {
		t.Fatalf("full range: %v", err)
	}
	// Release .3: it is the next one given, after the walk wraps.
	allocator.Release(mem, owner("1"))
	a, err := allocator.Allocate(mem, pool(set), owner("y"), nil)
	if err != nil || a[0].Addr.String() != "10.0.0.3" || a[0].Gateway.String() != "10.0.0.1" || a[0].Prefix.String() != "10.0.0.3/29" {
		t.Fatalf("after release: %v %v", a, err)
	}
}

func TestRollback(t *testing.T) {
	v4 := ranges.Set{mustRange(t, "10.0.0.0/29", "", "", "")}
	v6full := ranges.Set{mustRange(t, "fd00::/126", "", "", "")} // ::1 gateway, ::2-::3
	mem := memory.New()
	mem.Reserve(netip.MustParseAddr("fd00::2"), owner("a"))
	mem.Reserve(netip.MustParseAddr("fd00::3"), owner("b"))
	_, err := allocator.Allocate(mem, pool(v4, v6full), owner("c"), nil)
	if cnierr.Code(err) != cnierr.NoFreeAddress {
		t.Fatalf("want exhaustion of set 1, got %v", err)
	}
	if held, _ := mem.Owned(owner("c")); len(held) != 0 {
		t.Fatalf("rollback left %v reserved", held)
	}
	// host-local keeps the cursor it moved in set 0; so do we.
	if last, _ := mem.LastReserved(0); last.String() != "10.0.0.2" {
		t.Fatalf("cursor of set 0 = %v", last)
	}
}

func TestRequested(t *testing.T) {
	set := ranges.Set{mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.1")}
	mem := memory.New()
	req := func(id, a string) error {
		_, err := allocator.Allocate(mem, pool(set), owner(id), []netip.Addr{netip.MustParseAddr(a)})
		return err
	}
	if err := req("a", "10.0.0.15"); err != nil {
		t.Fatal(err)
	}
	if err := req("b", "10.0.0.15"); cnierr.Code(err) != cnierr.AddressInUse {
		t.Errorf("taken: %v", err)
	}
	if err := req("c", "10.0.0.30"); cnierr.Code(err) != cnierr.AddressNotAllowed {
		t.Errorf("outside: %v", err)
	}
	gwset := pool(ranges.Set{mustRange(t, "10.0.1.0/24", "", "", "10.0.1.7")})
	if _, err := allocator.Allocate(mem, gwset, owner("d"), []netip.Addr{netip.MustParseAddr("10.0.1.7")}); cnierr.Code(err) != cnierr.AddressNotAllowed {
		t.Errorf("gateway: %v", err)
	}
	// The cursor moved to .15 with the request; the refused request for .30 took .16
	// before failing and giving it back, keeping the cursor there (host-local does the
	// same): the next dynamic address is .17.
	a, err := allocator.Allocate(mem, pool(set), owner("e"), nil)
	if err != nil || a[0].Addr.String() != "10.0.0.17" {
		t.Errorf("after a requested address: %v %v", a, err)
	}
	// A requested address bypasses the duplicate check (host-local does too).
	if err := req("e", "10.0.0.18"); err != nil {
		t.Errorf("second, requested, address for e: %v", err)
	}
}

func TestDuplicateAndLegacy(t *testing.T) {
	set := ranges.Set{mustRange(t, "10.0.0.0/24", "", "", "")}
	other := ranges.Set{mustRange(t, "10.0.1.0/24", "", "", "")}
	mem := memory.New()
	if _, err := allocator.Allocate(mem, pool(set), owner("a"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := allocator.Allocate(mem, pool(set), owner("a"), nil); cnierr.Code(err) != cnierr.DuplicateAllocation {
		t.Fatalf("duplicate ADD: %v", err)
	}
	// Another ifname of the same container is another attachment.
	if _, err := allocator.Allocate(mem, pool(set), store.Owner{ID: "a", IfName: "net1"}, nil); err != nil {
		t.Fatalf("second interface: %v", err)
	}
	// Only addresses in this set count.
	if _, err := allocator.Allocate(mem, pool(other), owner("a"), nil); err != nil {
		t.Fatalf("other network's set: %v", err)
	}
	// A legacy (ID-only) record blocks ADD of its container on any ifname, and is what DEL
	// of that container releases when nothing else matches.
	mem.Reserve(netip.MustParseAddr("10.0.0.99"), store.Owner{ID: "old"})
	if _, err := allocator.Allocate(mem, pool(set), store.Owner{ID: "old", IfName: "eth5"}, nil); cnierr.Code(err) != cnierr.DuplicateAllocation {
		t.Fatalf("legacy record did not block: %v", err)
	}
	if held, _ := allocator.Held(mem, store.Owner{ID: "old", IfName: "eth0"}); fmt.Sprint(held) != "[10.0.0.99]" {
		t.Fatalf("Held = %v", held)
	}
	freed, by, err := allocator.Release(mem, store.Owner{ID: "old", IfName: "eth0"})
	if err != nil || fmt.Sprint(freed) != "[10.0.0.99]" || by != (store.Owner{ID: "old"}) {
		t.Fatalf("Release legacy = %v by %q, %v", freed, by.Key(), err)
	}
	// Exact records win: DEL of a/eth0 does not touch a/net1.
	freed, _, _ = allocator.Release(mem, owner("a"))
	if len(freed) != 2 {
		t.Fatalf("Release(a/eth0) freed %v", freed)
	}
	if held, _ := mem.Owned(store.Owner{ID: "a", IfName: "net1"}); len(held) != 1 {
		t.Fatalf("a/net1 lost its address")
	}
	// DEL of nothing succeeds.
	if freed, _, err := allocator.Release(mem, owner("nobody")); err != nil || len(freed) != 0 {
		t.Fatalf("Release(nobody) = %v %v", freed, err)
	}
}

func TestExclusions(t *testing.T) {
	set := ranges.Set{mustRange(t, "10.0.0.0/28", "", "", "")} // gw .1, .2-.14
	excl := ranges.NewExclusions([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.4/30"),  // .4-.7
		netip.MustParsePrefix("10.0.0.9/32"),  // .9
		netip.MustParsePrefix("10.0.0.12/30"), // .12-.15
	})
	p := ranges.Pool{Sets: []ranges.Set{set}, Exclude: excl}
	mem := memory.New()
	var got []string
	for i := 0; ; i++ {
		a, err := allocator.Allocate(mem, p, owner(fmt.Sprint(i)), nil)
		if err != nil {
			if cnierr.Code(err) != cnierr.NoFreeAddress {
				t.Fatal(err)
			}
			break
		}
		got = append(got, a[0].Addr.String())
	}
	if fmt.Sprint(got) != "[10.0.0.2 10.0.0.3 10.0.0.8 10.0.0.10 10.0.0.11]" {
		t.Fatalf("allocated %v", got)
	}
	if av, _ := allocator.Available(mem, p); av[0] {
		t.Error("Available says yes on a pool that is full but for exclusions")
	}
	_, err := allocator.Allocate(mem, p, owner("req"), []netip.Addr{netip.MustParseAddr("10.0.0.5")})
	if cnierr.Code(err) != cnierr.AddressNotAllowed {
		t.Errorf("requested excluded address: %v", err)
	}
	allocator.Release(mem, owner("0"))
	if av, _ := allocator.Available(mem, p); !av[0] {
		t.Error("Available says no with .2 free")
	}
}
