package etcd

import (
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A pool written without blocks ("legacy", blocks.go) has its reservations in pages of
// 4,096 addresses, which nothing writes once blocks are on: a block without a bitmap key
// of its own is read from its page there. The walks over many blocks (the search for an
// unclaimed block, FirstFree) read those pages 64 at a time, not block by block.

// legacyBatch: how many old pages one such read takes.
const legacyBatch = 64

// legacyScanOp reads the old pages (of the layout without blocks) over blocks [fp, tp],
// up to legacyBatch of them.
func (s *Store) legacyScanOp(fp, tp pageID) clientv3.Op {
	lpre := s.base + "page/"
	lf, _ := pageOf(fp.addr(0), pageBits)
	lt, _ := pageOf(tp.addr(0), pageBits)
	return clientv3.OpGet(lpre+lf.name(), clientv3.WithRange(lpre+lt.name()+"\x00"), clientv3.WithLimit(legacyBatch))
}

// legacyScan counts, in scan c, the blocks holding reservations in the old pages read
// (rr, of legacyScanOp) as not to be offered: they are no fresh block to claim, and
// offering them one by one would cost a read each. Their free addresses are taken by
// borrowing, which claims such a block on the way.
func (s *Store) legacyScan(c *scan, rr *etcdserverpb.RangeResponse) error {
	err := s.eachLegacyBlock(rr, c.from.v6, func(p pageID, bits []byte) {
		if !allZero(bits) && c.covers(p) {
			c.claimed = append(c.claimed, p)
		}
	})
	if err != nil {
		return err
	}
	if last, ok := s.legacyEnd(rr); ok && last.n.Cmp(c.to.n) < 0 {
		c.to = last
	}
	slices.SortFunc(c.claimed, cmpPage)
	c.claimed = slices.Compact(c.claimed)
	return nil
}

// eachLegacyBlock calls fn with each block, and its bits, of the old pages read (rr, of
// legacyScanOp), once it has checked each is a whole page of family v6.
func (s *Store) eachLegacyBlock(rr *etcdserverpb.RangeResponse, v6 bool, fn func(p pageID, bits []byte)) error {
	lpre := s.base + "page/"
	for _, kv := range rr.Kvs {
		lp, ok := parsePageName(strings.TrimPrefix(string(kv.Key), lpre), pageBits)
		if !ok || lp.v6 != v6 || len(kv.Value) != pageBytes {
			return corrupt(string(kv.Key), "not a bitmap page")
		}
		for off := 0; off < pageBytes; off += s.pbytes {
			p, _ := s.pageOf(lp.addr(off * 8))
			fn(p, kv.Value[off:off+s.pbytes])
		}
	}
	return nil
}

// legacyEnd: when the read of old pages rr stopped at its limit, the last block those
// pages cover; past it nothing is known.
func (s *Store) legacyEnd(rr *etcdserverpb.RangeResponse) (pageID, bool) {
	if !rr.More || len(rr.Kvs) == 0 {
		return pageID{}, false
	}
	lp, ok := parsePageName(strings.TrimPrefix(string(rr.Kvs[len(rr.Kvs)-1].Key), s.base+"page/"), pageBits)
	if !ok {
		return pageID{}, false
	}
	last, _ := s.pageOf(lp.addr(pageBytes*8 - 1))
	return last, true
}

// legacyMarkerOps: with readMarkers' in a legacy pool, the old pages over blocks
// [cur, pt] and the bitmap keys of those blocks.
func (s *Store) legacyMarkerOps(cur, pt pageID) []clientv3.Op {
	if !s.blk.legacy {
		return nil
	}
	bp := s.base + s.pagePre
	return []clientv3.Op{s.legacyScanOp(cur, pt),
		clientv3.OpGet(bp+cur.name(), clientv3.WithRange(bp+pt.name()+"\x00"), clientv3.WithKeysOnly(), clientv3.WithLimit(markerBatch))}
}

// legacyMarkers takes the answers, from the i-th, to legacyMarkerOps: the blocks of m
// without a bitmap key are cached as their old pages say, and those all taken count as
// marked full.
func (s *Store) legacyMarkers(m *markers, resp *clientv3.TxnResponse, i int) error {
	if !s.blk.legacy {
		return nil
	}
	lr, br := resp.Responses[i].GetResponseRange(), resp.Responses[i+1].GetResponseRange()
	bp := s.base + s.pagePre
	own := map[pageID]bool{}
	for _, kv := range br.Kvs {
		p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), bp), s.pb)
		if !ok || p.v6 != m.from.v6 {
			return corrupt(string(kv.Key), "not a block bitmap")
		}
		own[p] = true
	}
	if br.More && len(br.Kvs) > 0 {
		// Nothing known past the last key read.
		if last, _ := parsePageName(strings.TrimPrefix(string(br.Kvs[len(br.Kvs)-1].Key), bp), s.pb); cmpPage(last, m.to) < 0 {
			m.to = last
		}
	}
	if last, ok := s.legacyEnd(lr); ok && cmpPage(last, m.to) < 0 {
		m.to = last
	}
	err := s.eachLegacyBlock(lr, m.from.v6, func(p pageID, bits []byte) {
		if !m.covers(p) || own[p] || s.pages[p] != nil {
			return
		}
		pg := &page{}
		if !allZero(bits) {
			pg.bits = append([]byte(nil), bits...)
		}
		s.pages[p] = pg
		if allOnes(pg.bits, s.pbytes) {
			m.full = append(m.full, p)
		}
	})
	if err != nil {
		return err
	}
	slices.SortFunc(m.full, cmpPage)
	m.full = slices.Compact(m.full)
	return nil
}
