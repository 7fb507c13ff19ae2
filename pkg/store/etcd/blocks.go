package etcd

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Node-affine blocks. With Config.BlockSize > 0 the pool is cut into aligned blocks of
// that many addresses, and a page (bitmap, full marker) is one block, so that machines
// allocating at once write different keys. Keys, besides those of keys.go:
//
//	blocksize                 {"size":N,"legacy":bool}: the block size, fixed at first use
//	bits/<block>              the block's bitmap (the page of keys.go, BlockSize addresses)
//	bfull/<block>             present iff the block is all ones
//	block/<block>             the node holding the block; absent = unclaimed
//	nblock/<node>/<block>     "" iff block/<block> names node: a node's blocks, in order
//	ncur/<node>/<set>         the node's round-robin cursor of range set <set>
//
// A machine allocates round robin inside its own blocks; when they are full it claims an
// unclaimed one (block/ created in the transaction that makes the reservation, compared
// absent), starting at a point hashed from its node name; when none is left, it takes
// any free address (other machines' blocks: the only contended transactions), taking
// over a block that is empty. A released address leaves its block with its machine.
// Exclusivity never depends on blocks: it is the ip key's compare-and-create.
//
// A pool written without blocks ("legacy") keeps its 4,096-address pages: a block whose
// bits key is absent reads its bits from its page there, which nothing writes any more.

const (
	minBlockBits = 3 // 8 addresses: one byte of bitmap
	// ownBatch: how many of its blocks after (and before) its cursor a machine reads.
	ownBatch = 16
	// scanBatch: how many claimed blocks one read looking for an unclaimed one skips.
	scanBatch = 1024
	// lostSpread: after a lost claim, a machine skips up to this many unclaimed blocks.
	lostSpread = 8
)

type blockState struct {
	on     bool
	init   bool // the blocksize record is known to be written
	legacy bool // the pool has pages of the layout without blocks
	// claimable: blocks NextUnclaimed found unclaimed; a reservation in one claims it.
	claimable map[pageID]bool
	borrowing bool // Borrow was called
	lost      bool // a claim of this call lost to another machine's
	scan      *scan
	err       error // the blocksize record is damaged (code 104)
}

// scan is what one read of the block keys said: the claimed blocks in [from, to].
type scan struct {
	from, to pageID
	claimed  []pageID // sorted
}

func (c *scan) covers(p pageID) bool {
	return c != nil && c.from.v6 == p.v6 && c.from.n.Cmp(p.n) <= 0 && p.n.Cmp(c.to.n) <= 0
}

func cmpPage(a, b pageID) int { return a.n.Cmp(b.n) }

type blockSizeRecord struct {
	Size   int  `json:"size"`
	Legacy bool `json:"legacy,omitempty"`
}

// validBlockSize: 0 (no blocks), or a power of two from 8 to a page of 4,096.
func validBlockSize(n int) bool {
	return n == 0 || (n >= 1<<minBlockBits && n <= 1<<maxBlockBits && n&(n-1) == 0)
}

// setGeometry sets the page size and key prefixes from Config.BlockSize.
func (s *Store) setGeometry() {
	s.pb, s.pagePre, s.fullPre, s.lastPre = pageBits, "page/", "full/", "last/"
	if s.cfg.BlockSize > 0 {
		s.blk.on = true
		s.blk.claimable = map[pageID]bool{}
		s.pb = bits.TrailingZeros(uint(s.cfg.BlockSize))
		s.pagePre, s.fullPre, s.lastPre = "bits/", "bfull/", "ncur/"+s.cfg.Node+"/"
	}
	s.pbytes = (1 << s.pb) / 8
}

func (s *Store) pageOf(a netip.Addr) (pageID, int) { return pageOf(a, s.pb) }
func (s *Store) pageMask() int                     { return 1<<s.pb - 1 }

func (s *Store) blockSizeKey() string         { return s.base + "blocksize" }
func (s *Store) blockKey(p pageID) string     { return s.base + "block/" + p.name() }
func (s *Store) nblockPrefix(n string) string { return s.base + "nblock/" + n + "/" }
func (s *Store) nblockKey(n string, p pageID) string {
	return s.nblockPrefix(n) + p.name()
}

// legacyPageKey is the page, in the layout without blocks, that holds block p.
func (s *Store) legacyPageKey(p pageID) string {
	lp, _ := pageOf(p.addr(0), pageBits)
	return s.base + "page/" + lp.name()
}

