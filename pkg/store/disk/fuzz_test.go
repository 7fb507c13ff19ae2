package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/fuzzbytes"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// Fuzz targets for what the disk store parses: record names, its state file, owner
// overflow files and the owner hash table (well-formed, driven against a map model, and
// damaged).

// FuzzRecordName: isRecordName accepts exactly the canonical text of a plain address
// (what host-local and we write as a record's name: net.IP's String), and every address
// the store can reserve names a record it recognises.
func FuzzRecordName(f *testing.F) {
	for _, s := range []string{"10.1.2.3", "010.1.2.3", "10.1.2.03", "2001:db8::1", "2001:DB8::1", "2001:db8:0::1",
		"::ffff:10.1.2.3", "::ffff:a01:203", "fe80::1%eth0", "lock", "last_reserved_ip.0", ".local-ipam",
		".local-ipam.tmp", "::", "0.0.0.0", "1.2.3.4 ", "1.2.3.4\n", "::1.2.3.4", "fd00::1.2.3.4", "1:2:3:4:5:6:7:8"} {
		f.Add(s, []byte(s))
	}
	f.Fuzz(func(t *testing.T, name string, raw []byte) {
		a, ok := isRecordName(name)
		ip := net.ParseIP(name)
		canonical := ip != nil && ip.String() == name
		if ok != canonical {
			t.Fatalf("isRecordName(%q) = %v, %v; net.ParseIP gives %v", name, a, ok, ip)
		}
		if ok {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a.String() != name {
				t.Fatalf("isRecordName(%q) = %v", name, a)
			}
			if b, _ := netip.AddrFromSlice(ip); b.Unmap() != a {
				t.Fatalf("isRecordName(%q) = %s, net.ParseIP %s", name, a, ip)
			}
		}
		// The addresses the store reserves (plain IPv4 or IPv6) name records it reads back.
		var b netip.Addr
		switch {
		case len(raw) >= 16:
			b = netip.AddrFrom16([16]byte(raw[:16])).Unmap()
		case len(raw) >= 4:
			b = netip.AddrFrom4([4]byte(raw[:4]))
		default:
			return
		}
		if got, ok := isRecordName(b.String()); !ok || got != b {
			t.Fatalf("isRecordName(%q) = %v, %v; want %s", b.String(), got, ok, b)
		}
	})
}

// FuzzState: decodeState never panics; what it accepts is exactly what encode writes
// (encode(decode(b)) == b); every state round-trips; and a change to any one byte of an
// encoded state is noticed.
func FuzzState(f *testing.F) {
	good := state{gen: 7, ino: 1234, mtime: unix.Timespec{Sec: 1700000000, Nsec: 5}, ctime: unix.Timespec{Sec: 1700000001, Nsec: 999999999}, root: 0xdeadbeef}.encode()
	f.Add(good, uint64(7), uint64(1234), int64(1700000000), int64(5), int64(1700000001), int64(999999999), uint32(0xdeadbeef), uint16(10), byte(1))
	f.Add([]byte(stateMagic), uint64(0), uint64(0), int64(0), int64(0), int64(0), int64(0), uint32(0), uint16(0), byte(0x80))
	f.Add(append(bytes.Clone(good), 0), ^uint64(0), ^uint64(0), int64(-1), int64(-1), int64(-1<<63), int64(1<<63-1), ^uint32(0), uint16(67), byte(0xff))
	f.Add([]byte{}, uint64(1), uint64(2), int64(3), int64(4), int64(5), int64(6), uint32(7), uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, b []byte, gen, ino uint64, ms, mn, cs, cn int64, root uint32, at uint16, flip byte) {
		if st, ok := decodeState(b); ok {
			if enc := st.encode(); !bytes.Equal(enc, b) {
				t.Fatalf("decodeState(%x) = %+v, which encodes to %x", b, st, enc)
			}
		}
		st := state{gen: gen, ino: ino, mtime: unix.Timespec{Sec: ms, Nsec: mn}, ctime: unix.Timespec{Sec: cs, Nsec: cn}, root: root}
		enc := st.encode()
		if len(enc) != stateLen {
			t.Fatalf("encode is %d bytes", len(enc))
		}
		got, ok := decodeState(enc)
		if !ok || got != st {
			t.Fatalf("decodeState(encode(%+v)) = %+v, %v", st, got, ok)
		}
		if flip != 0 {
			enc[int(at)%len(enc)] ^= flip
			if got, ok := decodeState(enc); ok {
				t.Fatalf("byte %d changed (^%#x), yet decodeState accepts it: %+v", int(at)%len(enc), flip, got)
			}
		}
		if _, ok := decodeState(enc[:len(enc)-1]); ok {
			t.Fatalf("a short state accepted")
		}
	})
}

