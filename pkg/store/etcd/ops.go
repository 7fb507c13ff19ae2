package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

const (
	// markerBatch is how many full markers FirstFree reads per round trip: a run of more
	// full pages than this (over 4 million taken addresses) costs one more round trip.
	markerBatch = 1024
	// listBatch is the page size of every listing (Owned, GC, Records): never one giant
	// response.
	listBatch = 500
)

func firstKV(r *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	rr := r.Responses[i].GetResponseRange()
	if rr == nil || len(rr.Kvs) == 0 {
		return nil
	}
	return rr.Kvs[0]
}

func badAddr(a netip.Addr) error {
	return cnierr.New(cnierr.IOFailure, "", "invalid address %v", a)
}

// setPage caches page p as read in kv (nil: absent, all free).
func (s *Store) setPage(p pageID, kv *mvccpb.KeyValue) (*page, error) {
	pg := &page{}
	if kv != nil {
		if len(kv.Value) != s.pbytes {
			return nil, corrupt(string(kv.Key), "a bitmap page of %d bytes, want %d", len(kv.Value), s.pbytes)
		}
		pg.bits, pg.rev = kv.Value, kv.ModRevision
	}
	s.pages[p] = pg
	return pg, nil
}

func (s *Store) readPage(p pageID) (*page, error) {
	resp, err := s.readTxn("read "+s.pageKey(p), s.pageOps(p))
	if err != nil {
		return nil, err
	}
	return s.setPageFrom(p, resp, 0)
}

func (s *Store) cachedPage(p pageID) (*page, error) {
	if pg := s.pages[p]; pg != nil {
		return pg, nil
	}
	return s.readPage(p)
}

// pageWith returns page p (cached, or read now) and a copy of its bitmap with bit off set
// to v: what one transaction compares and writes.
func (s *Store) pageWith(p pageID, off int, v bool) (*page, []byte, error) {
	pg, err := s.cachedPage(p)
	if err != nil {
		return nil, nil, err
	}
	return pg, pg.with(off, v, s.pbytes), nil
}

// list calls fn for every key in [from, end), listBatch keys a round trip, all at the
// revision of the first one (a consistent snapshot). long: a listing of any length (a
// node's or a network's reservations), each round trip with a timeout of its own.
func (s *Store) list(what, from, end string, long bool, fn func(*mvccpb.KeyValue) error, opts ...clientv3.OpOption) error {
	var rev int64
	for {
		if long && rev != 0 {
			s.renew()
		}
		var resp *clientv3.GetResponse
		o := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listBatch)}, opts...)
		if rev != 0 {
			o = append(o, clientv3.WithRev(rev))
		}
		err := s.do(what, func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, o...)
			return err
		})
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Owned implements store.Store: one prefix range over the owner's index entries. The
// allocator asks for an attachment's ID-only owner right after the attachment's own
// (ADD, DEL and CHECK all do), so that one is read in the same round trip and kept until
// then, unless this Store changes a reservation in between. The revision read guards the
// owner's next reservation (see reserve).
func (s *Store) Owned(o store.Owner) ([]netip.Addr, error) {
	key := o.Key()
	if p := s.prefetched; p != nil && p.key == key {
		s.prefetched = nil
		return p.addrs, nil
	}
	s.prefetched = nil
	legacy := o.Legacy().Key()
	prefix, lprefix := s.ownerPrefix(key), s.ownerPrefix(legacy)
	var resp *clientv3.TxnResponse
	err := s.do("read the addresses of "+key, func(ctx context.Context) (err error) {
		ops := []clientv3.Op{clientv3.OpGet(prefix, clientv3.WithRange(prefixEnd(prefix)), clientv3.WithLimit(listBatch))}
		if legacy != key {
			ops = append(ops, clientv3.OpGet(lprefix, clientv3.WithRange(prefixEnd(lprefix)), clientv3.WithLimit(listBatch)))
		}
		resp, err = s.cli.Txn(ctx).Then(ops...).Commit()
		return err
	})
	if err != nil {
		return nil, err
	}
	s.guards[key] = resp.Header.Revision
	delete(s.grown, key)
	if legacy != key {
		s.guards[legacy] = resp.Header.Revision
		delete(s.grown, legacy)
	}
	out, err := s.ownedFrom(key, prefix, resp.Responses[0].GetResponseRange())
	if err != nil || legacy == key {
		return out, err
	}
	lout, err := s.ownedFrom(legacy, lprefix, resp.Responses[1].GetResponseRange())
	if err != nil {
		return nil, err
	}
	s.prefetched = &owned{key: legacy, addrs: lout}
	return out, nil
}

