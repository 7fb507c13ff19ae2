package etcd

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// maxTries bounds the transactions one Reserve or Release makes when other machines keep
// changing the same page under it; past it (or past the call's deadline) the call fails
// with code 11. Every machine allocating at once walks from the same cursor into the same
// page: each round of conflicting transactions lets exactly one through, so a fixed small
// number of tries starves someone. backoff spreads the losers out instead.
const maxTries = 1000

// Reserve implements store.Store: one transaction creates the ip key and its index entries
// only if the ip key does not exist, and sets the address's bit in its page only if the
// page is the one read. It returns false only when the ip key exists; when the page
// changed (another machine reserved or released in it) it reads it again and retries.
//
// The same transaction compares the node's record with the one read (node.go), binding
// the node to this machine if it is bound to none; and, after an Owned of the owner (the
// allocator's duplicate check), that no reservation of the owner or of its ID-only form
// was made since: if one was, it returns store.ErrOwnerChanged and the allocator checks
// again. Without an Owned first (a requested address) there is no such check, as on disk.
//
// ReserveAt also compares that the reservations this Store made for the owner in other
// range sets (an ADD's, in its earlier sets) are still there: a DEL of the same
// attachment from another machine may have read it half-way and freed one. Then it
// fails with code 11, and the allocator rolls back what is left.
func (s *Store) Reserve(a netip.Addr, o store.Owner) (bool, error) {
	return s.reserve(a, o, -1)
}

// ReserveAt implements store.CursorReserver: Reserve, moving range set set's cursor to a
// in the same transaction (one durable write for the two).
func (s *Store) ReserveAt(a netip.Addr, o store.Owner, set int) (bool, error) {
	return s.reserve(a, o, set)
}