// addrsFrom derives plain addresses (IPv4, IPv6, IPv4-mapped IPv6) from the fuzzer's bytes.
func addrsFrom(raw []byte, max int) []netip.Addr {
	var out []netip.Addr
	for len(raw) > 0 && len(out) < max {
		tag := raw[0]
		raw = raw[1:]
		switch tag % 3 {
		case 0:
			var b [4]byte
			raw = raw[copy(b[:], raw):]
			out = append(out, netip.AddrFrom4(b))
		case 1:
			var b [16]byte
			raw = raw[copy(b[:], raw):]
			out = append(out, netip.AddrFrom16(b))
		case 2:
			var b [4]byte
			raw = raw[copy(b[:], raw):]
			out = append(out, netip.AddrFrom16(netip.AddrFrom4(b).As16()))
		}
	}
	return out
}

// FuzzOwnerCodec: decodeOwner(encodeOwner(key, addrs)) gives back the addresses for any
// key; decodeOwner on any bytes never panics, checks the key, and what it accepts
// re-encodes to something it decodes the same.
func FuzzOwnerCodec(f *testing.F) {
	f.Add("c1\r\neth0", []byte{0, 10, 0, 0, 1, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, encodeOwner("c1\r\neth0", []netip.Addr{netip.MustParseAddr("10.0.0.1")}))
	f.Add("", []byte{}, []byte("\"\"\n"))
	f.Add("k\"\\\x00\xff", []byte{2, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0}, []byte("\"k\"\n10.0.0.1\n\n"))
	f.Add("x", []byte{0, 1, 1, 1, 1, 0, 2, 2, 2, 2, 0, 3, 3, 3, 3, 0, 4, 4, 4, 4}, []byte("\"x\"\n::ffff:1.2.3.4\nfe80::1%eth0\n"))
	f.Fuzz(func(t *testing.T, key string, raw, b []byte) {
		addrs := addrsFrom(raw, 8)
		enc := encodeOwner(key, addrs)
		got, err := decodeOwner(key, enc)
		if err != nil || !slices.Equal(got, addrs) {
			t.Fatalf("decodeOwner(encodeOwner(%q, %v)) = %v, %v", key, addrs, got, err)
		}
		if other := key + "x"; true {
			if _, err := decodeOwner(other, enc); err == nil {
				t.Fatalf("decodeOwner(%q) accepts the file of %q", other, key)
			}
		}
		got, err = decodeOwner(key, b)
		if err != nil {
			if !errors.Is(err, errBadOwner) {
				t.Fatalf("decodeOwner(%q, %q): %v", key, b, err)
			}
			return
		}
		for _, a := range got {
			if !a.IsValid() {
				t.Fatalf("decodeOwner(%q, %q) = %v", key, b, got)
			}
		}
		again, err := decodeOwner(key, encodeOwner(key, got))
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("decodeOwner(%q, %q) = %v, which re-encodes to %v, %v", key, b, got, again, err)
		}
	})
}

func openIdx(t *testing.T) (string, int) {
	t.Helper()
	dir := t.TempDir()
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return dir, fd
}

