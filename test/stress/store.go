package main

// Reading a network directory from the outside, and the checks every scenario shares: the
// records against what the harness knows, "DEL of everything leaves no record", and "a
// fresh round of ADDs can use every address of the range".

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// entry is one name in a network directory, or one reservation of a network kept in etcd
// (a regular "file" named like its address, holding "<id>\r\n<ifname>").
type entry struct {
	name    string
	addr    netip.Addr  // valid when the name is an address in canonical form: a record
	mode    fs.FileMode // type bits (0 for a regular file)
	content []byte      // regular files: the first 64 KiB
	size    int64
	node    string // etcd: the node the reservation is tagged with
}

func (e entry) regular() bool { return e.mode&fs.ModeType == 0 }

func (e entry) kind() string {
	switch {
	case e.regular():
		return "regular file"
	case e.mode&fs.ModeSymlink != 0:
		return "symlink"
	case e.mode&fs.ModeDir != 0:
		return "directory"
	case e.mode&fs.ModeNamedPipe != 0:
		return "FIFO"
	}
	return "special file"
}

// recordName reports whether name is an address as both plugins name their records.
func recordName(name string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(name)
	if err != nil || a.Zone() != "" || a.Is4In6() || a.String() != name {
		return netip.Addr{}, false
	}
	return a, true
}