// reserve is Reserve, and moves cursor set to a with it when set >= 0.
func (s *Store) reserve(a netip.Addr, o store.Owner, set int) (bool, error) {
	a = normAddr(a)
	if !a.IsValid() {
		return false, badAddr(a)
	}
	if err := s.ensureBlocks(); err != nil {
		return false, err
	}
	key := o.Key()
	p, off := s.pageOf(a)
	ip, pk, bk := s.ipKey(a), s.pageKey(p), s.bootKey()
	ownerK, nodeK := s.ownerKey(key, a), s.nodeKey(s.cfg.Node, a)
	e := entry{Owner: key, Node: s.cfg.Node, Created: time.Now().UTC(), Token: strconv.FormatUint(rand.Uint64(), 16)}
	val, err := json.Marshal(e)
	if err != nil {
		return false, cnierr.IO(err, "cannot encode the reservation of %s", a)
	}
	// The owners whose reservations must not have changed since Owned read them.
	var guarded []string
	for _, k := range []string{key, o.Legacy().Key()} {
		if _, ok := s.guards[k]; ok && !slices.Contains(guarded, k) {
			guarded = append(guarded, k)
		}
	}
	unguard := func() {
		for _, k := range guarded {
			delete(s.guards, k)
		}
	}
	// This Store's reservations for the owner in other range sets, which must still be
	// there.
	var mine []int
	for other := range s.made[key] {
		if other != set {
			mine = append(mine, other)
		}
	}
	slices.Sort(mine)
	ambiguous := false
	for try := 0; try < maxTries; try++ {
		if err := s.backoff(try); err != nil {
			return false, err
		}
		m, err := s.ownNode()
		if err != nil {
			return false, err
		}
		if pg := s.pages[p]; s.blk.borrowing && pg != nil && !pg.known {
			delete(s.pages, p) // a takeover needs the block's holder: read it with the page
		}
		pg, nb, err := s.pageWith(p, off, true)
		if err != nil {
			return false, err
		}
		ops := []clientv3.Op{
			clientv3.OpPut(ip, key), clientv3.OpPut(ownerK, string(val)), clientv3.OpPut(nodeK, string(val)),
			clientv3.OpPut(pk, string(nb)),
		}
		bcmps, bops, change := s.blockOps(p, pg)
		ops = append(ops, bops...)
		if allOnes(nb, s.pbytes) {
			ops = append(ops, clientv3.OpPut(s.fullKey(p), ""))
		}
		if set >= 0 {
			ops = append(ops, clientv3.OpPut(s.lastKey(set), a.String()))
		}
		bind := s.node.rec.Machine == ""
		newNode := nodeRecord{Machine: m, Boot: s.node.rec.Boot}
		if bind {
			nv, err := json.Marshal(newNode)
			if err != nil {
				return false, cnierr.IO(err, "cannot encode %s", bk)
			}
			ops = append(ops, clientv3.OpPut(bk, string(nv)))
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(ip), "=", 0),
			clientv3.Compare(clientv3.ModRevision(pk), "=", pg.rev),
			clientv3.Compare(clientv3.ModRevision(bk), "=", s.node.rev),
		}
		cmps = append(cmps, bcmps...)
		pops := s.pageOps(p)
		els := append([]clientv3.Op{clientv3.OpGet(ip), clientv3.OpGet(ownerK), clientv3.OpGet(bk)}, pops...)
		first := len(els) // the guards' and mine's answers follow the page's
		for _, k := range guarded {
			op := s.ownerPrefix(k)
			rev := s.guards[k]
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op), "<", rev+1).WithRange(prefixEnd(op)))
			els = append(els, clientv3.OpGet(op, clientv3.WithRange(prefixEnd(op)), clientv3.WithKeysOnly(), clientv3.WithMinModRev(rev+1), clientv3.WithLimit(1)))
		}
		for _, other := range mine {
			h := s.made[key][other]
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.ipKey(h.addr)), "=", h.rev))
			els = append(els, clientv3.OpGet(s.ipKey(h.addr), clientv3.WithKeysOnly()))
		}
		cmps = append(cmps, s.layoutCmps()...)
		li := len(els)
		els = append(els, s.layoutRead()...)
		resp, retried, err := s.txn("reserve "+a.String(), cmps, ops, els)
		ambiguous = ambiguous || retried
		if err != nil {
			return false, err
		}
		if resp.Succeeded {
			s.prefetched = nil
			unguard()
			if allOnes(nb, s.pbytes) {
				s.markers = nil // a page just filled up
			}
			np := &page{bits: nb, rev: resp.Header.Revision, known: pg.known, owner: pg.owner, orev: pg.orev}
			if change != keepBlock {
				np.known, np.owner, np.orev = true, s.cfg.Node, resp.Header.Revision
				s.markClaimed(p)
			}
			s.pages[p] = np
			s.held[a] = holding{key: key, node: s.cfg.Node, rev: resp.Header.Revision}
			if set >= 0 {
				s.last[set] = a
				s.madeFor(key)[set] = holding{key: key, node: s.cfg.Node, rev: resp.Header.Revision, addr: a}
			}
			if bind {
				s.node = nodeState{rec: newNode, rev: resp.Header.Revision, readAt: resp.Header.Revision}
			}
			return true, nil
		}
		npg, err := s.setPageFrom(p, resp, 3)
		if err != nil {
			return false, err
		}
		s.setNode(firstKV(resp, 2), resp.Header.Revision)
		ipKV := firstKV(resp, 0)
		// An attempt that went through before a block size was recorded stands: it is
		// looked for before the layout is.
		if ipKV != nil && ambiguous {
			// Held. By us if an attempt whose answer was lost went through: its entry
			// carries this call's token.
			if own := firstKV(resp, 1); own != nil && own.CreateRevision == ipKV.CreateRevision {
				if got, ok := parseEntry(own.Value); ok && got.Token == e.Token {
					s.prefetched = nil
					unguard()
					s.held[a] = holding{key: key, node: s.cfg.Node, rev: ipKV.CreateRevision}
					if set >= 0 {
						s.last[set] = a // it was in the same transaction
						s.madeFor(key)[set] = holding{key: key, node: s.cfg.Node, rev: ipKV.CreateRevision, addr: a}
					}
					return true, nil
				}
			}
		}
		if err := s.layoutChanged(resp, li); err != nil {
			return false, err
		}
		for i, other := range mine {
			h := s.made[key][other]
			if kv := firstKV(resp, first+len(guarded)+i); kv == nil || kv.CreateRevision != h.rev {
				// Freed since this Store reserved it: by a DEL of the same attachment
				// that read it half-way through this ADD. The caller rolls back.
				s.prefetched = nil
				delete(s.made[key], other)
				return false, cnierr.New(cnierr.TryAgainLater, "",
					"%s, reserved by this ADD for container %s, interface %s, was released meanwhile: a concurrent DEL of the same attachment intervened; try again",
					h.addr, o.ID, o.IfName)
			}
		}
		for i := range guarded {
			if firstKV(resp, first+i) != nil {
				// Another call reserved for the owner since Owned: the duplicate check
				// is stale.
				s.prefetched = nil
				unguard()
				return false, store.ErrOwnerChanged
			}
		}
		if change == claimBlock && npg.owner != "" {
			// Claimed meanwhile: by another machine (try another block), or by a
			// concurrent call of this one (the block is ours: go on in it).
			s.markClaimed(p)
			if npg.owner != s.cfg.Node {
				// What this call read of the blocks is stale: read them again (a read
				// costs no raft proposal), and spread out from the other claimers.
				s.blk.scan, s.blk.lost = nil, true
				return false, store.ErrBlockClaimed
			}
		}
		if ipKV != nil {
			return false, nil
		}
		// The page or the node's record changed: again, with them as now read.
	}
	return false, cnierr.New(cnierr.TryAgainLater, "", "gave up reserving %s after %d tries: %s keeps changing under concurrent allocations", a, maxTries, pk)
}