// checkBlockSize checks the pool's blocksize record (nil: none) against the config:
// every machine of a pool must use the same block size. pages: the pool has pages of the
// layout without blocks.
func (s *Store) checkBlockSize(kv *mvccpb.KeyValue, pages bool) error {
	if kv == nil {
		s.blk.legacy = s.blk.on && pages
		return nil
	}
	var rec blockSizeRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil || !validBlockSize(rec.Size) || rec.Size == 0 {
		// Damage: every write fails (ensureBlocks) naming it; reads go on.
		s.blk.err = corrupt(string(kv.Key), "not a block size record of local-ipam")
		return nil
	}
	if rec.Size != s.cfg.BlockSize {
		return cnierr.New(cnierr.InvalidConfig, "",
			"network %s in etcd is divided into blocks of %d addresses, but this config's store.blockSize is %d: every machine of a network must use the same blockSize",
			s.network, rec.Size, s.cfg.BlockSize)
	}
	s.blk.init, s.blk.legacy = true, rec.Legacy
	return nil
}

// ensureBlocks writes the blocksize record before the first write of a pool with blocks.
func (s *Store) ensureBlocks() error {
	if s.blk.err != nil {
		return s.blk.err
	}
	if !s.blk.on || s.blk.init {
		return nil
	}
	k, pp := s.blockSizeKey(), s.base+"page/"
	// Until the block size is recorded, calls without blocks may still write the old
	// pages: what this Store read of them may be stale.
	read := s.blk.legacy
	for {
		val, _ := json.Marshal(blockSizeRecord{Size: s.cfg.BlockSize, Legacy: s.blk.legacy})
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)}
		if !s.blk.legacy {
			// A call without blocks may have written the old layout since Open looked.
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pp), "=", 0).WithPrefix())
		}
		var resp *clientv3.TxnResponse
		err := s.do("write "+k, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(k, string(val))).
				Else(clientv3.OpGet(k), clientv3.OpGet(pp, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))).Commit()
			return err
		})
		if err != nil {
			return err
		}
		if resp.Succeeded {
			break
		}
		if kv := firstKV(resp, 0); kv != nil {
			if err := s.checkBlockSize(kv, false); err != nil {
				return err
			}
			if s.blk.err != nil {
				return s.blk.err
			}
			break
		}
		// Old pages exist: what was read as not legacy is read again (below).
		s.blk.legacy, read = true, true
	}
	if read || s.blk.legacy {
		// Read again, now that nothing writes the old pages any more: a bitmap written
		// from a stale copy would keep an address released since taken for ever.
		s.dropCache()
	}
	s.blk.init = true
	return nil
}

// dropCache forgets what this Store read of the pages and blocks.
func (s *Store) dropCache() {
	s.pages, s.blk.scan, s.markers = map[pageID]*page{}, nil, nil
}

// layoutCmps: a write without blocks holds only while no call with blocks has recorded a
// block size. After that the old pages are read only where no block bitmap was written
// since: a bit changed there alone would be a release lost or a reservation unseen.
func (s *Store) layoutCmps() []clientv3.Cmp {
	if s.blk.on {
		return nil
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.blockSizeKey()), "=", 0)}
}

// layoutRead reads, with a write's layoutCmps, the block size record.
func (s *Store) layoutRead() []clientv3.Op {
	if s.blk.on {
		return nil
	}
	return []clientv3.Op{clientv3.OpGet(s.blockSizeKey())}
}

// layoutChanged: after a failed write with layoutCmps, whose answer i is layoutRead's,
// the config's error (code 7) when a block size was recorded meanwhile.
func (s *Store) layoutChanged(resp *clientv3.TxnResponse, i int) error {
	if s.blk.on {
		return nil
	}
	kv := firstKV(resp, i)
	if kv == nil {
		return nil
	}
	if err := s.checkBlockSize(kv, false); err != nil {
		return err
	}
	if s.blk.err != nil {
		return s.blk.err
	}
	return cnierr.New(cnierr.InvalidConfig, "", "network %s in etcd is divided into blocks, but this config's store.blockSize is 0", s.network)
}

// pageOps reads page p: its bitmap, with blocks its holder, and in a legacy pool the
// page it had without blocks. setPageFrom takes the answers.
func (s *Store) pageOps(p pageID) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpGet(s.pageKey(p))}
	if s.blk.on {
		ops = append(ops, clientv3.OpGet(s.blockKey(p)))
	}
	if s.blk.legacy {
		ops = append(ops, clientv3.OpGet(s.legacyPageKey(p)))
	}
	return ops
}

