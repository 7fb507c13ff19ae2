// Package allocator is local-ipam's allocation policy, host-local's to the address: one
// address per range set, round-robin from each set's cursor, gateways skipped, requested
// addresses honoured, and every partial ADD rolled back. It knows nothing of files; it
// works over a store.Store.
package allocator

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Allocation is one address given from one range set.
type Allocation struct {
	Set     int
	Addr    netip.Addr
	Prefix  netip.Prefix // the address with its subnet's prefix length
	Gateway netip.Addr
}

// Allocate reserves one address from each set of the pool for o. requested addresses are
// matched to the set that contains them. On any failure nothing this call reserved stays
// reserved.
func Allocate(st store.Store, pool ranges.Pool, o store.Owner, requested []netip.Addr) ([]Allocation, error) {
	var got []Allocation
	rollback := func() {
		for _, a := range got {
			_, _ = st.Release(a.Addr, o)
		}
	}
	pending := append([]netip.Addr(nil), requested...)
	for idx, set := range pool.Sets {
		var want netip.Addr
		for i, a := range pending {
			if set.Contains(a) {
				want = a
				pending = append(pending[:i], pending[i+1:]...)
				break
			}
		}
		var (
			a   Allocation
			err error
		)
		if want.IsValid() {
			a, err = reserveRequested(st, set, pool.Exclude, idx, o, want)
		} else {
			a, err = reserveNext(st, set, pool.Exclude, idx, o)
		}
		if err != nil {
			rollback()
			return nil, wrap(err, idx)
		}
		got = append(got, a)
	}
	if len(pending) > 0 {
		rollback()
		s := make([]string, len(pending))
		for i, a := range pending {
			s[i] = a.String()
		}
		return nil, cnierr.New(cnierr.AddressNotAllowed, "",
			"failed to allocate all requested IPs: %s (not in any range set)", strings.Join(s, " "))
	}
	return got, nil
}

// wrap prefixes a policy error with the range set, as host-local's message does.
func wrap(err error, idx int) error {
	var te *types.Error
	if errors.As(err, &te) && te.Code != cnierr.IOFailure {
		return &types.Error{Code: te.Code, Msg: fmt.Sprintf("failed to allocate for range %d: %s", idx, te.Msg), Details: te.Details}
	}
	return err
}

func alloc(set ranges.Set, idx int, a netip.Addr) Allocation {
	r := set[set.RangeFor(a)]
	return Allocation{Set: idx, Addr: a, Prefix: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway}
}

func reserveRequested(st store.Store, set ranges.Set, excl ranges.Exclusions, idx int, o store.Owner, want netip.Addr) (Allocation, error) {
	r := set[set.RangeFor(want)]
	if want == r.Gateway {
		return Allocation{}, cnierr.New(cnierr.AddressNotAllowed, "", "requested ip %s is subnet's gateway", want)
	}
	if _, ok := excl.Covering(want); ok {
		return Allocation{}, cnierr.New(cnierr.AddressNotAllowed, "", "requested ip %s is excluded", want)
	}
	// A requested address moves the cursor too (host-local does the same).
	ok, err := reserveAt(st, want, o, idx)
	if err != nil {
		return Allocation{}, err
	}
	if !ok {
		return Allocation{}, cnierr.New(cnierr.AddressInUse, "",
			"requested IP address %s is not available in range set %s", want, set)
	}
	return alloc(set, idx, want), nil
}

func reserveNext(st store.Store, set ranges.Set, excl ranges.Exclusions, idx int, o store.Owner) (Allocation, error) {
	// A store without a lock tells when another process reserved for o after the check
	// (store.ErrOwnerChanged): check again. Each time means one more reservation for o
	// somewhere, so a few suffice.
	for range 10 {
		a, err := reserveNextOnce(st, set, excl, idx, o)
		if !errors.Is(err, store.ErrOwnerChanged) {
			return a, err
		}
	}
	return Allocation{}, cnierr.New(cnierr.TryAgainLater, "", "the reservations of container %s, interface %s keep changing under concurrent ADDs", o.ID, o.IfName)
}