// Release implements store.Store: one transaction deletes the reservation's keys and
// clears its bit, if the ip key is still the reservation of o that was read.
func (s *Store) Release(a netip.Addr, o store.Owner) (bool, error) {
	a = normAddr(a)
	if !a.IsValid() {
		return false, badAddr(a)
	}
	key := o.Key()
	if h, ok := s.held[a]; ok && h.key == key {
		if ok, err := s.release(a, h, false); err != nil || ok {
			return ok, err
		}
		// The reservation read earlier in this call is gone; o may hold a newer one.
	}
	h, ok, err := s.readHolding(a, key)
	if err != nil || !ok {
		return false, err
	}
	return s.release(a, h, false)
}

// readHolding reads a's reservation if it is key's: the ip key, key's index entry (which
// names the node) and the page, in one round trip.
func (s *Store) readHolding(a netip.Addr, key string) (holding, bool, error) {
	p, _ := s.pageOf(a)
	ip, ownerK := s.ipKey(a), s.ownerKey(key, a)
	var resp *clientv3.TxnResponse
	err := s.do("read "+ip, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(append([]clientv3.Op{clientv3.OpGet(ip), clientv3.OpGet(ownerK)}, s.pageOps(p)...)...).Commit()
		return err
	})
	if err != nil {
		return holding{}, false, err
	}
	if _, err := s.setPageFrom(p, resp, 2); err != nil {
		return holding{}, false, err
	}
	ipKV, own := firstKV(resp, 0), firstKV(resp, 1)
	if ipKV == nil || string(ipKV.Value) != key {
		return holding{}, false, nil
	}
	if own == nil || own.CreateRevision != ipKV.CreateRevision {
		return holding{}, false, corrupt(ip, "reserved for %q without its index entry %s", key, ownerK)
	}
	e, ok := parseEntry(own.Value)
	if !ok {
		return holding{}, false, corrupt(ownerK, "not an index entry of local-ipam")
	}
	return holding{key: key, node: e.Node, rev: ipKV.CreateRevision}, true, nil
}

