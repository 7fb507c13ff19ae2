package etcd

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/internal/bitmap"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// batchRecords is how many reservations one transaction of GC or FreeOnReboot releases:
// each takes 3 deletes and at most 2 page operations, within etcd's default limit of 128
// operations a transaction.
const batchRecords = 25

type victim struct {
	a netip.Addr
	h holding
}

// nodeRecords lists node's reservations (its index, not the pool), keeping those keep
// accepts.
func (s *Store) nodeRecords(node string, keep func(e entry, kv *mvccpb.KeyValue) bool) ([]victim, error) {
	prefix := s.nodePrefix(node)
	var out []victim
	err := s.list("read the reservations of node "+node, prefix, prefixEnd(prefix), true, func(kv *mvccpb.KeyValue) error {
		a, ok := parseAddrName(string(kv.Key[len(prefix):]))
		e, eok := parseEntry(kv.Value)
		if !ok || !eok {
			return corrupt(string(kv.Key), "not an index entry of local-ipam")
		}
		if !keep(e, kv) {
			out = append(out, victim{a, holding{key: e.Owner, node: node, rev: kv.CreateRevision}})
		}
		return nil
	})
	return out, err
}

// afterBatch, when set (tests only), runs after each batch of releaseMany.
var afterBatch func()

// releaseMany releases the victims, batchRecords to a transaction; a batch whose
// transaction fails (a page or a reservation changed since read) is released one by one.
// If not nil, before is told each batch before anything of it is sent, and report what
// the batch released as soon as it is released.
func (s *Store) releaseMany(vs []victim, before, report func([]victim)) ([]netip.Addr, error) {
	var done []netip.Addr
	for len(vs) > 0 {
		s.renew() // each batch has the call's timeout (see renew)
		n := min(len(vs), batchRecords)
		batch := vs[:n]
		vs = vs[n:]
		if before != nil {
			before(batch)
		}
		var freed []victim
		ok, retried, err := s.releaseBatch(batch)
		if err == nil && ok {
			freed = batch
		} else if err == nil {
			for _, v := range batch {
				var ok bool
				if ok, err = s.release(v.a, v.h, retried); err != nil {
					break
				}
				if ok {
					freed = append(freed, v)
				}
			}
		}
		for _, v := range freed {
			done = append(done, v.a)
		}
		if report != nil && len(freed) > 0 {
			report(freed)
		}
		if afterBatch != nil {
			afterBatch()
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (s *Store) releaseBatch(batch []victim) (ok, retried bool, err error) {
	if err := s.ensureBlocks(); err != nil {
		return false, false, err
	}
	// The pages of the batch, read together when not cached.
	var missing []pageID
	seen := map[pageID]bool{}
	for _, v := range batch {
		p, _ := s.pageOf(v.a)
		if !seen[p] && s.pages[p] == nil {
			missing = append(missing, p)
		}
		seen[p] = true
	}
	if err := s.readPages(missing); err != nil {
		return false, false, err
	}
	newBits := map[pageID][]byte{}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, v := range batch {
		p, off := s.pageOf(v.a)
		ip := s.ipKey(v.a)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ip), "=", v.h.rev))
		ops = append(ops, clientv3.OpDelete(ip), clientv3.OpDelete(s.ownerKey(v.h.key, v.a)), clientv3.OpDelete(s.nodeKey(v.h.node, v.a)))
		b, ok := newBits[p]
		if !ok {
			b = s.pages[p].with(off, false, s.pbytes)
		} else {
			bitmap.Bitmap(b).Set(uint32(off), false)
		}
		newBits[p] = b
	}
	var order []pageID
	for p := range seen {
		order = append(order, p)
	}
	for _, p := range order {
		pg, pk := s.pages[p], s.pageKey(p)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(pk), "=", pg.rev))
		if s.dropPage(newBits[p]) {
			ops = append(ops, clientv3.OpDelete(pk))
		} else {
			ops = append(ops, clientv3.OpPut(pk, string(newBits[p])))
		}
		if allOnes(pg.bits, s.pbytes) {
			ops = append(ops, clientv3.OpDelete(s.fullKey(p)))
		}
	}
	cmps = append(cmps, s.layoutCmps()...) // else one by one, which tells why
	resp, retried, err := s.txn("release reservations in "+s.base, cmps, ops, nil)
	if err != nil {
		return false, retried, err
	}
	s.markers, s.prefetched = nil, nil // pages may have stopped being full; owners changed
	if !resp.Succeeded {
		// Changed under us (or our own attempt went through unseen, when retried): one by
		// one, from fresh pages.
		for p := range seen {
			delete(s.pages, p)
		}
		return false, retried, nil
	}
	for _, p := range order {
		s.pages[p] = s.pageAfter(s.pages[p], newBits[p], resp.Header.Revision)
	}
	for _, v := range batch {
		delete(s.held, v.a)
		s.forget(v.h.key, v.a)
	}
	return true, retried, nil
}

