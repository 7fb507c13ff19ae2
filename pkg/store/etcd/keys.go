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
// "6-<29 hex>".

const (
	pageBits  = 12
	pageSize  = 1 << pageBits // addresses per page
	pageBytes = pageSize / 8  // 512 bytes a page
	pageMask  = pageSize - 1
)

// pageID is a page: its family and number.
type pageID struct {
	v6 bool
	n  ranges.Uint128
}

func pageOf(a netip.Addr) (pageID, int) {
	x := ranges.ToUint128(a)
	return pageID{v6: !a.Is4(), n: ranges.Uint128{Hi: x.Hi >> pageBits, Lo: x.Lo>>pageBits | x.Hi<<(64-pageBits)}}, int(x.Lo & pageMask)
}

// addr returns the address at offset off of page p.
func (p pageID) addr(off int) netip.Addr {
	hi := p.n.Hi<<pageBits | p.n.Lo>>(64-pageBits)
	lo := p.n.Lo<<pageBits | uint64(off)
	return ranges.Uint128{Hi: hi, Lo: lo}.Addr(p.v6)
}

func (p pageID) name() string {
	if !p.v6 {
		return fmt.Sprintf("4-%05x", p.n.Lo)
	}
	return fmt.Sprintf("6-%013x%016x", p.n.Hi, p.n.Lo)
}

func parsePageName(s string) (pageID, bool) {
	switch {
	case len(s) == 7 && strings.HasPrefix(s, "4-"):
		n, err := strconv.ParseUint(s[2:], 16, 64)
		return pageID{n: ranges.Uint128{Hi: 0, Lo: n}}, err == nil
	case len(s) == 31 && strings.HasPrefix(s, "6-"):
		hi, err1 := strconv.ParseUint(s[2:15], 16, 64)
		lo, err2 := strconv.ParseUint(s[15:], 16, 64)
		return pageID{v6: true, n: ranges.Uint128{Hi: hi, Lo: lo}}, err1 == nil && err2 == nil
	}
	return pageID{}, false
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
func (s *Store) pageKey(p pageID) string       { return s.base + "page/" + p.name() }
func (s *Store) fullKey(p pageID) string       { return s.base + "full/" + p.name() }
func (s *Store) lastKey(set int) string        { return s.base + "last/" + strconv.Itoa(set) }
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
}

func (pg *page) get(off int) bool {
	return pg.bits != nil && bitmap.Bitmap(pg.bits).Get(uint32(off))
}

// with returns a copy of the bitmap with bit off set to v.
func (pg *page) with(off int, v bool) []byte {
	b := make(bitmap.Bitmap, pageBytes)
	copy(b, pg.bits)
	b.Set(uint32(off), v)
	return b
}

func allOnes(b []byte) bool {
	return len(b) == pageBytes && bitmap.Bitmap(b).AllOnes()
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