// fuzzKey is key number n of the fuzzer's key space: mostly attachment keys as records
// hold them, some legacy (ID-only) keys and odd strings.
func fuzzKey(n uint16) string {
	switch n % 8 {
	case 6:
		return fmt.Sprintf("legacy-%d", n)
	case 7:
		return fmt.Sprintf("ö\x00%d\r\n\xff", n)
	}
	return fmt.Sprintf("%064x\r\neth%d", n, n%3)
}

// addrsFor are n addresses for key number k (n > slotAddrs goes to an overflow file).
func addrsFor(k uint16, n int) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			out = append(out, netip.AddrFrom4([4]byte{10, byte(i), byte(k >> 8), byte(k)}))
		} else {
			out = append(out, netip.AddrFrom16([16]byte{0xfd, byte(i), 14: byte(k >> 8), 15: byte(k)}))
		}
	}
	return out
}

// tableScan counts the live and dead slots of t.
func tableScan(t *testing.T, tb *ownerTable) (live, dead uint64) {
	t.Helper()
	for i := uint64(0); i < tb.slots; i++ {
		s, _, err := tb.slot(i)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		switch h := binary.LittleEndian.Uint64(s); {
		case h == hashDead:
			dead++
		case h > hashDead:
			live++
		}
	}
	return live, dead
}

// checkTable compares every key of the model (and a few absent ones) with the table.
func checkTable(t *testing.T, tb *ownerTable, model map[string][]netip.Addr, when string) {
	t.Helper()
	for key, want := range model {
		got, ov, _, err := tb.get(key)
		if err != nil {
			t.Fatalf("%s: get(%q): %v", when, key, err)
		}
		if len(want) > slotAddrs {
			if !ov || got != nil {
				t.Fatalf("%s: get(%q) = %v, %v; want overflow", when, key, got, ov)
			}
		} else if ov || !slices.Equal(got, want) {
			t.Fatalf("%s: get(%q) = %v, %v; want %v", when, key, got, ov, want)
		}
	}
	for _, key := range []string{"absent", "", fuzzKey(65535)} {
		if _, ok := model[key]; ok {
			continue
		}
		if got, ov, _, err := tb.get(key); err != nil || ov || got != nil {
			t.Fatalf("%s: get(%q) of an absent key = %v, %v, %v", when, key, got, ov, err)
		}
	}
	live, dead := tableScan(t, tb)
	if live != uint64(len(model)) || tb.used != live || tb.dead != dead {
		t.Fatalf("%s: header says %d used, %d dead; slots hold %d live, %d dead; model %d", when, tb.used, tb.dead, live, dead, len(model))
	}
	if tb.slots < minSlots || tb.slots&(tb.slots-1) != 0 || (tb.used+tb.dead)*2 > tb.slots+2 {
		t.Fatalf("%s: %d slots for %d used, %d dead", when, tb.slots, tb.used, tb.dead)
	}
}

// growWithin runs grow, failing the test if it does not return within a second (it takes
// microseconds on these tables; a probe loop that cannot find an empty slot spins for
// ever, and is left spinning).
func growWithin(t *testing.T, tb *ownerTable, idxfd int) (*ownerTable, error) {
	t.Helper()
	type res struct {
		nt  *ownerTable
		err error
		p   any
	}
	done := make(chan res, 1)
	go func() {
		var r res
		defer func() {
			r.p = recover()
			done <- r
		}()
		r.nt, r.err = tb.grow(idxfd)
	}()
	select {
	case r := <-done:
		if r.p != nil {
			t.Fatalf("grow panicked: %v (table: %d slots, %d used, %d dead)", r.p, tb.slots, tb.used, tb.dead)
		}
		return r.nt, r.err
	case <-time.After(time.Second):
		t.Fatalf("grow did not return in 1s (table: %d slots, %d used, %d dead)", tb.slots, tb.used, tb.dead)
		return nil, nil
	}
}