// GC removes every reservation of this node whose (container ID, ifname) is not among the
// valid attachments, with the outcome of the disk store's GC: one naming only a container
// ID is kept when that container has any valid attachment. Other nodes' reservations are
// never touched: their own GC knows their attachments. It reads only this node's index,
// after binding the node to this machine (refused if it is another machine's: node.go).
// A GC that binds the node frees nothing: the node was bound to no machine (an earlier
// version's record, or none), so its reservations may be another machine's that uses the
// same name; the next GC, once the node is bound, does the work.
func (s *Store) GC(valid []types.GCAttachment) (removed []netip.Addr, err error) {
	if bound, err := s.claimNode(); err != nil || !bound {
		return nil, err
	}
	keeps := store.GCKeeps(valid)
	vs, err := s.nodeRecords(s.cfg.Node, func(e entry, _ *mvccpb.KeyValue) bool {
		return keeps(strings.TrimSpace(e.Owner))
	})
	if err != nil {
		return nil, err
	}
	return s.releaseMany(vs, nil, nil)
}

// FreeOnReboot releases every reservation of this node if the boot ID stored for it
// differs from bootID (the machine rebooted: the containers died with it), then stores
// bootID; the first call ever only stores it. It returns how many it freed. Only
// reservations older than the stored boot ID's read are freed, so that a call of the new
// boot that raced ahead and reserved is never undone by a slower one. The record is the
// one Open read (no round trip of its own when the boot is unchanged): it is called right
// after Open, as every CNI call does. The node must be this machine's (node.go): a node
// bound to another machine is refused whatever its boot ID, so that no machine frees
// another's reservations. A node bound to no machine (an earlier version's record of a
// boot ID) is bound with bootID and nothing is freed: a machine cannot tell its own
// reboot from another machine that uses the same name, and freeing would, in the second
// case, hand live addresses out again. A reboot's leftovers are then GC's.
func (s *Store) FreeOnReboot(bootID string) (int, error) {
	bootID = strings.TrimSpace(bootID)
	freed := 0
	for range maxNodeTries {
		m, err := s.ownNode()
		if err != nil {
			return freed, err
		}
		rec := s.node.rec
		if rec.Machine == m && rec.Boot == bootID {
			return freed, nil
		}
		if rec.Machine == m && rec.Boot != "" && rec.Boot != bootID {
			seenAt := s.node.readAt
			vs, err := s.nodeRecords(s.cfg.Node, func(_ entry, kv *mvccpb.KeyValue) bool { return kv.CreateRevision > seenAt })
			if err != nil {
				return freed, err
			}
			done, err := s.releaseMany(vs, nil, nil)
			freed += len(done)
			if err != nil {
				return freed, err
			}
			s.renew()
		}
		// Recorded only once everything older is freed: a call that fails half-way
		// leaves the old boot ID, and the next one goes on.
		ok, err := s.writeNode(nodeRecord{Machine: m, Boot: bootID})
		if err != nil || ok {
			return freed, err
		}
	}
	return freed, cnierr.New(cnierr.TryAgainLater, "", "gave up recording the boot of node %s: %s keeps changing", s.cfg.Node, s.bootKey())
}