// readNetDir lists dir without following anything. A missing dir is empty.
func readNetDir(dir string) ([]entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, de := range des {
		fi, err := os.Lstat(filepath.Join(dir, de.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		e := entry{name: de.Name(), mode: fi.Mode().Type(), size: fi.Size()}
		e.addr, _ = recordName(e.name)
		if e.regular() {
			e.content, _ = readNoFollow(filepath.Join(dir, e.name), 64<<10)
		}
		out = append(out, e)
	}
	return out, nil
}

// readNoFollow reads up to max bytes of a regular file, never through a symlink.
func readNoFollow(path string, max int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	buf := make([]byte, max)
	n, err := io.ReadFull(f, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return buf[:n], err
}

// records returns the entries named like an address.
func records(es []entry) []entry {
	var out []entry
	for _, e := range es {
		if e.addr.IsValid() {
			out = append(out, e)
		}
	}
	return out
}

func (x *job) readRecords(dir string) []entry {
	es, err := readNetDir(dir)
	if err != nil {
		panic(fmt.Errorf("cannot read %s: %w", dir, err))
	}
	return records(es)
}

// reservations is where a network's reservations are read from the outside, for the
// checks shared by the disk and etcd scenarios: the network directory (diskStore), or what
// the operator's `local-ipam list --conf FILE --json` shows (etcdStore, etcd.go).
type reservations interface {
	// read returns the reservations as entries named like their address (for the disk
	// store: every name of the directory that is an address, whatever its type). A
	// harness failure panics, as readRecords does.
	read(x *job) []entry
	// where names the reservation of an address in a message (its file).
	where(name string) string
}

// diskStore is a network directory.
type diskStore string

func (d diskStore) read(x *job) []entry      { return x.readRecords(string(d)) }
func (d diskStore) where(name string) string { return filepath.Join(string(d), name) }

// --- attachments ----------------------------------------------------------------------

// att is one attachment (container ID, ifname) the harness drives. Its fields are touched
// by the one worker that owns it, and by the main goroutine while every worker waits.
type att struct {
	id, ifname string
	live       bool         // its ADD succeeded, and no DEL was started since
	addrs      []netip.Addr // what that ADD returned
	prev       []byte       // the ADD result: prevResult for CHECK
	dirty      bool         // an ADD or DEL was killed or failed: the runtime must DEL it
	node       string       // etcd scenarios: the machine whose runtime drives it (its calls carry this node)
	counted    bool         // counted in tracker.possible (from ADD start to DEL success)
	lastDel    string       // what the harness last saw happen to it, for messages
	last       outcome      // the last ADD (fault scenarios)
}

func (a *att) key() string    { return a.id + "\r\n" + a.ifname }
func (a *att) String() string { return a.id + "/" + a.ifname }

// --- the set of addresses of a range set ------------------------------------------------

// rangeSet describes one range set of a scenario's network for the checks.
type rangeSet struct {
	desc  string
	first netip.Addr // first allocatable address
	last  netip.Addr
	gw    netip.Addr
	size  uint64 // allocatable addresses (gateway excluded); capped at 1<<62
}

// v4Set is subnet with host-local's defaults: gateway .1, range .1 to broadcast-1.
func subnetSet(p netip.Prefix) rangeSet {
	p = p.Masked()
	first := p.Addr().Next()
	last := lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	size := uint64(1) << 62
	if hostBits := p.Addr().BitLen() - p.Bits(); hostBits < 62 {
		size = uint64(1)<<hostBits - 2 // network address, gateway
		if p.Addr().Is4() {
			size-- // broadcast
		}
	}
	return rangeSet{desc: p.String(), first: first, last: last, gw: first, size: size}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (s rangeSet) contains(a netip.Addr) bool {
	return a.BitLen() == s.first.BitLen() && a.Compare(s.first) >= 0 && a.Compare(s.last) <= 0
}

func setOf(sets []rangeSet, a netip.Addr) int {
	for i, s := range sets {
		if s.contains(a) {
			return i
		}
	}
	return -1
}

// --- checks shared by the scenarios ------------------------------------------------------

// checkRecords compares the records of rs with the attachments the harness drives (no call
// may be running): every record is a regular file holding exactly "<id>\r\n<ifname>" of a
// live attachment that was given that address; every address a live attachment was given
// has its record; no attachment holds two addresses of one range set. when says at which
// point of the scenario (for messages).
func (x *job) checkRecords(rs reservations, sets []rangeSet, atts []*att, when string) (nrec int) {
	byKey := map[string]*att{}
	for _, a := range atts {
		byKey[a.key()] = a
	}
	recs := rs.read(x)
	perSet := map[string]map[int][]netip.Addr{}
	seen := map[netip.Addr]bool{}
	for _, r := range recs {
		path := rs.where(r.name)
		if !r.regular() {
			x.violate("%s: %s is a %s, not a record", when, path, r.kind())
			continue
		}
		a := byKey[string(r.content)]
		switch {
		case len(r.content) == 0:
			x.violateOnce("empty "+path, "%s: empty record %s (left by a process killed between create and write; it blocks %s for good)", when, path, r.name)
			continue
		case a == nil && tornPrefix(r.content, byKey):
			x.violateOnce("torn "+path+string(r.content), "%s: torn record %s holds %q, a prefix of an attachment's key", when, path, r.content)
			continue
		case a == nil:
			x.violateOnce("unknown "+path+string(r.content), "%s: record %s holds %q, which is no attachment's key", when, path, r.content)
			continue
		case !a.live:
			x.violateOnce("leak "+path+string(r.content), "%s: record %s names %s, which holds nothing (%s): a leaked address", when, path, a, a.lastDel)
		case !slices.Contains(a.addrs, r.addr):
			x.violate("%s: record %s names %s, which was given %v", when, path, a, a.addrs)
		case r.node != a.node:
			x.violate("%s: record %s names %s, whose ADD ran on node %q, but is tagged with node %q", when, path, a, a.node, r.node)
		}
		seen[r.addr] = true
		if s := setOf(sets, r.addr); s >= 0 {
			if perSet[a.key()] == nil {
				perSet[a.key()] = map[int][]netip.Addr{}
			}
			perSet[a.key()][s] = append(perSet[a.key()][s], r.addr)
		} else {
			x.violate("%s: record %s is outside every range set", when, path)
		}
	}
	for _, a := range atts {
		if !a.live {
			continue
		}
		for _, ad := range a.addrs {
			if !seen[ad] {
				x.violate("%s: %s was given %s (its ADD succeeded, no DEL since) but there is no record %s", when, a, ad, rs.where(ad.String()))
			}
		}
	}
	for _, k := range sortedKeys(perSet) {
		for s, addrs := range perSet[k] {
			if len(addrs) > 1 {
				x.violate("%s: %s holds %d addresses in range set %d (%s): %v", when, byKey[k], len(addrs), s, sets[s].desc, addrs)
			}
		}
	}
	return len(recs)
}

func tornPrefix(content []byte, byKey map[string]*att) bool {
	for k := range byKey {
		if len(content) < len(k) && strings.HasPrefix(k, string(content)) {
			return true
		}
	}
	return false
}

// expectNoRecords: after DEL of every attachment there is no record.
// It returns how many records were left, and how many of them were empty.
func (x *job) expectNoRecords(rs reservations, when string) (left, empty int) {
	for _, r := range rs.read(x) {
		path := rs.where(r.name)
		left++
		switch {
		case !r.regular():
			x.violateOnce("kind "+path, "%s: %s, a %s, left after DEL of every attachment", when, path, r.kind())
		case len(r.content) == 0:
			empty++
			x.violateOnce("empty "+path, "%s: empty record %s left after DEL of every attachment (left by a process killed between create and write; it blocks %s for good)", when, path, r.name)
		default:
			x.violateOnce("leak "+path+string(r.content), "%s: record %s holding %q left after DEL of every attachment: a leaked address", when, path, r.content)
		}
	}
	return left, empty
}

// fillCheck ADDs fresh attachments until the first set is full: exactly want must succeed
// (then one more fails with "no free address"), each with a distinct address of the set;
// then it DELs them all and expects no record left. It runs par calls at a time.
func (x *job) fillCheck(n network, sets []rangeSet, want int, prefix, when string, par int) {
	type got struct {
		a   *att
		o   outcome
		ads []netip.Addr
	}
	total := want + par
	atts := make([]*att, total)
	for i := range atts {
		atts[i] = &att{id: fmt.Sprintf("%s-%03d", prefix, i), ifname: "eth0", node: n.machine(i)}
	}
	res := make([]got, total)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				a := atts[i]
				o := x.call(call{cmd: "ADD", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), nil)})
				res[i] = got{a: a, o: o}
				if o.ok() {
					res[i].ads, _ = parseAdd(o)
				}
			}
		}()
	}
	for i := range total {
		next <- i
	}
	close(next)
	wg.Wait()
	ok, exhausted := 0, 0
	owner := map[netip.Addr]*att{}
	for _, r := range res {
		if r.o.ok() {
			ok++
			r.a.live, r.a.addrs, r.a.prev = true, r.ads, r.o.stdout
			for _, ad := range r.ads {
				if setOf(sets, ad) < 0 {
					x.violate("%s: ADD of %s returned %s, outside every range set", when, r.a, ad)
				}
				if prev := owner[ad]; prev != nil {
					x.violate("%s: ADD of %s returned %s, already given to %s", when, r.a, ad, prev)
				}
				owner[ad] = r.a
			}
			continue
		}
		if e, bad := parseError(r.o); bad != "" {
			x.violate("%s: ADD of %s: %s", when, r.a, bad)
		} else if _, ex := exhaustedSet(x.p, e); ex {
			exhausted++
		} else {
			x.violate("%s: ADD of %s failed: %s", when, r.a, errSummary(r.o))
		}
	}
	if ok != want {
		var free []string
		if ok < want && len(sets) > 0 {
			free = x.unusable(n.records(), sets[0], owner)
		}
		msg := ""
		if len(free) > 0 {
			msg = "; not given out: " + strings.Join(capList(free, 12), ", ")
		}
		x.violate("%s: a fresh round of ADDs got %d addresses of the %d the range set %s has (%d answered no free address)%s",
			when, ok, want, sets[0].desc, exhausted, msg)
	}
	x.checkRecords(n.records(), sets, atts, when+", range filled")
	x.delAll(n, atts, par)
	x.expectNoRecords(n.records(), when+", fill round DELeted")
}