// FuzzOwnerTable drives a table built by writeOwnerTable with put, get, flush and reopen,
// and grow whenever writeOwners would grow it, against a map model: every key reads
// back what was put last (or the overflow mark), absent keys read nothing, the header's
// counts match the slots, and a table reopened from its file reads the same.
func FuzzOwnerTable(f *testing.F) {
	f.Add([]byte{3, 0, 1, 1, 0, 2, 2, 0, 3, 4})
	f.Add([]byte{0, 1, 0, 5, 2, 1, 0, 5, 0, 3, 0, 5, 4, 2})
	f.Add([]byte{10, 5, 200, 5, 200, 1, 0, 7, 3, 1, 0, 7, 0, 4, 5, 150, 6, 5, 200})
	f.Add([]byte{0, 5, 255, 5, 255, 5, 255, 6, 6, 5, 255, 1, 1, 1, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := fuzzbytes.New(ops)
		_, idxfd := openIdx(t)
		model := map[string][]netip.Addr{}
		for i, n := 0, int(s.Byte()%48); i < n; i++ {
			k := s.U16()
			if c := int(s.Byte() % 6); c > 0 {
				model[fuzzKey(k)] = addrsFor(k, c)
			}
		}
		tb, err := writeOwnerTable(idxfd, ownersName, model, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { tb.close() }()
		checkTable(t, tb, model, "written")
		grow := func() {
			if err := tb.flush(); err != nil {
				t.Fatal(err)
			}
			nt, err := growWithin(t, tb, idxfd)
			if err != nil {
				t.Fatalf("grow: %v", err)
			}
			tb = nt
		}
		batch := uint16(0)
		for steps := 0; !s.Empty() && steps < 100; steps++ {
			switch op := s.Byte() % 8; op {
			case 0, 1: // put one key: 0 addresses deletes
				k := s.U16() % 512
				n := int(s.Byte() % 6)
				if op == 1 {
					n = 0
				}
				key := fuzzKey(k)
				addrs := addrsFor(k, n)
				ov, err := tb.put(key, addrs)
				if err != nil {
					t.Fatalf("put(%q, %v): %v", key, addrs, err)
				}
				if ov != (n > slotAddrs) {
					t.Fatalf("put(%q, %d addresses) overflow %v", key, n, ov)
				}
				if n == 0 {
					delete(model, key)
				} else {
					model[key] = addrs
				}
			case 2: // get
				k := fuzzKey(s.U16() % 512)
				got, ov, _, err := tb.get(k)
				want, ok := model[k]
				if err != nil || ov != (len(want) > slotAddrs) || (!ov && !slices.Equal(got, want)) || (!ok && got != nil) {
					t.Fatalf("get(%q) = %v, %v, %v; want %v", k, got, ov, err, want)
				}
			case 3: // flush, reopen from the file
				if err := tb.flush(); err != nil {
					t.Fatal(err)
				}
				nt, err := openOwnerTable(idxfd, tb.root, false)
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				if nt.slots != tb.slots || nt.used != tb.used || nt.dead != tb.dead {
					t.Fatalf("reopened header %d/%d/%d, was %d/%d/%d", nt.slots, nt.used, nt.dead, tb.slots, tb.used, tb.dead)
				}
				tb.close()
				tb = nt
				checkTable(t, tb, model, "reopened")
			case 4: // a batch of new keys (to fill the table; up to 2,500 keys, 16,384 slots)
				for i, n := 0, int(s.Byte()); i < n && len(model) < 2500; i++ {
					k := 1024 + batch
					batch++
					key := fuzzKey(k)
					if _, err := tb.put(key, addrsFor(k, 1+i%3)); err != nil {
						t.Fatalf("put #%d of a batch: %v", i, err)
					}
					model[key] = addrsFor(k, 1+i%3)
					if tb.full() {
						break
					}
				}
			case 5: // a batch of deletes (to fill the table with tombstones)
				n := int(s.Byte())
				for key := range model {
					if n == 0 {
						break
					}
					n--
					if _, err := tb.put(key, nil); err != nil {
						t.Fatal(err)
					}
					delete(model, key)
				}
			case 6: // grow now
				grow()
				if tb.dead != 0 || tb.used*4 > tb.slots {
					t.Fatalf("grown table: %d slots, %d used, %d dead", tb.slots, tb.used, tb.dead)
				}
				checkTable(t, tb, model, "grown")
			case 7:
				checkTable(t, tb, model, "checked")
			}
			// As writeOwners does: grow once half full.
			if tb.full() {
				grow()
				checkTable(t, tb, model, "grown when full")
			}
		}
		checkTable(t, tb, model, "at the end")
		if err := tb.flush(); err != nil {
			t.Fatal(err)
		}
		nt, err := openOwnerTable(idxfd, tb.root, false)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer nt.close()
		checkTable(t, nt, model, "reopened at the end")
	})
}

// FuzzOwnerTableFile opens damaged owner tables: a file of the fuzzer's bytes (a header,
// block contents, optionally slots filled with live hashes, and a size). openOwnerTable
// must refuse it cleanly or accept only a header consistent with the file; get and put
// on an accepted table never panic and stay consistent (a key reads back what put
// stored); grow, when the table is full, returns (no endless probe loop) and keeps what
// get returned.
func FuzzOwnerTableFile(f *testing.F) {
	// Seeds: a real table's header and first block, then variations.
	dir := f.TempDir()
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		f.Fatal(err)
	}
	owners := map[string][]netip.Addr{}
	for k := uint16(0); k < 20; k++ {
		owners[fuzzKey(k)] = addrsFor(k, 1+int(k)%5)
	}
	tb, err := writeOwnerTable(fd, ownersName, owners, nil)
	if err != nil {
		f.Fatal(err)
	}
	tb.close()
	unix.Close(fd)
	real, err := os.ReadFile(filepath.Join(dir, ownersName))
	if err != nil {
		f.Fatal(err)
	}
	hdr := real[:32]
	var body []byte
	for i := blockSize; i < len(real); i += slotSize {
		if binary.LittleEndian.Uint64(real[i:]) > hashDead {
			body = append(body, real[i:i+slotSize]...)
		}
	}
	hdrWith := func(slots, used, dead uint64) []byte {
		h := bytes.Clone(hdr)
		binary.LittleEndian.PutUint64(h[8:], slots)
		binary.LittleEndian.PutUint64(h[16:], used)
		binary.LittleEndian.PutUint64(h[24:], dead)
		return h
	}
	size := uint32(len(real))
	f.Add(hdr, real[blockSize:blockSize+blockSize], size, uint16(0), []byte{0, 1, 2, 3})
	f.Add(hdr, body, size, uint16(0), []byte{1, 2, 3, 4, 5, 6})
	f.Add(hdrWith(1024, 20, 500), body, size, uint16(0), []byte{0, 0, 1, 0, 2})
	f.Add(hdrWith(2048, 40, 0), body, uint32(blockSize+2048*slotSize), uint16(600), []byte{0, 0, 7})
	f.Add([]byte(ownersMagic), []byte{}, uint32(0), uint16(0), []byte{})
	f.Add(hdr, body, size, uint16(0x8000), []byte{0, 1, 2, 3})
	f.Add([]byte("garbage"), body, size, uint16(3), []byte{1})
	f.Fuzz(func(t *testing.T, hdr, body []byte, size uint32, fill uint16, ops []byte) {
		if len(hdr) > blockSize || len(body) > 1<<16 {
			return
		}
		content := make([]byte, blockSize, blockSize+len(body))
		copy(content, hdr)
		content = append(content, body...)
		if len(hdr) < 32 { // a short file
			content = content[:len(hdr)]
		}
		size %= 1 << 18
		if int(size) > len(content) {
			content = append(content, make([]byte, int(size)-len(content))...)
		}
		// fill: slots with live hashes, from slot 0, where the bytes left them empty.
		for i := 0; i < int(fill)%4096; i++ {
			off := blockSize + i*slotSize
			if off+slotSize > len(content) {
				break
			}
			if binary.LittleEndian.Uint64(content[off:]) == hashEmpty {
				binary.LittleEndian.PutUint64(content[off:], uint64(i)*0x9e3779b97f4a7c15|2)
				content[off+8] = 1
				content[off+9] = 4
				a16 := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}).As16()
				copy(content[off+16:], a16[:])
			}
		}
		// Sealed (unless fill's top bit says not): the checksums made right for the
		// fuzzer's content, so that the structural checks behind them are exercised.
		// Unsealed, any damaged block must be refused (errBadTable), never trusted.
		var root uint32
		if fill&0x8000 == 0 {
			root = sealTableFile(content)
		} else if len(content) >= blockSize {
			root = blockSum(content[:blockSize])
		}
		dir, idxfd := openIdx(t)
		if err := os.WriteFile(filepath.Join(dir, ownersName), content, 0o600); err != nil {
			t.Fatal(err)
		}
		tb, err := openOwnerTable(idxfd, root, false)
		if err != nil {
			if !errors.Is(err, errBadTable) {
				t.Fatalf("openOwnerTable: %v", err)
			}
			return
		}
		defer func() { tb.close() }()
		// An accepted header agrees with the file, in exact arithmetic.
		bigU := func(v uint64) *big.Int { return new(big.Int).SetUint64(v) }
		need := new(big.Int).Mul(bigU(tb.fileBlocks()), bigU(blockSize))
		if new(big.Int).Add(bigU(tb.used), bigU(tb.dead)).Cmp(bigU(tb.slots)) > 0 || need.Cmp(big.NewInt(int64(len(content)))) > 0 {
			t.Fatalf("openOwnerTable accepts a header of %d slots, %d used, %d dead for a file of %d bytes (needs %s)",
				tb.slots, tb.used, tb.dead, len(content), need)
		}
		s := fuzzbytes.New(ops)
		model := map[string][]netip.Addr{} // the addresses we put, that must read back
		seen := map[string][]netip.Addr{}  // what get said, since the last put, of other keys
		for steps := 0; !s.Empty() && steps < 64; steps++ {
			k := s.U16() % 64
			key := fuzzKey(k)
			switch s.Byte() % 3 {
			case 0:
				n := int(s.Byte() % 5)
				ov, err := tb.put(key, addrsFor(k, n))
				if err != nil {
					if !errors.Is(err, errBadTable) {
						t.Fatalf("put: %v", err)
					}
					delete(model, key)
					continue
				}
				if ov != (n > slotAddrs) {
					t.Fatalf("put(%q, %d addresses) overflow %v", key, n, ov)
				}
				// A put changes probe paths: what get said of other keys may change (a
				// damaged file can hold a slot past an empty one, or a key twice; after
				// a delete, get may find the key's second slot).
				clear(seen)
				if n == 0 {
					delete(model, key)
				} else {
					model[key] = addrsFor(k, n)
				}
			default:
				got, ov, _, err := tb.get(key)
				if err != nil {
					if !errors.Is(err, errBadTable) {
						t.Fatalf("get: %v", err)
					}
					continue
				}
				if want, ok := model[key]; ok {
					if ov != (len(want) > slotAddrs) || (!ov && !slices.Equal(got, want)) {
						t.Fatalf("get(%q) = %v, %v after put %v", key, got, ov, want)
					}
				} else {
					for _, a := range got {
						if !a.IsValid() || a.Zone() != "" {
							t.Fatalf("get(%q) = %v", key, got)
						}
					}
					if prev, ok := seen[key]; ok && !slices.Equal(prev, got) {
						t.Fatalf("get(%q) = %v, then %v", key, prev, got)
					}
					seen[key] = got
				}
			}
		}
		if err := tb.flush(); err != nil {
			if !errors.Is(err, errBadTable) {
				t.Fatalf("flush: %v", err)
			}
			return
		}
		if !tb.full() {
			return
		}
		// Two live slots with one hash (only a damaged file has them) may swap places in
		// grow; what get returns for them is not checked after it.
		dup := false
		hashes := map[uint64]bool{}
		for i := uint64(0); i < tb.slots; i++ {
			sl, _, err := tb.slot(i)
			if err != nil {
				break
			}
			if h := binary.LittleEndian.Uint64(sl); h > hashDead {
				dup = dup || hashes[h]
				hashes[h] = true
			}
		}
		nt, err := growWithin(t, tb, idxfd)
		if err != nil {
			return // refusing to grow a damaged table is fine
		}
		tb = nt
		if dup {
			return
		}
		for key, want := range model {
			got, ov, _, err := tb.get(key)
			if err != nil || ov != (len(want) > slotAddrs) || (!ov && !slices.Equal(got, want)) {
				t.Fatalf("after grow, get(%q) = %v, %v, %v; want %v", key, got, ov, err, want)
			}
		}
	})
}