// setPageFrom caches page p from the answers to pageOps(p), from the i-th on.
func (s *Store) setPageFrom(p pageID, resp *clientv3.TxnResponse, i int) (*page, error) {
	kv := firstKV(resp, i)
	pg, err := s.setPage(p, kv)
	if err != nil || !s.blk.on {
		return pg, err
	}
	if err := s.setHolder(p, pg, firstKV(resp, i+1)); err != nil {
		return nil, err
	}
	if s.blk.legacy && kv == nil {
		if old := firstKV(resp, i+2); old != nil {
			if len(old.Value) != pageBytes {
				delete(s.pages, p)
				return nil, corrupt(string(old.Key), "a bitmap page of %d bytes, want %d", len(old.Value), pageBytes)
			}
			_, off := pageOf(p.addr(0), pageBits)
			b := append([]byte(nil), old.Value[off/8:off/8+s.pbytes]...)
			if !allZero(b) {
				pg.bits = b
			}
		}
	}
	return pg, nil
}

// setHolder records in page p (pg) the holder its block key (own; nil: absent) names.
func (s *Store) setHolder(p pageID, pg *page, own *mvccpb.KeyValue) error {
	pg.known = true
	if own != nil {
		if !validNode(string(own.Value)) {
			// Every claim writes a node's name: anything else is damage, which no
			// compare of a claim or takeover could ever get past.
			delete(s.pages, p)
			return corrupt(string(own.Key), "not the node name of a block holder")
		}
		pg.owner, pg.orev = string(own.Value), own.ModRevision
	}
	return nil
}

// readTxn runs one transaction of reads.
func (s *Store) readTxn(what string, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	var resp *clientv3.TxnResponse
	err := s.do(what, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(ops...).Commit()
		return err
	})
	return resp, err
}

// readPages reads the pages ps (not cached) in one round trip.
func (s *Store) readPages(ps []pageID) error {
	if len(ps) == 0 {
		return nil
	}
	var ops []clientv3.Op
	for _, p := range ps {
		ops = append(ops, s.pageOps(p)...)
	}
	resp, err := s.readTxn("read the pages of "+s.base, ops)
	if err != nil {
		return err
	}
	n := len(ops) / len(ps)
	for i, p := range ps {
		if _, err := s.setPageFrom(p, resp, i*n); err != nil {
			return err
		}
	}
	return nil
}

// blockOps is what a reservation in page p (as cached: pg) does to the block: claim it
// (NextUnclaimed found it unclaimed), take it over (borrowing, and it is another
// machine's and empty), or nothing. kind says which.
func (s *Store) blockOps(p pageID, pg *page) (cmps []clientv3.Cmp, ops []clientv3.Op, kind blockChange) {
	if !s.blk.on {
		return nil, nil, keepBlock
	}
	bk, me := s.blockKey(p), s.cfg.Node
	switch {
	case s.blk.claimable[p]:
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(bk), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(bk, me), clientv3.OpPut(s.nblockKey(me, p), "")}, claimBlock
	case s.blk.borrowing && pg.known && pg.owner == "":
		// An unclaimed block the search passed over: claimed all the same.
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(bk), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(bk, me), clientv3.OpPut(s.nblockKey(me, p), "")}, claimOnTheWay
	case s.blk.borrowing && pg.known && pg.owner != "" && pg.owner != me && allZero(pg.bits):
		return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(bk), "=", pg.orev)},
			[]clientv3.Op{clientv3.OpPut(bk, me), clientv3.OpDelete(s.nblockKey(pg.owner, p)), clientv3.OpPut(s.nblockKey(me, p), "")}, takeBlock
	}
	return nil, nil, keepBlock
}

type blockChange int

const (
	keepBlock     blockChange = iota
	claimBlock                // one NextUnclaimed offered: lost to another, ErrBlockClaimed
	claimOnTheWay             // borrowing: lost to another, the reservation is tried again
	takeBlock
)

// dropPage: a page whose bitmap becomes b is deleted (absent = all free), unless the pool
// is legacy, where absent means "as in the old page".
func (s *Store) dropPage(b []byte) bool { return allZero(b) && !s.blk.legacy }

// pageAfter is page pg as a transaction at rev left it with bitmap b.
func (s *Store) pageAfter(pg *page, b []byte, rev int64) *page {
	np := &page{bits: b, rev: rev, known: pg.known, owner: pg.owner, orev: pg.orev}
	if s.dropPage(b) {
		np.bits, np.rev = nil, 0
	}
	return np
}