func reserveNextOnce(st store.Store, set ranges.Set, excl ranges.Exclusions, idx int, o store.Owner) (Allocation, error) {
	// A second ADD of the same attachment is a runtime bug; refuse it as host-local does,
	// counting ID-only records of the container as its own.
	for _, owner := range []store.Owner{o, o.Legacy()} {
		held, err := st.Owned(owner)
		if err != nil {
			return Allocation{}, err
		}
		for _, a := range held {
			if set.Contains(a) {
				return Allocation{}, cnierr.New(cnierr.DuplicateAllocation, "",
					"%s has been allocated to %s, duplicate allocation is not allowed", a, o.ID)
			}
		}
	}
	last, err := st.LastReserved(idx)
	if err != nil {
		return Allocation{}, err
	}
	var got netip.Addr
	take := func(a netip.Addr) (bool, error) {
		ok, err := reserveAt(st, a, o, idx)
		if ok {
			got = a
		}
		return ok, err
	}
	if bs, ok := st.(store.Blocks); ok {
		if err := fromBlocks(st, bs, set, excl, last, take); err != nil {
			return Allocation{}, err
		}
		if got.IsValid() {
			return alloc(set, idx, got), nil
		}
		bs.Borrow()
	}
	err = walkFree(st, set, excl, last, take)
	if err != nil {
		return Allocation{}, err
	}
	if !got.IsValid() {
		return Allocation{}, cnierr.New(cnierr.NoFreeAddress, "", "no IP addresses available in range set: %s", set)
	}
	return alloc(set, idx, got), nil
}

// reserveAt reserves a for o and moves set idx's cursor to it: in one step when the store
// can (store.CursorReserver), else Reserve then SetLastReserved, giving a back if the
// cursor cannot be written.
func reserveAt(st store.Store, a netip.Addr, o store.Owner, idx int) (bool, error) {
	if cr, ok := st.(store.CursorReserver); ok {
		return cr.ReserveAt(a, o, idx)
	}
	ok, err := st.Reserve(a, o)
	if err != nil || !ok {
		return ok, err
	}
	if err := st.SetLastReserved(idx, a); err != nil {
		_, _ = st.Release(a, o)
		return false, err
	}
	return true, nil
}

// walkFree offers take the free addresses of set in host-local's round-robin order from
// the cursor last, skipping each range's gateway and the exclusions, until take accepts
// one. The store's index answers each stretch without visiting taken addresses one by one.
func walkFree(st store.Store, set ranges.Set, excl ranges.Exclusions, last netip.Addr, take func(netip.Addr) (bool, error)) error {
	for _, seg := range set.Walk(last) {
		if done, err := walkSeg(st, set[seg.Range].Gateway, excl, seg.From, seg.To, take); done || err != nil {
			return err
		}
	}
	return nil
}

// walkSeg offers take the free addresses of [from, to] (within one range, whose gateway
// is gw) in order, skipping gw and the exclusions; done when take accepted one.
func walkSeg(st store.Store, gw netip.Addr, excl ranges.Exclusions, from, to netip.Addr, take func(netip.Addr) (bool, error)) (done bool, err error) {
	for {
		a, found, err := st.FirstFree(from, to)
		if err != nil || !found {
			return false, err
		}
		next := a
		if iv, ok := excl.Covering(a); ok {
			next = iv.To
		} else if a != gw {
			ok, err := take(a)
			if err != nil || ok {
				return ok, err
			}
		}
		if next.Compare(to) >= 0 {
			return false, nil
		}
		from = next.Next()
	}
}

