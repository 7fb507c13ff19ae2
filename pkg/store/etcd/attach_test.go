package etcd

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// afterReserve is a Store that runs a hook once, right after its first successful
// reservation: what another machine does between an ADD's reservations.
type afterReserve struct {
	*Store
	hook func()
}

func (h *afterReserve) ReserveAt(a netip.Addr, o store.Owner, set int) (bool, error) {
	ok, err := h.Store.ReserveAt(a, o, set)
	if f := h.hook; ok && f != nil {
		h.hook = nil
		f()
	}
	return ok, err
}

// afterOwned is a Store that runs a hook once, right after its first Owned: what other
// machines do between a DEL's read of the attachment and its releases.
type afterOwned struct {
	*Store
	hook func()
}

func (h *afterOwned) Owned(o store.Owner) ([]netip.Addr, error) {
	got, err := h.Store.Owned(o)
	if f := h.hook; f != nil {
		h.hook = nil
		f()
	}
	return got, err
}

func dualStack(t *testing.T) ranges.Pool {
	t.Helper()
	var pool ranges.Pool
	for _, p := range []string{"10.60.0.0/24", "fd00:60::/120"} {
		r, err := ranges.New(netip.MustParsePrefix(p), netip.Addr{}, netip.Addr{}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		pool.Sets = append(pool.Sets, ranges.Set{r})
	}
	return pool
}

// TestAddRacingDel: an ADD (one machine) and a DEL (another) of the same attachment at
// once, the DEL falling between the ADD's reservations in its two range sets. Whatever
// the order, the ADD either fails and leaves nothing, or every address it returns stays
// reserved for the attachment until the DEL, which then frees them all: never an ADD
// that answers an address the store has freed (the next ADD would get it while the
// container uses it).
func TestAddRacingDel(t *testing.T) {
	pool := dualStack(t)
	o := own("c", "eth0")
	cli := etcdtest.Client(t, shared)
	held := func(network string) []netip.Addr {
		t.Helper()
		got, err := mustOpen(t, cfgFor(shared, "look"), network).Owned(o)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, netip.Addr.Compare)
		return got
	}

	t.Run("DEL between the reservations", func(t *testing.T) {
		// The DEL reads the attachment holding the IPv4 address, and frees it, before
		// the ADD reserves in the IPv6 set: the ADD fails with code 11 and holds nothing.
		network := newNetwork()
		var freed []netip.Addr
		add := &afterReserve{Store: mustOpen(t, onMachine("tn1", machineA), network)}
		add.hook = func() {
			var err error
			freed, _, err = allocator.Release(mustOpen(t, onMachine("tn2", machineB), network), o)
			if err != nil || len(freed) != 1 {
				t.Fatalf("the DEL freed %v, %v; want the IPv4 address", freed, err)
			}
		}
		got, err := allocator.Allocate(add, pool, o, nil)
		if cnierr.Code(err) != cnierr.TryAgainLater || !strings.Contains(err.Error(), "concurrent DEL") {
			t.Errorf("ADD = %v, %v; want code 11 saying a concurrent DEL intervened", got, err)
		}
		if h := held(network); len(h) != 0 {
			t.Errorf("the attachment holds %v after a failed ADD and a DEL", h)
		}
		checkConsistent(t, cli, add.Store)
	})

	t.Run("DEL reads between the reservations, frees after", func(t *testing.T) {
		// The DEL reads the attachment holding the IPv4 address; the ADD reserves in the
		// IPv6 set and succeeds; then the DEL frees: all of the attachment, not only what
		// it read.
		network := newNetwork()
		add := &afterReserve{Store: mustOpen(t, onMachine("tn1", machineA), network)}
		del := &afterOwned{Store: mustOpen(t, onMachine("tn2", machineB), network)}
		read, added, deleted := make(chan struct{}), make(chan struct{}), make(chan struct{})
		del.hook = func() {
			close(read)
			<-added
		}
		var freed []netip.Addr
		var delErr error
		add.hook = func() {
			go func() {
				defer close(deleted)
				freed, _, delErr = allocator.Release(del, o)
			}()
			<-read
		}
		got, err := allocator.Allocate(add, pool, o, nil)
		close(added)
		<-deleted
		if err != nil || len(got) != 2 {
			t.Fatalf("ADD = %v, %v", got, err)
		}
		slices.SortFunc(freed, netip.Addr.Compare)
		if want := []netip.Addr{got[0].Addr, got[1].Addr}; delErr != nil || !slices.Equal(freed, want) {
			t.Errorf("the DEL freed %v, %v; want all the ADD reserved, %v", freed, delErr, want)
		}
		if h := held(network); len(h) != 0 {
			t.Errorf("the attachment holds %v after the DEL", h)
		}
		checkConsistent(t, cli, add.Store)
	})
}