// unusable lists the addresses of a small set that a fill round did not give out, with
// what the store holds under that name.
func (x *job) unusable(rs reservations, s rangeSet, given map[netip.Addr]*att) []string {
	if s.size > 4096 {
		return nil
	}
	es := rs.read(x)
	byName := map[string]entry{}
	for _, e := range es {
		byName[e.name] = e
	}
	var out []string
	for a := s.first; a.IsValid() && a.Compare(s.last) <= 0; a = a.Next() {
		if a == s.gw || given[a] != nil {
			continue
		}
		what := "no record"
		if e, ok := byName[a.String()]; ok {
			switch {
			case !e.regular():
				what = e.kind()
			case len(e.content) == 0:
				what = "empty record"
			default:
				what = fmt.Sprintf("record %q", e.content)
			}
		}
		out = append(out, fmt.Sprintf("%s (%s)", a, what))
	}
	return out
}

// delAll DELs every attachment (par at a time), as a runtime tearing everything down; each
// DEL must succeed.
func (x *job) delAll(n network, atts []*att, par int) {
	var wg sync.WaitGroup
	next := make(chan *att)
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range next {
				o := x.call(call{cmd: "DEL", id: a.id, ifname: a.ifname, stdin: x.conf(n.on(a.node), nil)})
				if !o.ok() {
					x.violate("DEL of %s failed: %s", a, describe(o))
					continue
				}
				a.live, a.addrs, a.dirty, a.lastDel = false, nil, false, "DELeted at the end"
			}
		}()
	}
	for _, a := range atts {
		next <- a
	}
	close(next)
	wg.Wait()
}
