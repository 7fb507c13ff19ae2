package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/bitmap"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// The index lives in .local-ipam/idx.<gen>/ beside the records. It answers the two
// questions host-local answers by reading every record:
//   - which addresses are taken: a bitmap per 2^16-address page ("p4-<hex>"/"p6-<hex>",
//     8 KiB each; an absent page is all free), so a free-address search reads one page
//     for any IPv4 /16 and stays bounded in huge IPv6 ranges;
//   - what an owner holds: the owner table ("owners", owners.go), which also holds each
//     page's checksum: a page is read only when the table says it exists, and checked
//     against that checksum (see owners.go for the tree of checksums).
// It is a cache of the records, which stay the truth: see state.go for how a stale index
// is detected and rebuilt.

const (
	pageBits  = 16
	pageAddrs = 1 << pageBits
	pageBytes = pageAddrs / 8
)

type pageKey struct {
	v6   bool
	base ranges.Uint128 // the page's first address, low pageBits bits zero
}

func splitAddr(a netip.Addr) (pageKey, uint32) {
	x := ranges.ToUint128(a)
	base := ranges.Uint128{Hi: x.Hi, Lo: x.Lo &^ (pageAddrs - 1)}
	return pageKey{v6: !a.Is4(), base: base}, uint32(x.Lo & (pageAddrs - 1))
}

func (k pageKey) addr(bit uint32) netip.Addr {
	return ranges.Uint128{Hi: k.base.Hi, Lo: k.base.Lo | uint64(bit)}.Addr(k.v6)
}

// next is the following page's key, ok false at the end of the address space.
func (k pageKey) next() (pageKey, bool) {
	base, over := k.base.Add64(pageAddrs)
	if over || (!k.v6 && base.Lo > 0xffffffff) {
		return pageKey{}, false
	}
	return pageKey{v6: k.v6, base: base}, true
}

func (k pageKey) name() string {
	if !k.v6 {
		return fmt.Sprintf("p4-%08x", k.base.Lo)
	}
	return fmt.Sprintf("p6-%016x%016x", k.base.Hi, k.base.Lo)
}

// page is one bitmap block, kept as the bytes of its file: read and written as is.
type page struct {
	b      bitmap.Bitmap
	fd     int // -1 when the file does not exist yet
	exists bool
	dirty  bool
}

func newPage() *page { return &page{b: make(bitmap.Bitmap, pageBytes), fd: -1} }

func (p *page) set(i uint32, v bool) {
	if p.b.Set(i, v) {
		p.dirty = true
	}
}

