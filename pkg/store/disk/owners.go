package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The owner table (idx.<gen>/owners) maps an attachment's key to the addresses it holds:
// one file, an open-addressing hash table of fixed 64-byte slots, read a 4 KiB block at a
// time and changed in place. One file rather than a file per owner: on ext4, creating an
// inode costs from 20 µs to over 1 ms (in block groups whose inode tables are still
// being initialised), and an ADD already creates one, the record.
//
// Header (block 0): magic, slot count (a power of two), used and dead (tombstone) slots.
// Slot: the key's hash (8 bytes; 0 = empty, 1 = tombstone), the address count, each
// address's family, then up to slotAddrs addresses of 16 bytes. An owner with more
// addresses than that (more range sets) keeps them in an overflow file x.<hash>.
//
// A lookup trusts the hash (SHA-256, 64 bits): a collision between two keys (odds about
// n²/2⁶⁵) could show one owner the other's addresses, so every destructive or refusing
// use of the answer is checked against the record itself.

const (
	ownersName  = "owners"
	ownersMagic = "LIPAMOT1"
	blockSize   = 4096
	slotSize    = 64
	slotAddrs   = 3
	slotsPerBlk = blockSize / slotSize
	minSlots    = 1024
	maxSlots    = 1 << 32
	hashEmpty   = 0
	hashDead    = 1
)

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
	blocks      map[uint64][]byte // block index (1-based; 0 is the header) -> bytes
	dirtyBlocks map[uint64]bool
	dirtyHeader bool
}

var errBadTable = errors.New("malformed owner table")

func openOwnerTable(idxfd int) (*ownerTable, error) {
	fd, err := unix.Openat(idxfd, ownersName, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	t := &ownerTable{fd: fd, blocks: map[uint64][]byte{}, dirtyBlocks: map[uint64]bool{}}
	h := make([]byte, 32)
	if n, err := unix.Pread(fd, h, 0); err != nil || n != len(h) || string(h[:8]) != ownersMagic {
		unix.Close(fd)
		return nil, errBadTable
	}
	le := binary.LittleEndian
	t.slots, t.used, t.dead = le.Uint64(h[8:]), le.Uint64(h[16:]), le.Uint64(h[24:])
	// maxSlots bounds the arithmetic below (and any table we would write: 2^32 slots is
	// 256 GiB); the counts only time growth, so a wrong one costs a rebuild, never a hang.
	if t.slots < minSlots || t.slots > maxSlots || t.slots&(t.slots-1) != 0 || t.used > t.slots || t.dead > t.slots || t.used+t.dead > t.slots {
		unix.Close(fd)
		return nil, errBadTable
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint64(st.Size) < blockSize+t.slots*slotSize {
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

func (t *ownerTable) block(i uint64) ([]byte, error) {
	if b, ok := t.blocks[i]; ok {
		return b, nil
	}
	b := make([]byte, blockSize)
	n, err := unix.Pread(t.fd, b, int64(i*blockSize))
	if err != nil {
		return nil, err
	}
	if n != blockSize {
		return nil, errBadTable
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

// get returns the addresses of key; overflow means they are in the overflow file.
func (t *ownerTable) get(key string) (addrs []netip.Addr, overflow bool, err error) {
	i, found, err := t.find(keyHash(key))
	if err != nil || !found {
		return nil, false, err
	}
	s, _, _ := t.slot(i)
	n := int(s[8])
	if n == 0xff {
		return nil, true, nil
	}
	if n > slotAddrs {
		return nil, false, errBadTable
	}
	for j := 0; j < n; j++ {
		a, ok := decodeAddr(s[9+j], s[16+16*j:32+16*j])
		if !ok {
			return nil, false, errBadTable
		}
		addrs = append(addrs, a)
	}
	return addrs, false, nil
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
// overflow file instead.
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
			s[8], overflow = 0xff, true
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

// full reports whether the table should be rebuilt larger (or cleaned of tombstones).
func (t *ownerTable) full() bool { return (t.used+t.dead+1)*2 > t.slots }

func (t *ownerTable) header() []byte {
	h := make([]byte, blockSize)
	copy(h, ownersMagic)
	le := binary.LittleEndian
	le.PutUint64(h[8:], t.slots)
	le.PutUint64(h[16:], t.used)
	le.PutUint64(h[24:], t.dead)
	return h
}

func (t *ownerTable) flush() error {
	for blk := range t.dirtyBlocks {
		if err := pwriteAll(t.fd, t.blocks[blk], int64(blk*blockSize)); err != nil {
			return err
		}
	}
	clear(t.dirtyBlocks)
	if t.dirtyHeader {
		if err := pwriteAll(t.fd, t.header()[:32], 0); err != nil {
			return err
		}
		t.dirtyHeader = false
	}
	return nil
}

// newTable is an empty in-memory table with room for n owners (at most a quarter full).
func newTable(n uint64) *ownerTable {
	slots := uint64(minSlots)
	for n*4 > slots {
		slots *= 2
	}
	t := &ownerTable{fd: -1, slots: slots, blocks: map[uint64][]byte{}, dirtyBlocks: map[uint64]bool{}}
	all := make([]byte, slots*slotSize)
	for b := uint64(0); b < slots/slotsPerBlk; b++ {
		t.blocks[1+b] = all[b*blockSize : (b+1)*blockSize]
	}
	return t
}

// save writes the whole in-memory table to name in idxfd and keeps it open there.
func (t *ownerTable) save(idxfd int, name string) error {
	fd, err := unix.Openat(idxfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	t.fd = fd
	buf := t.header()
	for b := uint64(1); b <= t.slots/slotsPerBlk; b++ {
		buf = append(buf, t.blocks[b]...)
	}
	if err := pwriteAll(fd, buf, 0); err != nil {
		t.close()
		return err
	}
	clear(t.dirtyBlocks)
	t.dirtyHeader = false
	return nil
}

// writeOwnerTable writes a whole new table for the given owners to name in idxfd, and
// returns it opened.
func writeOwnerTable(idxfd int, name string, owners map[string][]netip.Addr) (*ownerTable, error) {
	t := newTable(uint64(len(owners)))
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
