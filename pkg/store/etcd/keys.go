package etcd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/local-ipam/local-ipam/internal/bitmap"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// Key layout, per network N under prefix P (base = "P/N/"):
//
//	ip/<addr>                  "<containerID>\r\n<ifname>" (host-local's record): the reservation itself
//	owner/<sha256 of owner>/<addr>  index entry (JSON, see entry): Owned is one prefix get
//	node/<node>/<addr>         index entry: GC and FreeOnReboot read only their node's
//	page/<page>                bitmap of pageSize addresses, bit set = reserved; absent = all free
//	full/<page>                present iff the page is all ones: FirstFree skips full pages
//	                           with one keys-only range get instead of reading them
//	last/<set>                 round-robin cursor of range set <set> (an address)
//	boot/<node>                the node's record (node.go): the machine the name is bound
//	                           to and the boot ID FreeOnReboot last saw there
//
// The ip key and its two index entries are created and deleted in one transaction, which
// also rewrites the page (compared by ModRevision) and its full marker, so all of them
// agree at every revision. The three keys of one reservation share a CreateRevision, which
// names the reservation: a transaction that must act on exactly the reservation it read
// compares the ip key's CreateRevision with it.
//
// <addr> is fixed-width hex, so keys sort like addresses: "4-0a000005", "6-<32 hex>".
// <page> is the page number (address >> pageBits) in fixed-width hex: "4-<5 hex>",
// "6-<29 hex>". With node-affine blocks a page is a block, under other keys (blocks.go).

const (
	// pageBits is the size of a page without blocks: 4,096 addresses, 512 bytes.
	pageBits  = 12
	pageBytes = 1 << pageBits / 8
	// maxBlockBits: a block is at most a page of the layout without blocks, so that a
	// pool written without blocks is read block by block from its pages (legacy.go).
	maxBlockBits = pageBits
)

// pageID is a page: its family, size (bits: log2 of its addresses) and number.
type pageID struct {
	v6   bool
	bits uint8
	n    ranges.Uint128
}

func pageOf(a netip.Addr, bits int) (pageID, int) {
	x := ranges.ToUint128(a)
	return pageID{v6: !a.Is4(), bits: uint8(bits), n: ranges.Uint128{Hi: x.Hi >> bits, Lo: x.Lo>>bits | x.Hi<<(64-bits)}}, int(x.Lo & (1<<bits - 1))
}

// addr returns the address at offset off of page p.
func (p pageID) addr(off int) netip.Addr {
	b := uint(p.bits)
	hi := p.n.Hi<<b | p.n.Lo>>(64-b)
	lo := p.n.Lo<<b | uint64(off)
	return ranges.Uint128{Hi: hi, Lo: lo}.Addr(p.v6)
}

// last returns the last address of page p.
func (p pageID) last() netip.Addr { return p.addr(1<<p.bits - 1) }

func (p pageID) next() pageID { return pageID{v6: p.v6, bits: p.bits, n: p.n.Inc()} }

// nameWidth is the number of hex digits of a page number: fixed per family and size, so
// that keys sort like pages.
func nameWidth(v6 bool, bits int) int {
	if v6 {
		return (128 - bits + 3) / 4
	}
	return (32 - bits + 3) / 4
}

func (p pageID) name() string {
	full := fmt.Sprintf("%016x%016x", p.n.Hi, p.n.Lo)
	w := nameWidth(p.v6, int(p.bits))
	if !p.v6 {
		return "4-" + full[32-w:]
	}
	return "6-" + full[32-w:]
}

func parsePageName(s string, bits int) (pageID, bool) {
	if len(s) < 3 || (s[:2] != "4-" && s[:2] != "6-") {
		return pageID{}, false
	}
	v6 := s[:2] == "6-"
	h := s[2:]
	if len(h) != nameWidth(v6, bits) {
		return pageID{}, false
	}
	var hi, lo uint64
	var err1, err2 error
	if len(h) > 16 {
		hi, err1 = strconv.ParseUint(h[:len(h)-16], 16, 64)
		h = h[len(h)-16:]
	}
	lo, err2 = strconv.ParseUint(h, 16, 64)
	return pageID{v6: v6, bits: uint8(bits), n: ranges.Uint128{Hi: hi, Lo: lo}}, err1 == nil && err2 == nil
}

