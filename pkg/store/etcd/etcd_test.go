package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

var netSeq atomic.Int64

// newNetwork names a network nothing has used yet.
func newNetwork() string { return fmt.Sprintf("net%d", netSeq.Add(1)) }

// testBlockSize is the block size of cfgFor's configs: 0 (none) unless
// LOCAL_IPAM_TEST_BLOCKSIZE says otherwise, to run every test of the package with blocks.
var testBlockSize = func() int {
	n, _ := strconv.Atoi(os.Getenv("LOCAL_IPAM_TEST_BLOCKSIZE"))
	return n
}()

func cfgFor(eps []string, node string) Config {
	return Config{Endpoints: eps, Node: node, Timeout: 10 * time.Second, BlockSize: testBlockSize}
}

func mustOpen(t testing.TB, cfg Config, network string) *Store {
	t.Helper()
	s, err := Open(cfg, network)
	if err != nil {
		t.Fatalf("Open(%s): %v", network, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func countKeys(t testing.TB, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestConformance runs the suite without blocks, with the default blocks of 64, and with
// the smallest blocks (8: most allocations cross blocks).
func TestConformance(t *testing.T) {
	for _, bs := range []int{0, 64, 8} {
		t.Run(fmt.Sprintf("blockSize=%d", bs), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) storetest.Opener {
				network := newNetwork()
				return func(t *testing.T) store.Store {
					cfg := cfgFor(shared, "node-a")
					cfg.BlockSize = bs
					s, err := Open(cfg, network)
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
			})
		})
	}
}

// checkConsistent checks what every transaction keeps true of a network's keys: each ip
// key has both index entries, created with it, and its page bit; every bit set is an ip
// key; a page is marked full exactly when it is all ones; and nothing else is left.
// It returns the addresses reserved.
func checkConsistent(t testing.TB, cli *clientv3.Client, s *Store) map[netip.Addr]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, s.base, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	kvs := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = kv
	}
	held := map[netip.Addr]string{}
	bits := map[pageID]*page{}
	for k, kv := range kvs {
		rest := strings.TrimPrefix(k, s.base)
		switch {
		case strings.HasPrefix(rest, "ip/"):
			a, ok := parseAddrName(rest[3:])
			if !ok {
				t.Errorf("bad ip key %s", k)
				continue
			}
			held[a] = string(kv.Value)
			for _, ik := range []string{s.ownerKey(string(kv.Value), a)} {
				ikv := kvs[ik]
				if ikv == nil || ikv.CreateRevision != kv.CreateRevision {
					t.Errorf("%s without its owner entry %s", k, ik)
					continue
				}
				e, ok := parseEntry(ikv.Value)
				if !ok || e.Owner != string(kv.Value) {
					t.Errorf("%s: bad owner entry %q", ik, ikv.Value)
					continue
				}
				nk := s.nodeKey(e.Node, a)
				if nkv := kvs[nk]; nkv == nil || nkv.CreateRevision != kv.CreateRevision {
					t.Errorf("%s without its node entry %s", k, nk)
				}
			}
		case strings.HasPrefix(rest, s.pagePre):
			p, ok := parsePageName(rest[len(s.pagePre):], s.pb)
			if !ok || len(kv.Value) != s.pbytes {
				t.Errorf("bad page %s", k)
				continue
			}
			if allZero(kv.Value) && !s.blk.legacy {
				t.Errorf("page %s is all zero: should have been deleted", k)
			}
			bits[p] = &page{bits: kv.Value}
			_, marked := kvs[s.fullKey(p)]
			if marked != allOnes(kv.Value, s.pbytes) {
				t.Errorf("page %s: all ones %v, marked full %v", k, allOnes(kv.Value, s.pbytes), marked)
			}
		case strings.HasPrefix(rest, "owner/"), strings.HasPrefix(rest, "node/"):
			i := strings.LastIndexByte(rest, '/')
			a, ok := parseAddrName(rest[i+1:])
			if !ok {
				t.Errorf("bad index key %s", k)
				continue
			}
			if ip := kvs[s.ipKey(a)]; ip == nil || ip.CreateRevision != kv.CreateRevision {
				t.Errorf("index entry %s without its reservation", k)
			}
		case strings.HasPrefix(rest, s.fullPre):
			p, ok := parsePageName(rest[len(s.fullPre):], s.pb)
			if !ok || kvs[s.pageKey(p)] == nil {
				t.Errorf("full marker %s without its page", k)
			}
		case s.blk.on && strings.HasPrefix(rest, "block/"):
			p, ok := parsePageName(rest[len("block/"):], s.pb)
			if !ok || kvs[s.nblockKey(string(kv.Value), p)] == nil {
				t.Errorf("block %s (%q) without its index entry", k, kv.Value)
			}
		case s.blk.on && strings.HasPrefix(rest, "nblock/"):
			node, name, _ := strings.Cut(rest[len("nblock/"):], "/")
			p, ok := parsePageName(name, s.pb)
			if b := kvs[s.blockKey(p)]; !ok || b == nil || string(b.Value) != node {
				t.Errorf("block index entry %s without its block", k)
			}
		case strings.HasPrefix(rest, "last/"), strings.HasPrefix(rest, "boot/"),
			s.blk.on && (strings.HasPrefix(rest, "ncur/") || rest == "blocksize"),
			s.blk.legacy && (strings.HasPrefix(rest, "page/") || strings.HasPrefix(rest, "full/")):
		default:
			t.Errorf("unexpected key %s", k)
		}
	}
	if s.blk.legacy {
		// A block without a bitmap of its own has its bits in its page of the old layout.
		for k, kv := range kvs {
			lp, ok := parsePageName(strings.TrimPrefix(k, s.base+"page/"), pageBits)
			if !strings.HasPrefix(k, s.base+"page/") || !ok || len(kv.Value) != pageBytes {
				continue
			}
			for off := 0; off < pageBytes; off += s.pbytes {
				if p, _ := s.pageOf(lp.addr(off * 8)); bits[p] == nil {
					bits[p] = &page{bits: kv.Value[off : off+s.pbytes]}
				}
			}
		}
	}
	n := 0
	for p, pg := range bits {
		for off := range 1 << s.pb {
			if pg.get(off) {
				n++
				if _, ok := held[p.addr(off)]; !ok {
					t.Errorf("bit of %s set in %s without a reservation", p.addr(off), s.pageKey(p))
				}
			}
		}
	}
	if n != len(held) {
		t.Errorf("%d bits set for %d reservations", n, len(held))
	}
	return held
}