// ReleaseNode releases every reservation node made, for a machine gone for good: listed
// from the node's index, batchRecords to a transaction, each batch with a timeout of its
// own, so that a node of any size is released. releasing is told each batch's
// reservations before its transaction is sent, and freed those it released as soon as
// they are: a process killed in between (or a transaction whose answer is lost) leaves
// addresses that may be released, all of which releasing was told. Then it deletes the
// node's record, which frees the name for another machine (node.go); cleared tells
// whether there was one. On an error, what was released stays released, and calling it
// again goes on.
func (s *Store) ReleaseNode(node string, releasing, freed func([]Record)) (n int, cleared bool, err error) {
	if !validNode(node) {
		return 0, false, cnierr.New(cnierr.InvalidConfig, "", "invalid node name %q", node)
	}
	s.renew()
	vs, err := s.nodeRecords(node, func(entry, *mvccpb.KeyValue) bool { return false })
	if err != nil {
		return 0, false, err
	}
	records := func(batch []victim) []Record {
		rs := make([]Record, len(batch))
		for i, v := range batch {
			rs[i] = Record{Addr: v.a, Owner: store.ParseKey(v.h.key), Node: node}
		}
		return rs
	}
	done, err := s.releaseMany(vs,
		func(batch []victim) { releasing(records(batch)) },
		func(batch []victim) { freed(records(batch)) })
	if err != nil {
		return len(done), false, err
	}
	// Its blocks and cursors: the blocks become unclaimed, for any machine to claim.
	if _, err := s.releaseBlocks(node); err != nil {
		return len(done), false, err
	}
	s.renew()
	var resp *clientv3.DeleteResponse
	bk := s.base + "boot/" + node
	err = s.do("delete "+bk, func(ctx context.Context) (err error) {
		resp, err = s.cli.Delete(ctx, bk)
		return err
	})
	if err != nil {
		return len(done), false, err
	}
	return len(done), resp.Deleted > 0, nil
}

// Writable proves that a reservation could be written now: a transaction holding a put
// whose condition is never true goes through the leader and quorum like any write, and
// is refused when etcd is out of space, yet writes nothing (not even a revision).
// It fails too when the node is another machine's, or this machine's ID is unknown, or
// the block size record is damaged: an ADD would be refused (node.go, blocks.go).
func (s *Store) Writable() error {
	if s.blk.err != nil {
		return s.blk.err // a damaged block size record: every write fails on it
	}
	if _, err := s.ownNode(); err != nil {
		return err
	}
	k := s.base + "writable/" + s.cfg.Node
	return s.do("write to "+s.base, func(ctx context.Context) error {
		_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(k), "<", 0)).Then(clientv3.OpPut(k, "")).Commit()
		return err
	})
}

// Records calls fn for every reservation of the network, from the owner index (which
// holds everything a Record says), listBatch at a time and all at one revision. The order
// is the index's, not the addresses'.
func (s *Store) Records(fn func(Record) error) error {
	prefix := s.base + "owner/"
	return s.list("read the reservations of "+s.base, prefix, prefixEnd(prefix), true, func(kv *mvccpb.KeyValue) error {
		rest := string(kv.Key[len(prefix):])
		i := strings.IndexByte(rest, '/')
		var a netip.Addr
		ok := i >= 0
		if ok {
			a, ok = parseAddrName(rest[i+1:])
		}
		e, eok := parseEntry(kv.Value)
		if !ok || !eok {
			return corrupt(string(kv.Key), "not an index entry of local-ipam")
		}
		return fn(Record{Addr: a, Owner: store.ParseKey(e.Owner), Node: e.Node, Created: e.Created})
	})
}

// CountReserved returns how many addresses in [from, to] are reserved, counted by etcd
// (a count-only range over the ip keys: nothing is read).
func (s *Store) CountReserved(from, to netip.Addr) (int, error) {
	from, to = normAddr(from), normAddr(to)
	if !from.IsValid() || !to.IsValid() || from.Is4() != to.Is4() || from.Compare(to) > 0 {
		return 0, nil
	}
	var resp *clientv3.GetResponse
	err := s.do("count the reservations of "+s.base, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.ipKey(from), clientv3.WithRange(s.ipKey(to)+"\x00"), clientv3.WithCountOnly())
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

// Networks lists the networks that have any key under the prefix: one keys-only get of
// one key per network, whatever their size.
func Networks(cfg Config) ([]string, error) {
	cfg = withDefaults(cfg)
	deadline := time.Now().Add(cfg.Timeout)
	cli, cctx, stop, cfg, err := dial(cfg, deadline)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, cli: cli, root: cctx, stop: stop}
	s.ctx, s.cancel = context.WithDeadline(s.root, deadline)
	defer s.Close()
	root := cfg.Prefix + "/"
	from, end := root, prefixEnd(root)
	var out []string
	for {
		var resp *clientv3.GetResponse
		err := s.do("list the networks under "+root, func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
			return err
		})
		if err != nil {
			return out, err
		}
		if len(resp.Kvs) == 0 {
			return out, nil
		}
		rest := string(resp.Kvs[0].Key[len(root):])
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			from = string(resp.Kvs[0].Key) + "\x00" // not a network's key
			continue
		}
		if name := rest[:i]; store.CheckNetworkName(name) == nil {
			out = append(out, name)
		}
		from = prefixEnd(root + rest[:i+1])
	}
}
