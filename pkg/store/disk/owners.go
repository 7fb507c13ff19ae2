package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// The owner table (idx.<gen>/owners) maps an attachment's key to the addresses it holds:
// one file, an open-addressing hash table of fixed 64-byte slots, read a 4 KiB block at a
// time and changed in place. One file rather than a file per owner: on ext4, creating an
// inode is the costliest file operation of a call (the more so in block groups whose
// inode tables are still being initialised), and an ADD already creates one, the record.
//
// Layout (format 2): block 0 is the header; blocks 1..D the D = slots/64 data blocks of
// slots; then the sum blocks, ceil(D/1024) of them.
//   - Header: magic, slot count (a power of two), used and dead (tombstone) slots, then
//     from byte 64 the checksum of each sum block (4 bytes each).
//   - Sum block j: the checksums of data blocks 1024j .. 1024j+1023 (4 bytes each).
//   - Slot: the key's hash (8 bytes; 0 = empty, 1 = tombstone), a count byte, each
//     address's family, then up to slotAddrs addresses of 16 bytes. Count 0xff: the owner
//     has more addresses than that (more range sets) and keeps them in an overflow file
//     x.<hash>, whose checksum is in bytes 12..15. Count 0xfe: not an owner but a bitmap
//     page (index.go), keyed by a hash of its name, its checksum in bytes 12..15.
//
// Checksums form a tree (a Merkle tree of depth three) whose root is in the state file:
// state -> header -> sum block -> data block -> bitmap page or overflow file. Every block
// read is checked against the checksum its parent holds, and the header against the
// state; a mismatch is errBadTable/errBadPage/errBadOwner, and the caller rebuilds the
// index from the records. Keeping a block's checksum in its parent rather than in the
// block itself is what catches a block rolled back to an older copy (a lost write, an
// old snapshot of the same generation): such a copy is self-consistent, but its checksum
// is not the one its parent holds now, because every write of a block rewrites its
// parent's entry, up to the state. (An old copy identical to the current content passes,
// and is harmless.) It also catches a block of another generation or another position,
// a zeroed or all-ones block, and any torn write of the index. The cost per call is one
// more 4 KiB read (the sum block) and write, and hashing the blocks read and written.
//
// The checksum is xxHash64 (truncated to 32 bits), not CRC-32C: hash/crc32's hardware
// CRC-32C builds 8 KiB of tables on first use, a set-up every (short-lived) process
// would pay; xxhash (assembly, no tables) has none.
//
// A lookup trusts the hash (SHA-256, 64 bits): a collision between two keys (odds about
// n²/2⁶⁵) could show one owner the other's addresses, so every destructive or refusing
// use of the answer is checked against the record itself.

const (
	ownersName  = "owners"
	ownersMagic = "LIPAMOT2"
	blockSize   = 4096
	slotSize    = 64
	slotAddrs   = 3
	slotsPerBlk = blockSize / slotSize
	sumsPerBlk  = blockSize / 4
	hdrSums     = 64 // offset of the sum blocks' checksums in the header
	// minSlots: one data block, so that a new network's table is three blocks (header,
	// data, sums): on a nearly full disk its first ADD needs little beside its record.
	// A table grows (doubles) when half full.
	minSlots = slotsPerBlk
	// maxSlots bounds the arithmetic and the header: 2^25 slots (16 million owners at
	// half load, a 2 GiB table) have 512 sum blocks, whose checksums fit the header.
	maxSlots  = 1 << 25
	hashEmpty = 0
	hashDead  = 1
	// count byte values that are not counts
	cntOverflow = 0xff
	cntPage     = 0xfe
)

// blockSum is the checksum of an index block (owner-table block, bitmap page, overflow file).
func blockSum(b []byte) uint32 { return uint32(xxhash.Sum64(b)) }

func keyHash(key string) uint64 {
	sum := sha256.Sum256([]byte(key))
	h := binary.LittleEndian.Uint64(sum[:8])
	if h <= hashDead {
		h += 2
	}
	return h
}