// wantLeft checks the network's keys in the shared etcd with checkConsistent and that n
// addresses are still reserved.
func wantLeft(t testing.TB, s *Store, n int) {
	t.Helper()
	if held := checkConsistent(t, etcdtest.Client(t, shared), s); len(held) != n {
		if len(held) > 20 {
			t.Errorf("%d addresses left, want %d", len(held), n)
		} else {
			t.Errorf("%d addresses left, want %d: %v", len(held), n, held)
		}
	}
}

func TestConcurrentAllocation(t *testing.T) {
	network := newNetwork()
	var nodes atomic.Int64
	storetest.RunConcurrent(t, func() (store.Store, error) {
		// Every call a machine of its own, as far as the store can tell.
		s, err := Open(cfgFor(shared, fmt.Sprintf("node%d", nodes.Add(1)%5)), network)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, 8)
	s := mustOpen(t, cfgFor(shared, "check"), network)
	cli := etcdtest.Client(t, shared)
	if held := checkConsistent(t, cli, s); len(held) != 0 {
		t.Errorf("reservations left: %v", held)
	}
	for _, k := range []string{"ip/", "owner/", "node/", "page/", "full/"} {
		if n := countKeys(t, cli, s.base+k); n != 0 {
			t.Errorf("%d keys left under %s", n, s.base+k)
		}
	}
}

// allocateInProcesses runs procs machines as processes (this test binary, re-run as a
// worker), each allocating one address a call from one pool of the shared etcd until it
// is exhausted (code 100). It returns who got each address, and how many each machine
// got; an address handed out twice is an error.
func allocateInProcesses(t *testing.T, network, subnet string, procs, blockSize int, owner func(node string) string) (map[netip.Addr]string, map[string]int) {
	t.Helper()
	type out struct {
		node  string
		lines []string
		err   error
	}
	res := make(chan out, procs)
	for i := range procs {
		node := fmt.Sprintf("machine%d", i)
		job, _ := json.Marshal(workerJob{Endpoints: shared, Network: network, Node: node, Subnet: subnet, Owner: owner(node), BlockSize: blockSize})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(job))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		go func() {
			b, err := cmd.Output()
			if err != nil {
				err = fmt.Errorf("%s: %v: %s", node, err, stderr.String())
			}
			res <- out{node, strings.Fields(string(b)), err}
		}()
	}
	got := map[netip.Addr]string{}
	perNode := map[string]int{}
	for range procs {
		o := <-res
		if o.err != nil {
			t.Fatal(o.err)
		}
		for i := 0; i+1 < len(o.lines); i += 2 {
			a := netip.MustParseAddr(o.lines[i])
			if prev, dup := got[a]; dup {
				t.Errorf("%s handed out twice: to %s and %s", a, prev, o.lines[i+1])
			}
			got[a] = o.lines[i+1]
			perNode[o.node]++
		}
	}
	return got, perNode
}