// markClaimed records that p is held by some machine now.
func (s *Store) markClaimed(p pageID) {
	delete(s.blk.claimable, p)
	if c := s.blk.scan; c.covers(p) {
		if i, found := slices.BinarySearchFunc(c.claimed, p, cmpPage); !found {
			c.claimed = slices.Insert(c.claimed, i, p)
		}
	}
}

// OwnBlocks implements store.Blocks. It reads the node's blocks after and before the
// cursor's (up to ownBatch each way) with the cursor's page in one round trip, and, when
// the cursor's block has no free address after the cursor, the pages of the others in
// one more; blocks seen full are left out.
func (s *Store) OwnBlocks(last, from, to netip.Addr) ([]store.Stretch, error) {
	from, to, last = normAddr(from), normAddr(to), normAddr(last)
	if !s.blk.on || !from.IsValid() || !to.IsValid() || from.Is4() != to.Is4() || from.Compare(to) > 0 {
		return nil, nil
	}
	fp, _ := s.pageOf(from)
	tp, _ := s.pageOf(to)
	hasC := last.IsValid() && last.Is4() == from.Is4() && from.Compare(last) <= 0 && last.Compare(to) <= 0
	start := fp
	var cb pageID
	cOff := 0
	if hasC {
		cb, cOff = s.pageOf(last)
		start = cb
	}
	pre := s.nblockPrefix(s.cfg.Node)
	ops := []clientv3.Op{clientv3.OpGet(pre+start.name(), clientv3.WithRange(pre+tp.name()+"\x00"), clientv3.WithKeysOnly(), clientv3.WithLimit(ownBatch))}
	if hasC {
		ops = append(ops, clientv3.OpGet(pre+fp.name(), clientv3.WithRange(pre+start.name()), clientv3.WithKeysOnly(), clientv3.WithLimit(ownBatch)))
		if s.pages[cb] == nil {
			ops = append(ops, s.pageOps(cb)...)
		}
	}
	resp, err := s.readTxn("read the blocks of node "+s.cfg.Node, ops)
	if err != nil {
		return nil, err
	}
	var order []pageID
	cOwned := false
	for i := 0; i < len(ops) && i < 2; i++ {
		rr := resp.Responses[i].GetResponseRange()
		if rr == nil {
			continue
		}
		for _, kv := range rr.Kvs {
			p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), pre), s.pb)
			if !ok || p.v6 != fp.v6 {
				return nil, corrupt(string(kv.Key), "not a block index entry")
			}
			if hasC && p == cb {
				cOwned = true
				continue
			}
			order = append(order, p)
		}
	}
	if hasC && s.pages[cb] == nil {
		if _, err := s.setPageFrom(cb, resp, 2); err != nil {
			return nil, err
		}
	}
	mask := s.pageMask()
	var out []store.Stretch
	if cOwned && cOff < mask {
		if _, ok := s.pages[cb].firstClear(cOff+1, mask); ok {
			out = append(out, store.Stretch{From: last.Next(), To: cb.last()})
		}
	}
	if len(out) == 0 {
		var missing []pageID
		for _, p := range order {
			if s.pages[p] == nil {
				missing = append(missing, p)
			}
		}
		if err := s.readPages(missing); err != nil {
			return nil, err
		}
	}
	for _, p := range order {
		if pg := s.pages[p]; pg != nil {
			if _, ok := pg.firstClear(0, mask); !ok {
				continue
			}
		}
		out = append(out, store.Stretch{From: p.addr(0), To: p.last()})
	}
	if cOwned {
		if _, ok := s.pages[cb].firstClear(0, cOff); ok {
			out = append(out, store.Stretch{From: cb.addr(0), To: last})
		}
	}
	for i := range out {
		out[i] = store.Stretch{From: maxAddr(out[i].From, from), To: minAddr(out[i].To, to)}
	}
	return out, nil
}

func maxAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) > 0 {
		return a
	}
	return b
}

func minAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) < 0 {
		return a
	}
	return b
}

