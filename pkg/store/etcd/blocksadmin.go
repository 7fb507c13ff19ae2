package etcd

import (
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The operator's side of node-affine blocks (blocks.go): listing them, and giving a
// node's back.

// blocksOfNode lists the blocks node holds.
func (s *Store) blocksOfNode(node string) ([]pageID, error) {
	pre := s.nblockPrefix(node)
	var out []pageID
	err := s.list("read the blocks of node "+node, pre, prefixEnd(pre), true, func(kv *mvccpb.KeyValue) error {
		p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), pre), s.pb)
		if !ok {
			return corrupt(string(kv.Key), "not a block index entry")
		}
		out = append(out, p)
		return nil
	}, clientv3.WithKeysOnly())
	return out, err
}

// releaseBlocks gives back every block node holds (release --node): each block key that
// still names node is deleted with its index entry, in one transaction per block.
// The node's cursors stay: a machine given the name later goes on from them.
func (s *Store) releaseBlocks(node string) (int, error) {
	if !s.blk.on {
		return 0, nil
	}
	ps, err := s.blocksOfNode(node)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range ps {
		s.renew()
		bk, nk := s.blockKey(p), s.nblockKey(node, p)
		resp, _, err := s.txn("release block "+bk, []clientv3.Cmp{clientv3.Compare(clientv3.Value(bk), "=", node)},
			[]clientv3.Op{clientv3.OpDelete(bk), clientv3.OpDelete(nk)}, []clientv3.Op{clientv3.OpDelete(nk)})
		if err != nil {
			return n, err
		}
		if resp.Succeeded {
			n++
		}
	}
	return n, nil
}

// BlockSize is the addresses of a block (0: no blocks).
func (s *Store) BlockSize() int { return s.cfg.BlockSize }

// BlockInfo is one block, as Blocks reports it.
type BlockInfo struct {
	Prefix netip.Prefix
	Node   string // "" when unclaimed (it holds requested or left-over reservations)
	InUse  int
	Size   int
}

// Blocks lists every block that is claimed or holds a reservation, in address order.
func (s *Store) Blocks() ([]BlockInfo, error) {
	if !s.blk.on {
		return nil, nil
	}
	type info struct {
		node  string
		inUse int
		bits  bool
	}
	all := map[pageID]*info{}
	get := func(p pageID) *info {
		if all[p] == nil {
			all[p] = &info{}
		}
		return all[p]
	}
	pre := s.base + "block/"
	err := s.list("read the blocks of "+s.base, pre, prefixEnd(pre), true, func(kv *mvccpb.KeyValue) error {
		p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), pre), s.pb)
		if !ok {
			return corrupt(string(kv.Key), "not a block key")
		}
		if !validNode(string(kv.Value)) {
			return corrupt(string(kv.Key), "not the node name of a block holder")
		}
		get(p).node = string(kv.Value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	bpre := s.base + s.pagePre
	err = s.list("read the blocks of "+s.base, bpre, prefixEnd(bpre), true, func(kv *mvccpb.KeyValue) error {
		p, ok := parsePageName(strings.TrimPrefix(string(kv.Key), bpre), s.pb)
		if !ok || len(kv.Value) != s.pbytes {
			return corrupt(string(kv.Key), "not a block bitmap")
		}
		i := get(p)
		i.bits, i.inUse = true, popcount(kv.Value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.blk.legacy {
		// Blocks not written since blocks were turned on: their bits are in the old pages.
		lpre := s.base + "page/"
		err = s.list("read the pages of "+s.base, lpre, prefixEnd(lpre), true, func(kv *mvccpb.KeyValue) error {
			lp, ok := parsePageName(strings.TrimPrefix(string(kv.Key), lpre), pageBits)
			if !ok || len(kv.Value) != pageBytes {
				return corrupt(string(kv.Key), "not a bitmap page")
			}
			for off := 0; off < pageBytes; off += s.pbytes {
				p, _ := s.pageOf(lp.addr(off * 8))
				if b := kv.Value[off : off+s.pbytes]; !allZero(b) && (all[p] == nil || !all[p].bits) {
					get(p).inUse = popcount(b)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	ps := make([]pageID, 0, len(all))
	for p := range all {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b pageID) int {
		if a.v6 != b.v6 {
			if a.v6 {
				return 1
			}
			return -1
		}
		return cmpPage(a, b)
	})
	out := make([]BlockInfo, 0, len(ps))
	for _, p := range ps {
		i := all[p]
		if i.node == "" && i.inUse == 0 {
			continue
		}
		a := p.addr(0)
		out = append(out, BlockInfo{Prefix: netip.PrefixFrom(a, a.BitLen()-s.pb), Node: i.node, InUse: i.inUse, Size: 1 << s.pb})
	}
	return out, nil
}

func popcount(b []byte) int {
	n := 0
	for _, c := range b {
		n += bits.OnesCount8(c)
	}
	return n
}