func addrName(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return "4-" + hex.EncodeToString(b[:])
	}
	b := a.As16()
	return "6-" + hex.EncodeToString(b[:])
}

func parseAddrName(s string) (netip.Addr, bool) {
	var n int
	switch {
	case strings.HasPrefix(s, "4-"):
		n = 4
	case strings.HasPrefix(s, "6-"):
		n = 16
	default:
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil || len(b) != n {
		return netip.Addr{}, false
	}
	a, _ := netip.AddrFromSlice(b)
	return a, true
}

// normAddr drops a zone: records name addresses without one.
func normAddr(a netip.Addr) netip.Addr { return a.WithZone("") }

func (s *Store) ipKey(a netip.Addr) string     { return s.base + "ip/" + addrName(a) }
func (s *Store) pageKey(p pageID) string       { return s.base + s.pagePre + p.name() }
func (s *Store) fullKey(p pageID) string       { return s.base + s.fullPre + p.name() }
func (s *Store) lastKey(set int) string        { return s.base + s.lastPre + strconv.Itoa(set) }
func (s *Store) bootKey() string               { return s.base + "boot/" + s.cfg.Node }
func (s *Store) nodePrefix(node string) string { return s.base + "node/" + node + "/" }
func (s *Store) nodeKey(node string, a netip.Addr) string {
	return s.nodePrefix(node) + addrName(a)
}

func (s *Store) ownerPrefix(key string) string {
	h := sha256.Sum256([]byte(key))
	return s.base + "owner/" + hex.EncodeToString(h[:]) + "/"
}

func (s *Store) ownerKey(key string, a netip.Addr) string { return s.ownerPrefix(key) + addrName(a) }

// entry is the value of both index keys of a reservation: everything Records and GC
// report, so neither has to read the ip keys.
type entry struct {
	Owner   string    `json:"owner"` // the owner key, as in the ip key
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// Token tells this process's reservation apart from an earlier one of the same owner,
	// when a transaction's outcome was lost with the connection (see Reserve).
	Token string `json:"token"`
}

func parseEntry(v []byte) (entry, bool) {
	var e entry
	if err := json.Unmarshal(v, &e); err != nil || e.Node == "" {
		return entry{}, false
	}
	return e, true
}

// prefixEnd is the first key after every key starting with p.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

// page is a cached bitmap page. bits is nil for an absent (all-free) page; rev is the
// page key's ModRevision when read (0 when absent), compared by the next transaction.
type page struct {
	bits []byte
	rev  int64
	// With blocks: known when the block key was read with the page (pageOps); owner is
	// the node holding the block ("" unclaimed), orev the block key's ModRevision.
	known bool
	owner string
	orev  int64
}

func (pg *page) get(off int) bool {
	return pg.bits != nil && bitmap.Bitmap(pg.bits).Get(uint32(off))
}

// with returns a copy of the bitmap (n bytes) with bit off set to v.
func (pg *page) with(off int, v bool, n int) []byte {
	b := make(bitmap.Bitmap, n)
	copy(b, pg.bits)
	b.Set(uint32(off), v)
	return b
}

// allOnes: b is a whole page (n bytes) of reserved addresses.
func allOnes(b []byte, n int) bool {
	return len(b) == n && bitmap.Bitmap(b).AllOnes()
}

func allZero(b []byte) bool { return bitmap.Bitmap(b).AllZero() }

// firstClear returns the lowest clear bit in [from, to] (offsets within the page).
func (pg *page) firstClear(from, to int) (int, bool) {
	if pg.bits == nil {
		return from, from <= to
	}
	off, ok := bitmap.Bitmap(pg.bits).FirstClear(uint32(from), uint32(to))
	return int(off), ok
}