// ClaimStart implements store.Blocks: the start of a block in [from, to] chosen by a
// hash of the node name, or from itself when [from, to] is one block.
func (s *Store) ClaimStart(from, to netip.Addr) netip.Addr {
	from, to = normAddr(from), normAddr(to)
	if !s.blk.on || !from.IsValid() || !to.IsValid() || from.Compare(to) >= 0 {
		return from
	}
	fp, _ := s.pageOf(from)
	tp, _ := s.pageOf(to)
	span := tp.n.Sub(fp.n)
	if span.Hi == 0 && span.Lo == 0 {
		return from
	}
	h := fnv.New64a()
	h.Write([]byte(s.cfg.Node))
	n := h.Sum64()
	if span.Hi == 0 && span.Lo < ^uint64(0) {
		n %= span.Lo + 1
	}
	q, overflow := fp.n.Add64(n)
	if overflow || q.Cmp(tp.n) > 0 {
		return from
	}
	return maxAddr(pageID{v6: fp.v6, bits: fp.bits, n: q}.addr(0), from)
}

// NextUnclaimed implements store.Blocks: one keys-only read of the block keys from
// from's block on (up to scanBatch of them, with the first block's page), which later
// calls of this Store share.
func (s *Store) NextUnclaimed(from, to netip.Addr) (store.Stretch, bool, error) {
	from, to = normAddr(from), normAddr(to)
	if !s.blk.on || !from.IsValid() || !to.IsValid() || from.Is4() != to.Is4() || from.Compare(to) > 0 {
		return store.Stretch{}, false, nil
	}
	fp, _ := s.pageOf(from)
	tp, _ := s.pageOf(to)
	pre := s.base + "block/"
	offer := func(p pageID) (store.Stretch, bool, error) {
		s.blk.claimable = map[pageID]bool{p: true} // only the block offered last
		if s.pages[p] == nil && !s.blk.legacy {
			// Unclaimed blocks hold nothing but for a requested address or a
			// released node's leftovers: assume so rather than read it. If it
			// does, the reserving transaction's compare fails and reads it.
			s.pages[p] = &page{known: true}
		}
		return store.Stretch{From: maxAddr(p.addr(0), from), To: minAddr(p.last(), to)}, true, nil
	}
	// The first unclaimed block skipped after a lost claim: offered when no other is.
	var first pageID
	skipped := false
	for {
		c := s.blk.scan
		if !c.covers(fp) {
			ops := []clientv3.Op{clientv3.OpGet(pre+fp.name(), clientv3.WithRange(pre+tp.name()+"\x00"), clientv3.WithKeysOnly(), clientv3.WithLimit(scanBatch))}
			if s.blk.legacy {
				ops = append(ops, s.legacyScanOp(fp, tp))
			}
			pi := len(ops)
			if s.pages[fp] == nil {
				ops = append(ops, s.pageOps(fp)...)
			}
			resp, err := s.readTxn("find an unclaimed block in "+s.base, ops)
			if err != nil {
				return store.Stretch{}, false, err
			}
			if len(ops) > pi {
				if _, err := s.setPageFrom(fp, resp, pi); err != nil {
					return store.Stretch{}, false, err
				}
			}
			rr := resp.Responses[0].GetResponseRange()
			c = &scan{from: fp, to: tp}
			for _, kv := range rr.Kvs {
				p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), pre), s.pb)
				if !ok || p.v6 != fp.v6 {
					return store.Stretch{}, false, corrupt(string(kv.Key), "not a block key")
				}
				c.claimed = append(c.claimed, p)
			}
			if rr.More && len(c.claimed) > 0 {
				c.to = c.claimed[len(c.claimed)-1]
			}
			if s.blk.legacy {
				if err := s.legacyScan(c, resp.Responses[1].GetResponseRange()); err != nil {
					return store.Stretch{}, false, err
				}
			}
			s.blk.scan = c
		}
		i, _ := slices.BinarySearchFunc(c.claimed, fp, cmpPage)
		skip := 0
		if s.blk.lost {
			// After a lost claim, the machines that lost converge on the same next
			// block: each skips a random number of unclaimed ones instead.
			skip = rand.N(lostSpread)
		}
		for p := fp; ; p = p.next() {
			if i < len(c.claimed) && c.claimed[i] == p {
				i++
			} else if skip > 0 && p != tp && p != c.to {
				if !skipped {
					first, skipped = p, true
				}
				skip--
			} else {
				return offer(p)
			}
			if p == tp {
				if skipped {
					return offer(first)
				}
				return store.Stretch{}, false, nil
			}
			if p == c.to {
				break
			}
		}
		fp = c.to.next()
	}
}

// Borrow implements store.Blocks.
func (s *Store) Borrow() {
	if s.blk.on {
		s.blk.borrowing, s.blk.claimable = true, map[pageID]bool{}
	}
}

var _ store.Blocks = (*Store)(nil)
