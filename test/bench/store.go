package main

// Store generation: a model of host-local's single-range IPv4 allocator (its walk order and
// cursor) and a writer for its on-disk store, so that a store of 50,000 allocations can be laid
// down in seconds exactly as 50,000 host-local ADDs would have left it.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
)

const (
	lastReservedFile = "last_reserved_ip.0" // range set 0: the benchmark uses one range set
	lockFile         = "lock"
	lineBreak        = "\r\n"
	benchIfname      = "eth0"
)

// v4range is host-local's default range for an IPv4 subnet: rangeStart = subnet+1,
// rangeEnd = broadcast-1, gateway = subnet+1 (never handed out). Addresses are host-order
// uint32s.
type v4range struct {
	subnet     netip.Prefix
	start, end uint32
	gw         uint32
}

func newV4Range(subnet string) (v4range, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return v4range{}, err
	}
	if !p.Addr().Is4() {
		return v4range{}, fmt.Errorf("%s: only IPv4 subnets are supported by the benchmark", subnet)
	}
	if p.Masked() != p {
		return v4range{}, fmt.Errorf("%s: host bits set", subnet)
	}
	if p.Bits() > 30 {
		return v4range{}, fmt.Errorf("%s: too small to allocate from", subnet)
	}
	base := u32(p.Addr())
	size := uint32(1) << (32 - p.Bits())
	return v4range{subnet: p, start: base + 1, end: base + size - 2, gw: base + 1}, nil
}

// span is the number of addresses from rangeStart to rangeEnd inclusive (gateway included).
func (r v4range) span() int { return int(r.end-r.start) + 1 }

// usable is the number of addresses host-local can hand out: span minus the gateway.
func (r v4range) usable() int {
	if r.contains(r.gw) {
		return r.span() - 1
	}
	return r.span()
}

func (r v4range) contains(a uint32) bool { return a >= r.start && a <= r.end }