type ownerTable struct {
	fd          int
	slots       uint64
	used, dead  uint64
	hdr         []byte            // the header block, with the sum blocks' checksums
	root        uint32            // the header's checksum (the state holds it)
	blocks      map[uint64][]byte // data block index (1-based; 0 is the header) -> bytes
	sums        map[uint64][]byte // sum block index (0-based) -> bytes
	dirtyBlocks map[uint64]bool
	dirtySums   map[uint64]bool
	dirtyHeader bool
}

var errBadTable = errors.New("malformed owner table")

func (t *ownerTable) dataBlocks() uint64 { return t.slots / slotsPerBlk }
func (t *ownerTable) sumBlocks() uint64  { return (t.dataBlocks() + sumsPerBlk - 1) / sumsPerBlk }
func (t *ownerTable) fileBlocks() uint64 { return 1 + t.dataBlocks() + t.sumBlocks() }

// openOwnerTable opens the table and checks its header against root, the checksum the
// state holds. ro opens it read-only.
func openOwnerTable(idxfd int, root uint32, ro bool) (*ownerTable, error) {
	flags := unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if ro {
		flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	}
	fd, err := unix.Openat(idxfd, ownersName, flags, 0)
	if err != nil {
		return nil, err
	}
	t := &ownerTable{fd: fd, hdr: make([]byte, blockSize), root: root, blocks: map[uint64][]byte{}, sums: map[uint64][]byte{},
		dirtyBlocks: map[uint64]bool{}, dirtySums: map[uint64]bool{}}
	h := t.hdr
	if n, err := unix.Pread(fd, h, 0); err != nil || n != len(h) || blockSum(h) != root || string(h[:8]) != ownersMagic {
		unix.Close(fd)
		return nil, errBadTable
	}
	le := binary.LittleEndian
	t.slots, t.used, t.dead = le.Uint64(h[8:]), le.Uint64(h[16:]), le.Uint64(h[24:])
	// The counts only time growth, so a wrong one costs a rebuild, never a hang.
	if t.slots < minSlots || t.slots > maxSlots || t.slots&(t.slots-1) != 0 || t.used > t.slots || t.dead > t.slots || t.used+t.dead > t.slots {
		unix.Close(fd)
		return nil, errBadTable
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint64(st.Size) < t.fileBlocks()*blockSize {
		unix.Close(fd)
		return nil, errBadTable
	}
	return t, nil
}

func (t *ownerTable) close() {
	if t != nil && t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
}

func (t *ownerTable) readBlock(fileBlock uint64, want uint32) ([]byte, error) {
	b := make([]byte, blockSize)
	n, err := unix.Pread(t.fd, b, int64(fileBlock*blockSize))
	if err != nil {
		return nil, err
	}
	if n != blockSize || blockSum(b) != want {
		return nil, errBadTable
	}
	return b, nil
}

// sumBlock returns sum block j, checked against the header.
func (t *ownerTable) sumBlock(j uint64) ([]byte, error) {
	if b, ok := t.sums[j]; ok {
		return b, nil
	}
	b, err := t.readBlock(1+t.dataBlocks()+j, binary.LittleEndian.Uint32(t.hdr[hdrSums+4*j:]))
	if err != nil {
		return nil, err
	}
	t.sums[j] = b
	return b, nil
}

// block returns data block i (1-based), checked against its sum block.
func (t *ownerTable) block(i uint64) ([]byte, error) {
	if b, ok := t.blocks[i]; ok {
		return b, nil
	}
	sb, err := t.sumBlock((i - 1) / sumsPerBlk)
	if err != nil {
		return nil, err
	}
	b, err := t.readBlock(i, binary.LittleEndian.Uint32(sb[4*((i-1)%sumsPerBlk):]))
	if err != nil {
		return nil, err
	}
	t.blocks[i] = b
	return b, nil
}

// slot returns slot i's bytes (a view into its cached block).
func (t *ownerTable) slot(i uint64) ([]byte, uint64, error) {
	blk := 1 + i/slotsPerBlk
	b, err := t.block(blk)
	if err != nil {
		return nil, 0, err
	}
	off := (i % slotsPerBlk) * slotSize
	return b[off : off+slotSize], blk, nil
}

// find returns the slot holding h, or (when absent) the first free slot on its probe path.
func (t *ownerTable) find(h uint64) (idx uint64, found bool, err error) {
	free := ^uint64(0)
	for i, n := h&(t.slots-1), uint64(0); n < t.slots; i, n = (i+1)&(t.slots-1), n+1 {
		s, _, err := t.slot(i)
		if err != nil {
			return 0, false, err
		}
		switch sh := binary.LittleEndian.Uint64(s); sh {
		case h:
			return i, true, nil
		case hashEmpty:
			if free == ^uint64(0) {
				free = i
			}
			return free, false, nil
		case hashDead:
			if free == ^uint64(0) {
				free = i
			}
		}
	}
	if free == ^uint64(0) {
		return 0, false, errBadTable // full: cannot happen below the load limit
	}
	return free, false, nil
}

// get returns the addresses of key; overflow means they are in the overflow file, whose
// checksum is sum.
func (t *ownerTable) get(key string) (addrs []netip.Addr, overflow bool, sum uint32, err error) {
	i, found, err := t.find(keyHash(key))
	if err != nil || !found {
		return nil, false, 0, err
	}
	s, _, _ := t.slot(i)
	n := int(s[8])
	if n == cntOverflow {
		return nil, true, binary.LittleEndian.Uint32(s[12:]), nil
	}
	if n > slotAddrs {
		return nil, false, 0, errBadTable // a page's slot, or garbage
	}
	for j := 0; j < n; j++ {
		a, ok := decodeAddr(s[9+j], s[16+16*j:32+16*j])
		if !ok {
			return nil, false, 0, errBadTable
		}
		addrs = append(addrs, a)
	}
	return addrs, false, 0, nil
}

func decodeAddr(fam byte, b []byte) (netip.Addr, bool) {
	a := netip.AddrFrom16([16]byte(b))
	switch fam {
	case 4:
		return a.Unmap(), a.Is4In6()
	case 6:
		return a, true
	}
	return netip.Addr{}, false
}

// put stores key's addresses (none deletes it). It reports whether they must go to the
// overflow file instead (encodeOwner(key, addrs), whose checksum the slot keeps).
func (t *ownerTable) put(key string, addrs []netip.Addr) (overflow bool, err error) {
	h := keyHash(key)
	i, found, err := t.find(h)
	if err != nil {
		return false, err
	}
	if len(addrs) == 0 && !found {
		return false, nil
	}
	s, blk, err := t.slot(i)
	if err != nil {
		return false, err
	}
	if found && s[8] == cntPage {
		return false, errBadTable // a 64-bit hash collision with a page: rebuild
	}
	wasDead := binary.LittleEndian.Uint64(s) == hashDead
	clear(s)
	switch {
	case len(addrs) == 0:
		binary.LittleEndian.PutUint64(s, hashDead)
		if t.used > 0 {
			t.used--
		}
		t.dead++
	default:
		binary.LittleEndian.PutUint64(s, h)
		if !found {
			t.used++
			if wasDead && t.dead > 0 {
				t.dead--
			}
		}
		if len(addrs) > slotAddrs {
			s[8], overflow = cntOverflow, true
			binary.LittleEndian.PutUint32(s[12:], blockSum(encodeOwner(key, addrs)))
			break
		}
		s[8] = byte(len(addrs))
		for j, a := range addrs {
			s[9+j] = 6
			if a.Is4() {
				s[9+j] = 4
			}
			b := a.As16()
			copy(s[16+16*j:], b[:])
		}
	}
	t.dirtyBlocks[blk] = true
	t.dirtyHeader = true
	return overflow, nil
}

// pageHash keys a bitmap page's slot: SHA-256 of its name, another 64 bits of it than
// keyHash takes, so that no record's content can name a page's slot (but by a 64-bit
// collision, which put and get refuse).
func pageHash(k pageKey) uint64 {
	sum := sha256.Sum256([]byte(k.name()))
	h := binary.LittleEndian.Uint64(sum[8:16])
	if h <= hashDead {
		h += 2
	}
	return h
}

// getPage returns the checksum of page k; found is false when the page has no file (all
// its addresses are free).
func (t *ownerTable) getPage(k pageKey) (sum uint32, found bool, err error) {
	i, found, err := t.find(pageHash(k))
	if err != nil || !found {
		return 0, false, err
	}
	s, _, _ := t.slot(i)
	if s[8] != cntPage {
		return 0, false, errBadTable
	}
	return binary.LittleEndian.Uint32(s[12:]), true, nil
}

// putPage records the checksum of page k (pages are never deleted).
func (t *ownerTable) putPage(k pageKey, sum uint32) error {
	h := pageHash(k)
	i, found, err := t.find(h)
	if err != nil {
		return err
	}
	s, blk, err := t.slot(i)
	if err != nil {
		return err
	}
	if found && s[8] != cntPage {
		return errBadTable
	}
	if !found {
		wasDead := binary.LittleEndian.Uint64(s) == hashDead
		clear(s)
		binary.LittleEndian.PutUint64(s, h)
		s[8] = cntPage
		t.used++
		if wasDead && t.dead > 0 {
			t.dead--
		}
		t.dirtyHeader = true
	}
	binary.LittleEndian.PutUint32(s[12:], sum)
	t.dirtyBlocks[blk] = true
	return nil
}

// full reports whether the table should be rebuilt larger (or cleaned of tombstones).
func (t *ownerTable) full() bool { return (t.used+t.dead+1)*2 > t.slots }

// sealHeader writes the counts into the header and returns its checksum.
func (t *ownerTable) sealHeader() uint32 {
	h := t.hdr
	copy(h, ownersMagic)
	le := binary.LittleEndian
	le.PutUint64(h[8:], t.slots)
	le.PutUint64(h[16:], t.used)
	le.PutUint64(h[24:], t.dead)
	t.root = blockSum(h)
	return t.root
}

// flush writes the changed blocks bottom-up (data blocks, their sum blocks, the header),
// each after its checksum went into its parent; the caller then writes t.root into the
// state. A call killed part-way leaves blocks that do not match their parents or a header
// that does not match the state: the next call rebuilds.
func (t *ownerTable) flush() error {
	le := binary.LittleEndian
	for blk := range t.dirtyBlocks {
		j := (blk - 1) / sumsPerBlk
		sb, err := t.sumBlock(j)
		if err != nil {
			return err
		}
		le.PutUint32(sb[4*((blk-1)%sumsPerBlk):], blockSum(t.blocks[blk]))
		t.dirtySums[j] = true
		if err := pwriteAll(t.fd, t.blocks[blk], int64(blk*blockSize)); err != nil {
			return err
		}
	}
	clear(t.dirtyBlocks)
	for j := range t.dirtySums {
		le.PutUint32(t.hdr[hdrSums+4*j:], blockSum(t.sums[j]))
		if err := pwriteAll(t.fd, t.sums[j], int64((1+t.dataBlocks()+j)*blockSize)); err != nil {
			return err
		}
		t.dirtyHeader = true
	}
	clear(t.dirtySums)
	if t.dirtyHeader {
		t.sealHeader()
		if err := pwriteAll(t.fd, t.hdr, 0); err != nil {
			return err
		}
		t.dirtyHeader = false
	}
	return nil
}

// newTable is an empty in-memory table with room for n owners (at most a quarter full).
func newTable(n uint64) *ownerTable {
	slots := uint64(minSlots)
	for n*4 > slots && slots < maxSlots {
		slots *= 2
	}
	t := &ownerTable{fd: -1, slots: slots, hdr: make([]byte, blockSize), blocks: map[uint64][]byte{}, sums: map[uint64][]byte{},
		dirtyBlocks: map[uint64]bool{}, dirtySums: map[uint64]bool{}}
	all := make([]byte, (t.fileBlocks()-1)*blockSize)
	for b := uint64(0); b < t.dataBlocks(); b++ {
		t.blocks[1+b] = all[b*blockSize : (b+1)*blockSize]
	}
	for j := uint64(0); j < t.sumBlocks(); j++ {
		off := (t.dataBlocks() + j) * blockSize
		t.sums[j] = all[off : off+blockSize]
	}
	return t
}

// save writes the whole in-memory table to name in idxfd (one write, checksums computed)
// and keeps it open there.
func (t *ownerTable) save(idxfd int, name string) error {
	fd, err := unix.Openat(idxfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	t.fd = fd
	le := binary.LittleEndian
	for b := uint64(1); b <= t.dataBlocks(); b++ {
		le.PutUint32(t.sums[(b-1)/sumsPerBlk][4*((b-1)%sumsPerBlk):], blockSum(t.blocks[b]))
	}
	for j := uint64(0); j < t.sumBlocks(); j++ {
		le.PutUint32(t.hdr[hdrSums+4*j:], blockSum(t.sums[j]))
	}
	t.sealHeader()
	buf := make([]byte, 0, t.fileBlocks()*blockSize)
	buf = append(buf, t.hdr...)
	for b := uint64(1); b <= t.dataBlocks(); b++ {
		buf = append(buf, t.blocks[b]...)
	}
	for j := uint64(0); j < t.sumBlocks(); j++ {
		buf = append(buf, t.sums[j]...)
	}
	if err := pwriteAll(fd, buf, 0); err != nil {
		t.close()
		return err
	}
	clear(t.dirtyBlocks)
	clear(t.dirtySums)
	t.dirtyHeader = false
	return nil
}

// writeOwnerTable writes a whole new table for the given owners and the checksums of the
// given pages to name in idxfd, with the owners' overflow files, and returns it opened.
func writeOwnerTable(idxfd int, name string, owners map[string][]netip.Addr, pages map[pageKey]uint32) (*ownerTable, error) {
	t := newTable(uint64(len(owners) + len(pages)))
	var overflow []string
	for key, addrs := range owners {
		ov, err := t.put(key, addrs)
		if err != nil {
			return nil, err
		}
		if ov {
			overflow = append(overflow, key)
		}
	}
	for k, sum := range pages {
		if err := t.putPage(k, sum); err != nil {
			return nil, err
		}
	}
	if err := t.save(idxfd, name); err != nil {
		return nil, err
	}
	for _, key := range overflow {
		if err := writeOverflow(idxfd, key, owners[key]); err != nil {
			t.close()
			return nil, err
		}
	}
	return t, nil
}

func overflowName(key string) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], keyHash(key))
	const hex = "0123456789abcdef"
	out := []byte("x.")
	for _, c := range b {
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

func writeOverflow(idxfd int, key string, addrs []netip.Addr) error {
	return putFile(idxfd, overflowName(key), encodeOwner(key, addrs))
}

// grow writes the table anew, sized for its live entries (twice as many slots when it is
// full of them, the same when tombstones filled it), and renames it into place. Slots move
// by their hash alone: keys are not needed.
func (t *ownerTable) grow(idxfd int) (*ownerTable, error) {
	// Count the live slots rather than trust the header's count (a damaged header must
	// not size the new table too small).
	var live uint64
	for i := uint64(0); i < t.slots; i++ {
		s, _, err := t.slot(i)
		if err != nil {
			return nil, err
		}
		if binary.LittleEndian.Uint64(s) > hashDead {
			live++
		}
	}
	nt := newTable(live)
	if live*2 >= nt.slots {
		return nil, errBadTable // more live slots than any table may hold
	}
	nt.used = live
	for i := uint64(0); i < t.slots; i++ {
		s, _, _ := t.slot(i)
		h := binary.LittleEndian.Uint64(s)
		if h <= hashDead {
			continue
		}
		j := h & (nt.slots - 1)
		for {
			d, _, _ := nt.slot(j)
			if binary.LittleEndian.Uint64(d) == hashEmpty {
				copy(d, s)
				break
			}
			j = (j + 1) & (nt.slots - 1)
		}
	}
	const tmp = ownersName + ".new"
	if err := nt.save(idxfd, tmp); err != nil {
		return nil, err
	}
	if err := unix.Renameat(idxfd, tmp, idxfd, ownersName); err != nil {
		nt.close()
		return nil, err
	}
	t.close()
	return nt, nil
}