// owned is an owner's addresses, read ahead by Owned.
type owned struct {
	key   string
	addrs []netip.Addr
}

// ownedFrom reads one owner's index entries from a first page of them, and the rest with
// further round trips (an owner holding over listBatch addresses: never in practice).
func (s *Store) ownedFrom(key, prefix string, rr *etcdserverpb.RangeResponse) ([]netip.Addr, error) {
	var out []netip.Addr
	add := func(kv *mvccpb.KeyValue) error {
		a, ok := parseAddrName(string(kv.Key[len(prefix):]))
		e, eok := parseEntry(kv.Value)
		if !ok || !eok {
			return corrupt(string(kv.Key), "not an index entry of local-ipam")
		}
		if e.Owner != key {
			return nil // another owner's key with the same SHA-256: never in practice
		}
		out = append(out, a)
		s.held[a] = holding{key: key, node: e.Node, rev: kv.CreateRevision}
		return nil
	}
	for _, kv := range rr.Kvs {
		if err := add(kv); err != nil {
			return nil, err
		}
	}
	if rr.More && len(rr.Kvs) > 0 {
		from := string(rr.Kvs[len(rr.Kvs)-1].Key) + "\x00"
		if err := s.list("read the addresses of "+key, from, prefixEnd(prefix), false, add); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Holder implements store.Store: it reads the ip key itself.
func (s *Store) Holder(a netip.Addr) (store.Owner, bool, error) {
	a = normAddr(a)
	if !a.IsValid() {
		return store.Owner{}, false, badAddr(a)
	}
	var resp *clientv3.GetResponse
	err := s.do("read "+s.ipKey(a), func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.ipKey(a))
		return err
	})
	if err != nil || len(resp.Kvs) == 0 {
		return store.Owner{}, false, err
	}
	return store.ParseKey(string(resp.Kvs[0].Value)), true, nil
}

// markers is what one read of the full markers said: the pages in [from, to] that are
// full (sorted). FirstFree calls of one Store share it: the allocator's walk asks again
// past each gateway, exclusion or address lost to another machine.
type markers struct {
	from, to pageID
	full     []pageID
}

func (m *markers) covers(p pageID) bool {
	return m != nil && m.from.v6 == p.v6 && m.from.n.Cmp(p.n) <= 0 && p.n.Cmp(m.to.n) <= 0
}