// TestProcessesAllocateFromOnePool runs machines as processes (this test binary, re-run as
// a worker), each allocating from one pool until it is exhausted.
func TestProcessesAllocateFromOnePool(t *testing.T) {
	const procs = 4
	network := newNetwork()
	subnet := "10.88.0.0/25" // .2 - .126: 125 addresses
	run := func(round int) map[netip.Addr]string {
		got, perNode := allocateInProcesses(t, network, subnet, procs, testBlockSize, func(node string) string { return fmt.Sprintf("r%d-%s", round, node) })
		if len(got) != 125 {
			t.Errorf("round %d: %d addresses handed out, want 125", round, len(got))
		}
		t.Logf("round %d: addresses per machine: %v", round, perNode)
		return got
	}
	got := run(0)
	s := mustOpen(t, cfgFor(shared, "admin"), network)
	// Records name the machine that made each reservation.
	n := 0
	err := s.Records(func(r Record) error {
		n++
		if want := got[r.Addr]; r.Owner.ID != want || !strings.HasPrefix(r.Owner.ID, "r0-"+r.Node+"-") || r.Created.IsZero() {
			t.Errorf("record %+v; want owner %s", r, want)
		}
		return nil
	})
	if err != nil || n != len(got) {
		t.Fatalf("Records: %d, %v", n, err)
	}
	checkConsistent(t, etcdtest.Client(t, shared), s)
	// Released from another machine than the one that reserved.
	for a, id := range got {
		if ok, err := s.Release(a, store.Owner{ID: id, IfName: "eth0"}); err != nil || !ok {
			t.Fatalf("Release(%s, %s) = %v, %v", a, id, ok, err)
		}
	}
	if held := checkConsistent(t, etcdtest.Client(t, shared), s); len(held) != 0 {
		t.Fatalf("left after release: %v", held)
	}
	run(1)
}

// TestLostAnswers: a request applied by etcd whose answer never came back (the member died
// right after) is retried; the retry must report what the first attempt did.
func TestLostAnswers(t *testing.T) {
	defer loseAnswers.Store(0)
	network := newNetwork()
	s := mustOpen(t, cfgFor(shared, "n"), network)
	a := netip.MustParseAddr("10.3.0.1")
	o := own("c", "eth0")
	if _, _, err := s.FirstFree(a, a); err != nil { // the page is cached: Reserve is one txn
		t.Fatal(err)
	}
	loseAnswers.Store(1)
	if ok, err := s.Reserve(a, o); err != nil || !ok {
		t.Fatalf("Reserve with its answer lost = %v, %v; want true", ok, err)
	}
	// Held by the same owner before: a lost answer must not make it ours.
	s2 := mustOpen(t, cfgFor(shared, "n"), network)
	if _, _, err := s2.FirstFree(a, a); err != nil {
		t.Fatal(err)
	}
	loseAnswers.Store(1)
	if ok, err := s2.Reserve(a, o); err != nil || ok {
		t.Fatalf("Reserve of a held address with a lost answer = %v, %v; want false", ok, err)
	}
	loseAnswers.Store(1)
	if ok, err := s.Release(a, o); err != nil || !ok {
		t.Fatalf("Release with its answer lost = %v, %v; want true", ok, err)
	}
	for i := range 30 {
		mustReserve(t, s, fmt.Sprintf("10.3.0.%d", i+10), own(fmt.Sprintf("g%d", i), "eth0"))
	}
	loseAnswers.Store(1)
	removed, err := s.GC(nil)
	if err != nil || len(removed) != 30 {
		t.Fatalf("GC with an answer lost removed %d, %v; want 30", len(removed), err)
	}
	wantLeft(t, s, 0)
}

// TestReleaseAfterReReserve: what a Store read of a reservation goes stale when another
// machine releases it and the same owner reserves it again; Release still frees it.
func TestReleaseAfterReReserve(t *testing.T) {
	network := newNetwork()
	s := mustOpen(t, cfgFor(shared, "n1"), network)
	other := mustOpen(t, cfgFor(shared, "n2"), network)
	a := netip.MustParseAddr("10.4.0.1")
	o := own("c", "eth0")
	mustReserve(t, s, a.String(), o)
	if got, err := s.Owned(o); err != nil || len(got) != 1 {
		t.Fatalf("Owned = %v, %v", got, err)
	}
	if ok, err := other.Release(a, o); err != nil || !ok {
		t.Fatalf("Release from n2 = %v, %v", ok, err)
	}
	mustReserve(t, other, a.String(), o)
	if ok, err := s.Release(a, o); err != nil || !ok {
		t.Fatalf("Release of the newer reservation = %v, %v; want true", ok, err)
	}
	wantLeft(t, s, 0)
}

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