// encodeOwner is an overflow file (owner table, owners.go): the quoted key, then one
// address a line.
func encodeOwner(key string, addrs []netip.Addr) []byte {
	var b strings.Builder
	b.WriteString(strconv.Quote(key))
	b.WriteByte('\n')
	for _, a := range addrs {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

var errBadOwner = errors.New("malformed owner index file")

func decodeOwner(key string, b []byte) ([]netip.Addr, error) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if k, err := strconv.Unquote(lines[0]); err != nil || k != key {
		return nil, errBadOwner
	}
	out := make([]netip.Addr, 0, len(lines)-1)
	for _, l := range lines[1:] {
		a, err := netip.ParseAddr(l)
		if err != nil {
			return nil, errBadOwner
		}
		out = append(out, a)
	}
	return out, nil
}

// loadPage reads page k, which the owner table says exists with checksum want. A page
// missing, short or not matching its checksum is errBadPage (or the open's error): the
// caller rebuilds the index.
func loadPage(idxfd int, k pageKey, want uint32, ro bool) (*page, error) {
	p := newPage()
	flags := unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if ro {
		flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	}
	fd, err := unix.Openat(idxfd, k.name(), flags, 0)
	if err != nil {
		return nil, err
	}
	n, err := unix.Pread(fd, p.b, 0)
	if err != nil || n != pageBytes || blockSum(p.b) != want {
		unix.Close(fd)
		if err == nil {
			err = errBadPage
		}
		return nil, err
	}
	p.fd, p.exists = fd, true
	return p, nil
}

var errBadPage = errors.New("index page damaged")

// flush writes the page if it changed, and returns its checksum (for the owner table).
func (p *page) flush(idxfd int, k pageKey) (sum uint32, err error) {
	if !p.dirty {
		return 0, nil
	}
	if p.fd < 0 {
		fd, err := unix.Openat(idxfd, k.name(), unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, err
		}
		p.fd = fd
	}
	sum = blockSum(p.b)
	if err := pwriteAll(p.fd, p.b, 0); err != nil {
		return 0, err
	}
	p.dirty = false
	p.exists = true
	return sum, nil
}

// owned returns the addresses key holds: from memory, else from the index (rebuilt from
// the records when found damaged). The slice is the index's own: copy it to change it.
func (s *Store) owned(key string) ([]netip.Addr, error) {
	if addrs, ok := s.owners[key]; ok || s.index.inMemory() {
		return addrs, nil
	}
	addrs, err := s.lookup(key)
	if errors.Is(err, errBadTable) || errors.Is(err, errBadOwner) {
		// A damaged index: rebuild from the records, which are the truth (also mid-call:
		// what this call already changed is in the records too).
		if err := s.rebuild(); err != nil {
			return nil, err
		}
		return s.owners[key], nil
	}
	if err != nil {
		return nil, cnierr.IO(err, "cannot read index of %s", s.dir)
	}
	s.owners[key] = addrs
	return addrs, nil
}

func (s *Store) lookup(key string) ([]netip.Addr, error) {
	if err := s.openTable(); err != nil {
		return nil, err
	}
	addrs, overflow, sum, err := s.table.get(key)
	if err != nil || !overflow {
		return addrs, err
	}
	s.overflow[key] = true
	b, ok, regular, err := readSmall(s.idxfd, overflowName(key), 1<<20)
	if denied(err) {
		return nil, errBadOwner // another user's file: rebuild, as for damage
	}
	if err != nil {
		return nil, err
	}
	if !ok || !regular || blockSum(b) != sum {
		return nil, errBadOwner
	}
	return decodeOwner(key, b)
}

// openTable opens the owner table, checked against the state's root checksum.
func (s *Store) openTable() error {
	if s.table != nil {
		return nil
	}
	t, err := openOwnerTable(s.idxfd, s.st.root, s.index.readOnly())
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) || denied(err) {
			err = errBadTable // missing, or not our file (another user's): rebuild
		}
		return err
	}
	s.table = t
	return nil
}

func (s *Store) setOwned(key string, addrs []netip.Addr) {
	s.owners[key] = addrs
	s.dirty[key] = true
}

func (s *Store) contains(key string, a netip.Addr) bool {
	return slices.Contains(s.owners[key], a)
}

// page returns bitmap page k: from memory, else from the index (an absent page is all
// free; a damaged one makes a rebuild).
func (s *Store) page(k pageKey) (*page, error) {
	if p, ok := s.pages[k]; ok {
		return p, nil
	}
	if s.index.inMemory() {
		p := newPage()
		s.pages[k] = p
		return p, nil
	}
	p, err := s.loadPage(k)
	if err != nil {
		// A damaged index (a checksum mismatch, a page missing, short, or not a regular
		// file): rebuild from the records. Every page with an address taken is then in
		// memory; any other is all free.
		if err := s.rebuild(); err != nil {
			return nil, err
		}
		if p, ok := s.pages[k]; ok {
			return p, nil
		}
		p = newPage()
	}
	s.pages[k] = p
	return p, nil
}

// loadPage reads page k if the owner table says it exists (else it is all free).
func (s *Store) loadPage(k pageKey) (*page, error) {
	if err := s.openTable(); err != nil {
		return nil, err
	}
	sum, found, err := s.table.getPage(k)
	if err != nil || !found {
		return newPage(), err
	}
	return loadPage(s.idxfd, k, sum, s.index.readOnly())
}

func (s *Store) setTaken(a netip.Addr, taken bool) error {
	k, bit := splitAddr(a)
	p, err := s.page(k)
	if err != nil {
		return err
	}
	p.set(bit, taken)
	return nil
}