// readMarkers reads the full markers from page cur to page pt (up to markerBatch of
// them) and page cur itself, in one round trip at one revision.
func (s *Store) readMarkers(cur, pt pageID) (*markers, error) {
	var resp *clientv3.TxnResponse
	err := s.do("find a free address in "+s.base, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(append(append([]clientv3.Op{
			clientv3.OpGet(s.fullKey(cur), clientv3.WithRange(s.fullKey(pt)+"\x00"), clientv3.WithKeysOnly(), clientv3.WithLimit(markerBatch)),
		}, s.pageOps(cur)...), s.legacyMarkerOps(cur, pt)...)...).Commit()
		return err
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.setPageFrom(cur, resp, 1); err != nil {
		return nil, err
	}
	mr := resp.Responses[0].GetResponseRange()
	m := &markers{from: cur, to: pt}
	for _, kv := range mr.Kvs {
		p, ok := parsePageName(string(kv.Key[len(s.base+s.fullPre):]), s.pb)
		if !ok || p.v6 != cur.v6 {
			return nil, corrupt(string(kv.Key), "not a full-page marker")
		}
		m.full = append(m.full, p)
	}
	if mr.More && len(m.full) > 0 {
		m.to = m.full[len(m.full)-1] // nothing known past the last marker read
	}
	if err := s.legacyMarkers(m, resp, 1+len(s.pageOps(cur))); err != nil {
		return nil, err
	}
	return m, nil
}

// FirstFree implements store.Store. It reads no ip key: the full markers skip every page
// that has no free address (one keys-only range get per markerBatch full pages), and of
// the pages it reads only the first and the last of the stretch can fail to yield an
// address. Pages and markers this call already read answer without a round trip; what
// they say may be stale, but Reserve, which decides, is not.
func (s *Store) FirstFree(from, to netip.Addr) (netip.Addr, bool, error) {
	from, to = normAddr(from), normAddr(to)
	if !from.IsValid() || !to.IsValid() || from.Is4() != to.Is4() || from.Compare(to) > 0 {
		return netip.Addr{}, false, nil
	}
	pt, offTo := s.pageOf(to)
	cur, curOff := s.pageOf(from)
	pageMask := s.pageMask()
	bounds := func(p pageID) (int, int) {
		lo, hi := 0, pageMask
		if p == cur {
			lo = curOff
		}
		if p == pt {
			hi = offTo
		}
		return lo, hi
	}
	if pg := s.pages[cur]; pg != nil {
		if off, ok := pg.firstClear(bounds(cur)); ok {
			return cur.addr(off), true, nil
		}
	}
	fresh := map[pageID]bool{}
	for {
		m := s.markers
		if !m.covers(cur) {
			var err error
			if m, err = s.readMarkers(cur, pt); err != nil {
				return netip.Addr{}, false, err
			}
			s.markers = m
			fresh[cur] = true
		}
		i, _ := slices.BinarySearchFunc(m.full, cur, func(a, b pageID) int { return a.n.Cmp(b.n) })
		p := cur
		for {
			if i < len(m.full) && m.full[i] == p {
				i++ // full: skip it unread
			} else {
				if s.pages[p] == nil && s.blk.on {
					q := p
					for n := 1; n < pageRun && q != pt && q != m.to; n++ {
						q = q.next()
					}
					if err := s.readPageRun(p, q, fresh); err != nil {
						return netip.Addr{}, false, err
					}
				}
				pg, err := s.cachedPage(p)
				if err != nil {
					return netip.Addr{}, false, err
				}
				lo, hi := bounds(p)
				if off, ok := pg.firstClear(lo, hi); ok {
					return p.addr(off), true, nil
				}
				if lo == 0 && hi == pageMask && !fresh[p] {
					// Not marked full yet no room in it: what this call read of it
					// earlier is stale. Read it again.
					if _, err := s.readPage(p); err != nil {
						return netip.Addr{}, false, err
					}
					fresh[p] = true
					continue
				}
			}
			if p == pt {
				return netip.Addr{}, false, nil
			}
			if p == m.to {
				break // past what the markers read cover: read on from the next page
			}
			p = p.next()
		}
		cur, curOff = m.to.next(), 0
		s.markers = nil
	}
}

// LastReserved implements store.Store. Open read every cursor already.
func (s *Store) LastReserved(set int) (netip.Addr, error) {
	if a, ok := s.last[set]; ok || !s.lastMore {
		return a, nil
	}
	var resp *clientv3.GetResponse
	err := s.do("read "+s.lastKey(set), func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.lastKey(set))
		return err
	})
	if err != nil || len(resp.Kvs) == 0 {
		return netip.Addr{}, err
	}
	// An unreadable cursor restarts the walk, as on disk.
	a, _ := ranges.ParseAddr(string(resp.Kvs[0].Value))
	s.last[set] = a
	return a, nil
}

// SetLastReserved implements store.Store: a plain put. Machines allocating at once may
// overwrite each other's cursor; it is a hint for round-robin, never a reservation.
func (s *Store) SetLastReserved(set int, a netip.Addr) error {
	a = normAddr(a)
	err := s.do(fmt.Sprintf("write %s", s.lastKey(set)), func(ctx context.Context) error {
		_, err := s.cli.Put(ctx, s.lastKey(set), a.String())
		return err
	})
	if err == nil {
		s.last[set] = a
	}
	return err
}

// pageRun: how many blocks FirstFree reads in one round trip when it must read them (a
// block holding an excluded address or the gateway is never marked full).
const pageRun = 64

// readPageRun reads the blocks from p to q (at most pageRun) that are not cached, with
// their holders, in one round trip, and marks them fresh. In a legacy pool a block
// without a bitmap key of its own is left to be read alone, with its old page.
func (s *Store) readPageRun(p, q pageID, fresh map[pageID]bool) error {
	bp, kp := s.base+s.pagePre, s.base+"block/"
	resp, err := s.readTxn("read the blocks of "+s.base, []clientv3.Op{
		clientv3.OpGet(bp+p.name(), clientv3.WithRange(bp+q.name()+"\x00")),
		clientv3.OpGet(kp+p.name(), clientv3.WithRange(kp+q.name()+"\x00")),
	})
	if err != nil {
		return err
	}
	got := [2]map[pageID]*mvccpb.KeyValue{{}, {}}
	for i, pre := range []string{bp, kp} {
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			x, ok := parsePageName(strings.TrimPrefix(string(kv.Key), pre), s.pb)
			if !ok || x.v6 != p.v6 {
				return corrupt(string(kv.Key), "not a block key")
			}
			got[i][x] = kv
		}
	}
	for x := p; ; x = x.next() {
		if s.pages[x] == nil && (!s.blk.legacy || got[0][x] != nil) {
			pg, err := s.setPage(x, got[0][x])
			if err != nil {
				return err
			}
			if err := s.setHolder(x, pg, got[1][x]); err != nil {
				return err
			}
			fresh[x] = true
		}
		if x == q {
			return nil
		}
	}
}