// walkStretch is walkSeg over the part of stretch [from, to] in each range of set.
func walkStretch(st store.Store, set ranges.Set, excl ranges.Exclusions, from, to netip.Addr, take func(netip.Addr) (bool, error)) (bool, error) {
	for _, r := range set {
		if r.Start.Is4() != from.Is4() {
			continue
		}
		f, t := from, to
		if r.Start.Compare(f) > 0 {
			f = r.Start
		}
		if r.End.Compare(t) < 0 {
			t = r.End
		}
		if f.Compare(t) > 0 {
			continue
		}
		if done, err := walkSeg(st, r.Gateway, excl, f, t, take); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

// fromBlocks offers take the free addresses of the machine's own blocks (round robin
// from the cursor last), then those of a block it claims: in each range of the set, from
// the cursor (or the machine's own starting point) on, wrapping. A block another machine claimed first
// is passed over.
func fromBlocks(st store.Store, bs store.Blocks, set ranges.Set, excl ranges.Exclusions, last netip.Addr, take func(netip.Addr) (bool, error)) error {
	if len(set) == 0 {
		return nil
	}
	lo, hi := set[0].Start, set[0].End
	for _, r := range set[1:] {
		if r.Start.Compare(lo) < 0 {
			lo = r.Start
		}
		if r.End.Compare(hi) > 0 {
			hi = r.End
		}
	}
	own, err := bs.OwnBlocks(last, lo, hi)
	if err != nil {
		return err
	}
	for _, sr := range own {
		if done, err := walkStretch(st, set, excl, sr.From, sr.To, take); done || err != nil {
			return err
		}
	}
	for _, r := range set {
		// After the cursor, so that a machine goes on through the pool block after
		// block; a machine without one starts at a point of its own.
		start := bs.ClaimStart(r.Start, r.End)
		if r.Contains(last) && last != r.End {
			start = last.Next()
		}
		spans := [][2]netip.Addr{{start, r.End}}
		if start != r.Start {
			spans = append(spans, [2]netip.Addr{r.Start, start.Prev()})
		}
		for _, sp := range spans {
			from := sp[0]
			for {
				b, ok, err := bs.NextUnclaimed(from, sp[1])
				if err != nil || !ok {
					if err != nil {
						return err
					}
					break
				}
				done, err := walkSeg(st, r.Gateway, excl, b.From, b.To, take)
				if done || (err != nil && !errors.Is(err, store.ErrBlockClaimed)) {
					return err
				}
				if b.To.Compare(sp[1]) >= 0 {
					break
				}
				from = b.To.Next()
			}
		}
	}
	return nil
}

// Available reports, for each set of the pool, whether an ADD could get an address now.
func Available(st store.Store, pool ranges.Pool) ([]bool, error) {
	out := make([]bool, len(pool.Sets))
	for i, set := range pool.Sets {
		err := walkFree(st, set, pool.Exclude, netip.Addr{}, func(netip.Addr) (bool, error) {
			out[i] = true
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// staleOwned is a store without a lock (etcd) whose Release tells when the owner gained
// a reservation since the last Owned of it: an ADD of the same attachment on another
// machine, half-way through its range sets when Owned read it.
type staleOwned interface {
	OwnedStale(o store.Owner) bool
}

// Release frees everything reserved for o. Like host-local, when o holds nothing, records
// naming only o's container ID (written by old host-local versions) are released instead.
// It returns the addresses freed and the owner they were held by (o or its ID-only form).
func Release(st store.Store, o store.Owner) ([]netip.Addr, store.Owner, error) {
	so, _ := st.(staleOwned)
	for _, owner := range []store.Owner{o, o.Legacy()} {
		var freed []netip.Addr
		// Again while a concurrent ADD keeps reserving for the owner: each time means one
		// more of its range sets, so a few suffice.
		for try := 0; ; try++ {
			held, err := st.Owned(owner)
			if err != nil {
				return freed, owner, err
			}
			for _, a := range held {
				ok, err := st.Release(a, owner)
				if err != nil {
					return freed, owner, err
				}
				if ok {
					freed = append(freed, a)
				}
			}
			if len(held) == 0 || so == nil || !so.OwnedStale(owner) {
				break
			}
			if try == 10 {
				return freed, owner, cnierr.New(cnierr.TryAgainLater, "", "the reservations of container %s, interface %s keep changing under a concurrent ADD", owner.ID, owner.IfName)
			}
		}
		if len(freed) > 0 {
			return freed, owner, nil
		}
	}
	return nil, o, nil
}

// Held returns what o holds: its own reservations and those of ID-only records of its
// container (host-local counts both as the container's).
func Held(st store.Store, o store.Owner) ([]netip.Addr, error) {
	own, err := st.Owned(o)
	if err != nil {
		return nil, err
	}
	legacy, err := st.Owned(o.Legacy())
	if err != nil {
		return nil, err
	}
	return append(own, legacy...), nil
}