// order returns the usable addresses in host-local's walk order from an empty store:
// rangeStart upwards, skipping the gateway.
func (r v4range) order() []uint32 {
	out := make([]uint32, 0, r.usable())
	for a := r.start; ; a++ {
		if a != r.gw {
			out = append(out, a)
		}
		if a == r.end {
			return out
		}
	}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

// pool models the state of one host-local network with one range: who owns which address
// and the round-robin cursor (last_reserved_ip.0).
type pool struct {
	r       v4range
	owner   map[uint32]string // address -> "containerID\r\nifname"
	last    uint32
	hasLast bool
}

func newPool(r v4range) *pool { return &pool{r: r, owner: map[uint32]string{}} }

// next is host-local's RangeIter for a single range: the address the next dynamic ADD takes,
// and how many taken addresses the walk tried first. ok is false when the range is full.
// The walk starts after last_reserved_ip when that lies in the range (and tries it last),
// otherwise at rangeStart; it wraps at rangeEnd and skips the gateway.
func (p *pool) next() (a uint32, skipped int, ok bool) {
	n := uint32(p.r.span())
	fromLast := p.hasLast && p.r.contains(p.last)
	for k := uint32(0); k < n; k++ {
		var c uint32
		if fromLast {
			c = p.r.start + (p.last-p.r.start+1+k)%n
		} else {
			c = p.r.start + k
		}
		if c == p.r.gw {
			continue
		}
		if _, taken := p.owner[c]; !taken {
			return c, skipped, true
		}
		skipped++
	}
	return 0, skipped, false
}

// reserve records what host-local's Reserve does: the address file and the cursor.
func (p *pool) reserve(a uint32, id, ifname string) {
	p.owner[a] = id + lineBreak + ifname
	p.last, p.hasLast = a, true
}

// release is a DEL: the file goes, the cursor stays.
func (p *pool) release(a uint32) { delete(p.owner, a) }

// find returns the address whose file holds key ("id\r\nifname").
func (p *pool) find(key string) (uint32, bool) {
	for a, k := range p.owner {
		if k == key {
			return a, true
		}
	}
	return 0, false
}

func (p *pool) clone() *pool {
	q := &pool{r: p.r, owner: make(map[uint32]string, len(p.owner)), last: p.last, hasLast: p.hasLast}
	for k, v := range p.owner {
		q.owner[k] = v
	}
	return q
}

// containerID is a deterministic 64-hex-character ID, the shape runtimes use.
func containerID(seed string, i int) string {
	sum := sha256.Sum256([]byte(seed + "/" + strconv.Itoa(i)))
	return hex.EncodeToString(sum[:])
}

// layoutFilled is the state after n dynamic ADDs (containers seed/0 .. seed/n-1, eth0) into an
// empty store: the first n addresses in walk order, cursor on the last one.
func layoutFilled(r v4range, n int, seed string) (*pool, error) {
	if n > r.usable() {
		return nil, fmt.Errorf("%d allocations do not fit in %s (%d usable)", n, r.subnet, r.usable())
	}
	p := newPool(r)
	for i := 0; i < n; i++ {
		a, _, ok := p.next()
		if !ok {
			return nil, fmt.Errorf("range %s full after %d allocations", r.subnet, i)
		}
		p.reserve(a, containerID(seed, i), benchIfname)
	}
	return p, nil
}

// layoutOneHole fills every usable address except one, and puts the cursor just past the hole:
// last_reserved_ip = X and the only free address is X-1 (in walk order), so the next ADD has to
// walk all the way round the range to find it. X is the middle of the range, so the walk also
// wraps from rangeEnd to rangeStart.
func layoutOneHole(r v4range, seed string) (p *pool, hole, last uint32, err error) {
	ord := r.order()
	if len(ord) < 3 {
		return nil, 0, 0, fmt.Errorf("range %s too small", r.subnet)
	}
	xi := len(ord) / 2
	last, hole = ord[xi], ord[xi-1]
	p = newPool(r)
	for i, a := range ord {
		if a != hole {
			p.owner[a] = containerID(seed, i) + lineBreak + benchIfname
		}
	}
	p.last, p.hasLast = last, true
	return p, hole, last, nil
}

// writeStore lays down p as host-local's store under dataDir/net: one file per address named
// by the address, content "<id>\r\n<ifname>" with no newline, mode 0600; last_reserved_ip.0
// holding the cursor (no newline, 0600) when there is one; an empty lock file (host-local's
// file mutex creates it 0750). Directories are 0755 as host-local's MkdirAll makes them.
func writeStore(dataDir, net string, p *pool) error {
	return writeStores([]string{dataDir}, net, p)
}

// writeStores writes the same store into several data dirs at once (one per tool: identical
// starting states), spreading the file creations over the directories.
func writeStores(dataDirs []string, net string, p *pool) error {
	dirs := make([]string, len(dataDirs))
	for i, d := range dataDirs {
		dirs[i] = filepath.Join(d, net)
		if err := os.MkdirAll(dirs[i], 0o755); err != nil {
			return err
		}
	}
	addrs := make([]uint32, 0, len(p.owner))
	for a := range p.owner {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	err := parallelDo(len(addrs)*len(dirs), func(i int) error {
		a := addrs[i/len(dirs)]
		return writeNew(filepath.Join(dirs[i%len(dirs)], addr4(a).String()), []byte(p.owner[a]), 0o600)
	})
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		if p.hasLast {
			if err := writeNew(filepath.Join(dir, lastReservedFile), []byte(addr4(p.last).String()), 0o600); err != nil {
				return err
			}
		}
		if err := writeNew(filepath.Join(dir, lockFile), nil, 0o750); err != nil {
			return err
		}
	}
	return nil
}

// writeNew creates a file that must not exist yet, as host-local does: O_EXCL, perm under the
// process umask (which the plugins inherit too).
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parallelDo runs fn(0..n-1) on a few goroutines and returns the first error.
func parallelDo(n int, fn func(i int) error) error {
	return fanOut(context.Background(), n, min(2*runtime.NumCPU(), 8), fn)
}

// fanOut runs fn(0..n-1) on w goroutines and returns the first error. Once ctx ends it
// hands out no more work, and returns ctx's error if there was no other.
func fanOut(ctx context.Context, n, w int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// verifyStore checks that the store on disk is exactly what the model says host-local would
// have: the same set of address files with the same contents and mode 0600, and the cursor.
// Other entries (lock, a tool's own subdirectory) are ignored.
func verifyStore(dataDir, net string, p *pool) error {
	dir := filepath.Join(dataDir, net)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	seen := 0
	var errs []error
	for _, e := range ents {
		a, perr := netip.ParseAddr(e.Name())
		if perr != nil || !e.Type().IsRegular() {
			continue
		}
		if len(errs) > 5 {
			break
		}
		want, ok := p.owner[u32(a)]
		if !a.Is4() || !ok {
			errs = append(errs, fmt.Errorf("unexpected address file %s", e.Name()))
			continue
		}
		seen++
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if string(data) != want {
			errs = append(errs, fmt.Errorf("%s holds %q, want %q", e.Name(), data, want))
		}
		if info, err := e.Info(); err == nil && info.Mode().Perm() != 0o600 {
			errs = append(errs, fmt.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm()))
		}
	}
	if len(errs) == 0 && seen != len(p.owner) {
		errs = append(errs, fmt.Errorf("%d address files, want %d", seen, len(p.owner)))
	}
	if p.hasLast {
		data, err := os.ReadFile(filepath.Join(dir, lastReservedFile))
		switch {
		case err != nil:
			errs = append(errs, err)
		case string(data) != addr4(p.last).String():
			errs = append(errs, fmt.Errorf("%s holds %q, want %q", lastReservedFile, data, addr4(p.last)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("store %s differs from host-local's: %w", dir, errors.Join(errs...))
	}
	return nil
}
