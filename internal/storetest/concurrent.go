package storetest

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// ConcurrentOpener opens one network's store afresh, as one CNI call would. It is called
// from many goroutines at once, each store used by one goroutine and closed by it; it must
// not call t.Fatal (it is not on the test's goroutine).
type ConcurrentOpener func() (store.Store, error)

// ConcurrentSubnet is the pool RunConcurrent allocates from: 61 addresses, .2 to .62
// (.1 is the gateway).
const ConcurrentSubnet = "10.77.0.0/26"

// RunConcurrent is the conformance check of a store that several processes (or machines)
// use at once without a lock of the caller's: workers goroutines, each opening its own
// store for every call, allocate with the allocator's policy until the pool is exhausted.
// Every address must be handed out exactly once and exhaustion reported only when the
// pool is full; after every attachment is released (concurrently too) the pool must be
// wholly free, and a second round must hand it all out again. The network must be empty.
func RunConcurrent(t *testing.T, open ConcurrentOpener, workers int) {
	r, err := ranges.New(netip.MustParsePrefix(ConcurrentSubnet), netip.Addr{}, netip.Addr{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	pool := ranges.Pool{Sets: []ranges.Set{{r}}}
	var all []netip.Addr
	for a := r.Start; a.Compare(r.End) <= 0; a = a.Next() {
		if a != r.Gateway {
			all = append(all, a)
		}
	}
	for round := 0; round < 2; round++ {
		got := allocateAll(t, open, pool, workers, round)
		if t.Failed() {
			return
		}
		seen := map[netip.Addr]store.Owner{}
		for o, a := range got {
			if prev, dup := seen[a]; dup {
				t.Errorf("round %d: %s handed out twice, to %q and %q", round, a, prev.Key(), o.Key())
			}
			seen[a] = o
		}
		if len(seen) != len(all) {
			t.Errorf("round %d: %d distinct addresses handed out, the pool has %d", round, len(seen), len(all))
		}
		for _, a := range all {
			if _, ok := seen[a]; !ok {
				t.Errorf("round %d: %s never handed out", round, a)
			}
		}
		checkStore(t, open, func(s store.Store) error {
			for a, o := range seen {
				if h, ok, err := s.Holder(a); err != nil || !ok || h != o {
					return fmt.Errorf("round %d: Holder(%s) = %q, %v, %v; want %q", round, a, h.Key(), ok, err, o.Key())
				}
			}
			return nil
		})
		releaseAll(t, open, got, workers)
		checkStore(t, open, func(s store.Store) error {
			for _, a := range all {
				if h, ok, err := s.Holder(a); err != nil || ok {
					return fmt.Errorf("round %d: after releasing everything, Holder(%s) = %q, %v, %v", round, a, h.Key(), ok, err)
				}
			}
			if a, ok, err := s.FirstFree(all[0], all[len(all)-1]); err != nil || !ok || a != all[0] {
				return fmt.Errorf("round %d: after releasing everything, FirstFree = %v, %v, %v; want %v", round, a, ok, err, all[0])
			}
			for o := range got {
				if held, err := s.Owned(o); err != nil || len(held) != 0 {
					return fmt.Errorf("round %d: after release, Owned(%q) = %v, %v", round, o.Key(), held, err)
				}
			}
			return nil
		})
		if t.Failed() {
			return
		}
	}
}

func checkStore(t *testing.T, open ConcurrentOpener, f func(store.Store) error) {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := f(s); err != nil {
		t.Error(err)
	}
}

// allocateAll runs the workers until each has been told the pool is exhausted, and
// returns what each owner got.
func allocateAll(t *testing.T, open ConcurrentOpener, pool ranges.Pool, workers, round int) map[store.Owner]netip.Addr {
	t.Helper()
	var (
		mu  sync.Mutex
		got = map[store.Owner]netip.Addr{}
		wg  sync.WaitGroup
	)
	set := pool.Sets[0]
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				o := store.Owner{ID: fmt.Sprintf("r%d-w%d-c%d", round, w, i), IfName: "eth0"}
				s, err := open()
				if err != nil {
					t.Errorf("worker %d: open: %v", w, err)
					return
				}
				as, err := allocator.Allocate(s, pool, o, nil)
				if cerr := s.Close(); cerr != nil && err == nil {
					err = cerr
				}
				if cnierr.Code(err) == cnierr.NoFreeAddress {
					// Only addresses are taken in this phase: if the pool is full now, it
					// was when this worker was told so.
					s, err := open()
					if err != nil {
						t.Errorf("worker %d: open: %v", w, err)
						return
					}
					defer s.Close()
					if a, ok, err := s.FirstFree(set[0].Start, set[0].End); err != nil || (ok && a != set[0].Gateway) {
						t.Errorf("worker %d: told the pool is exhausted, yet FirstFree = %v, %v, %v", w, a, ok, err)
					} else if ok {
						// The gateway is never reserved: look past it.
						if a, ok, err := s.FirstFree(a.Next(), set[0].End); err != nil || ok {
							t.Errorf("worker %d: told the pool is exhausted, yet FirstFree = %v, %v, %v", w, a, ok, err)
						}
					}
					return
				}
				if err != nil {
					t.Errorf("worker %d: Allocate(%s): %v", w, o.ID, err)
					return
				}
				mu.Lock()
				got[o] = as[0].Addr
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

// releaseAll releases every owner's addresses, workers at a time, each with its own store.
func releaseAll(t *testing.T, open ConcurrentOpener, got map[store.Owner]netip.Addr, workers int) {
	t.Helper()
	owners := make(chan store.Owner, len(got))
	for o := range got {
		owners <- o
	}
	close(owners)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range owners {
				s, err := open()
				if err != nil {
					t.Errorf("open: %v", err)
					return
				}
				freed, _, err := allocator.Release(s, o)
				s.Close()
				if err != nil || len(freed) != 1 || freed[0] != got[o] {
					t.Errorf("Release(%q) = %v, %v; want [%v]", o.Key(), freed, err, got[o])
				}
			}
		}()
	}
	wg.Wait()
}