// release deletes the reservation h of a: its ip key (only if its CreateRevision is still
// h.rev), index entries and bit.
// ambiguous: an earlier attempt's outcome is unknown.
//
// After an Owned of the owner (a DEL), the same transaction reads whether the owner has
// a reservation made since that read: an ADD of the same attachment, half-way through
// its range sets when the DEL read it, has reserved another. Then the owner is marked
// grown, and the allocator's DEL reads it again to free that one too (OwnedStale). The
// release itself is unconditional on it: a rollback must always free.
func (s *Store) release(a netip.Addr, h holding, ambiguous bool) (bool, error) {
	if err := s.ensureBlocks(); err != nil {
		return false, err
	}
	p, off := s.pageOf(a)
	ip, pk := s.ipKey(a), s.pageKey(p)
	guard, guarded := s.guards[h.key]
	grown := func() {
		if s.grown == nil {
			s.grown = map[string]bool{}
		}
		s.grown[h.key] = true
	}
	for try := 0; try < maxTries; try++ {
		if err := s.backoff(try); err != nil {
			return false, err
		}
		pg, nb, err := s.pageWith(p, off, false)
		if err != nil {
			return false, err
		}
		ops := []clientv3.Op{
			clientv3.OpDelete(ip), clientv3.OpDelete(s.ownerKey(h.key, a)), clientv3.OpDelete(s.nodeKey(h.node, a)),
		}
		empty := s.dropPage(nb)
		if empty {
			ops = append(ops, clientv3.OpDelete(pk)) // absent = all free: nothing left behind
		} else {
			ops = append(ops, clientv3.OpPut(pk, string(nb)))
		}
		if allOnes(pg.bits, s.pbytes) {
			ops = append(ops, clientv3.OpDelete(s.fullKey(p)))
		}
		if guarded {
			op := s.ownerPrefix(h.key)
			ops = append(ops, clientv3.OpGet(op, clientv3.WithRange(prefixEnd(op)), clientv3.WithKeysOnly(), clientv3.WithMinModRev(guard+1), clientv3.WithLimit(1)))
		}
		els := append([]clientv3.Op{clientv3.OpGet(ip)}, s.pageOps(p)...)
		li := len(els)
		els = append(els, s.layoutRead()...)
		resp, retried, err := s.txn("release "+a.String(), append([]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(ip), "=", h.rev),
			clientv3.Compare(clientv3.ModRevision(pk), "=", pg.rev),
		}, s.layoutCmps()...), ops, els)
		ambiguous = ambiguous || retried
		if err != nil {
			return false, err
		}
		if resp.Succeeded {
			s.prefetched = nil
			if allOnes(pg.bits, s.pbytes) {
				s.markers = nil // a full page has room again
			}
			s.pages[p] = s.pageAfter(pg, nb, resp.Header.Revision)
			delete(s.held, a)
			s.forget(h.key, a)
			if guarded && firstKV(resp, len(ops)-1) != nil {
				grown()
			}
			return true, nil
		}
		if _, err := s.setPageFrom(p, resp, 1); err != nil {
			return false, err
		}
		if ipKV := firstKV(resp, 0); ipKV == nil || ipKV.CreateRevision != h.rev {
			// Gone, whatever the layout now: by our own attempt whose answer was lost,
			// or by someone else.
			delete(s.held, a)
			s.forget(h.key, a)
			if ambiguous && guarded {
				grown() // what that attempt read is lost: read the owner again
			}
			return ambiguous, nil
		}
		if err := s.layoutChanged(resp, li); err != nil {
			return false, err
		}
	}
	return false, cnierr.New(cnierr.TryAgainLater, "", "gave up releasing %s after %d tries: %s keeps changing under concurrent allocations", a, maxTries, pk)
}

// madeFor returns this Store's reservations for owner key, by range set (Store.made).
func (s *Store) madeFor(key string) map[int]holding {
	if s.made == nil {
		s.made = map[string]map[int]holding{}
	}
	if s.made[key] == nil {
		s.made[key] = map[int]holding{}
	}
	return s.made[key]
}

// forget drops a from Store.made: released, it is no longer this Store's to check.
func (s *Store) forget(key string, a netip.Addr) {
	for set, h := range s.made[key] {
		if h.addr == a {
			delete(s.made[key], set)
		}
	}
}

// OwnedStale tells whether a Release since this Store's last Owned(o) found a reservation
// of o made after that read (see release): what Owned returned is not all o holds.
func (s *Store) OwnedStale(o store.Owner) bool { return s.grown[o.Key()] }

// backoff waits before the try-th transaction on a contended page: not before the first
// two, then a random time up to 50 µs × 2^try (at most 12.8 ms), within the call's
// deadline (past which the call fails with code 11 like any other etcd timeout).
func (s *Store) backoff(try int) error {
	if try < 2 {
		return nil
	}
	t := time.NewTimer(rand.N(50 * time.Microsecond << min(try, 8)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return mapErr(s.cfg, s.ctx.Err(), "waiting for a contended page")
	}
}