// sealTableFile makes the checksums of an owner table file right, as far as its header's
// slot count is plausible and the file long enough, and returns the header's checksum.
func sealTableFile(content []byte) uint32 {
	if len(content) < blockSize {
		return 0
	}
	le := binary.LittleEndian
	slots := le.Uint64(content[8:])
	if slots >= minSlots && slots <= maxSlots && slots&(slots-1) == 0 {
		t := &ownerTable{slots: slots}
		if uint64(len(content)) >= t.fileBlocks()*blockSize {
			d := t.dataBlocks()
			for b := uint64(1); b <= d; b++ {
				sb := content[(1+d+(b-1)/sumsPerBlk)*blockSize:]
				le.PutUint32(sb[4*((b-1)%sumsPerBlk):], blockSum(content[b*blockSize:(b+1)*blockSize]))
			}
			for j := uint64(0); j < t.sumBlocks(); j++ {
				off := (1 + d + j) * blockSize
				le.PutUint32(content[hdrSums+4*j:], blockSum(content[off:off+blockSize]))
			}
		}
	}
	return blockSum(content[:blockSize])
}

// FuzzPage: the bitmap pages. splitAddr and pageKey.addr are inverses, next steps one
// page and stops at the end of the family's space; FirstClear finds the lowest clear bit
// of [from, to] (brute force model); set/get/dirty agree; a page written by flush loads
// back the same, and a short page file is refused.
func FuzzPage(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 1}, uint16(0), uint16(65535), []byte{1, 0, 0, 0x40, 0})
	f.Add([]byte{1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, uint16(63), uint16(64), []byte{1, 0, 0, 0, 255, 0, 0, 0, 1})
	f.Add([]byte{0, 255, 255, 255, 255}, uint16(65535), uint16(65535), []byte{0, 255, 255})
	f.Add([]byte{1, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}, uint16(100), uint16(9), []byte{})
	f.Fuzz(func(t *testing.T, raw []byte, from, to uint16, ops []byte) {
		s := fuzzbytes.New(raw)
		var a netip.Addr
		if s.Byte()&1 == 0 {
			a = netip.AddrFrom4([4]byte{s.Byte(), s.Byte(), s.Byte(), s.Byte()})
		} else {
			var b [16]byte
			for i := range b {
				b[i] = s.Byte()
			}
			a = netip.AddrFrom16(b)
		}
		k, bit := splitAddr(a)
		if got := k.addr(bit); got != a {
			t.Fatalf("splitAddr(%s) = %+v, %d, which is %s", a, k, bit, got)
		}
		if k.base.Lo&(pageAddrs-1) != 0 || k.v6 == a.Is4() {
			t.Fatalf("splitAddr(%s) = %+v", a, k)
		}
		first, last := k.addr(0), k.addr(pageAddrs-1)
		if first.Compare(a) > 0 || last.Compare(a) < 0 || first.BitLen() != a.BitLen() {
			t.Fatalf("page %+v of %s spans %s-%s", k, a, first, last)
		}
		nk, ok := k.next()
		wantOK := last.Next().IsValid()
		if ok != wantOK {
			t.Fatalf("next of page %+v (ending %s): %v", k, last, ok)
		}
		if ok && nk.addr(0) != last.Next() {
			t.Fatalf("next of page %+v = %+v, starting %s, want %s", k, nk, nk.addr(0), last.Next())
		}
		if wantName := fmt.Sprintf("p4-%08x", k.base.Lo); !k.v6 && k.name() != wantName {
			t.Fatalf("name %q, want %q", k.name(), wantName)
		}

		// the page's bits: single bits and runs from ops
		p := newPage()
		bits := make([]bool, pageAddrs)
		o := fuzzbytes.New(ops)
		for !o.Empty() {
			switch c := o.Byte(); c % 3 {
			case 0:
				i := uint32(o.U16())
				p.set(i, true)
				bits[i] = true
			case 1: // a run of set bits
				i, n := uint32(o.U16()), uint32(o.U16())%2048
				for j := i; j < i+n && j < pageAddrs; j++ {
					p.set(j, true)
					bits[j] = true
				}
			case 2:
				i := uint32(o.U16())
				was := p.b.Get(i)
				p.dirty = false
				p.set(i, false)
				bits[i] = false
				if p.dirty != was {
					t.Fatalf("clearing bit %d (was %v) left dirty %v", i, was, p.dirty)
				}
			}
		}
		for i := range bits {
			if p.b.Get(uint32(i)) != bits[i] {
				t.Fatalf("bit %d = %v, want %v", i, p.b.Get(uint32(i)), bits[i])
			}
		}
		got, gok := p.b.FirstClear(uint32(from), uint32(to))
		want, wok := uint32(0), false
		for i := uint32(from); i <= uint32(to); i++ {
			if !bits[i] {
				want, wok = i, true
				break
			}
		}
		if got != want || gok != wok {
			t.Fatalf("FirstClear(%d, %d) = %d, %v; want %d, %v", from, to, got, gok, want, wok)
		}

		// write and load back
		_, idxfd := openIdx(t)
		p.dirty = true
		sum, err := p.flush(idxfd, k)
		if err != nil {
			t.Fatal(err)
		}
		if sum != blockSum(p.b) {
			t.Fatalf("flush returned checksum %#x, want %#x", sum, blockSum(p.b))
		}
		q, err := loadPage(idxfd, k, sum, false)
		if err != nil || !bytes.Equal(q.b, p.b) || !q.exists {
			t.Fatalf("loadPage after flush: %v", err)
		}
		unix.Close(q.fd)
		// Any one bit flipped (a damaged page that keeps its format) is refused, and so is
		// the page against a checksum of an older content (a rolled-back page).
		flipped := bytes.Clone(p.b)
		flipped[int(to)%pageBytes] ^= 1 << (from % 8)
		if err := pwriteAll(p.fd, flipped, 0); err != nil {
			t.Fatal(err)
		}
		if q, err := loadPage(idxfd, k, sum, false); err == nil {
			unix.Close(q.fd)
			t.Fatalf("loadPage accepts a page with a bit flipped")
		}
		if q, err := loadPage(idxfd, k, blockSum(flipped), false); err != nil {
			t.Fatalf("loadPage of the flipped page against its own checksum: %v", err)
		} else {
			unix.Close(q.fd)
		}
		unix.Close(p.fd)
		if err := putFile(idxfd, k.name(), p.b[:int(from)%pageBytes]); err != nil {
			t.Fatal(err)
		}
		if q, err := loadPage(idxfd, k, blockSum(p.b[:int(from)%pageBytes]), false); err == nil {
			unix.Close(q.fd)
			t.Fatalf("loadPage accepts a page of %d bytes", int(from)%pageBytes)
		}
		absent := pageKey{v6: true, base: ranges.Uint128{Hi: 1}}
		if absent == k {
			absent.base.Hi = 2
		}
		if q, err := loadPage(idxfd, absent, 0, false); err == nil {
			unix.Close(q.fd)
			t.Fatalf("loadPage of an absent page: %+v", q)
		}
	})
}
