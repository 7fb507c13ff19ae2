package disk_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		dir := t.TempDir()
		return func(t *testing.T) store.Store { return mustOpen(t, dir, "net") }
	})
}

func mustOpen(t *testing.T, dataDir, name string) *disk.Store {
	t.Helper()
	s, err := disk.Open(dataDir, name, disk.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func closeIt(t *testing.T, s *disk.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

var (
	a1 = store.Owner{ID: "c1", IfName: "eth0"}
	a2 = store.Owner{ID: "c2", IfName: "eth0"}
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// mustReserve reserves a for o, and fails the test unless that succeeded.
func mustReserve(t *testing.T, s *disk.Store, a string, o store.Owner) {
	t.Helper()
	if ok, err := s.Reserve(ip(a), o); !ok || err != nil {
		t.Fatalf("Reserve(%s) = %v, %v", a, ok, err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// diffFiles compares the regular files of a network directory (lock and index aside)
// with want, name -> content; any other file (a temporary one) is a difference.
func diffFiles(t *testing.T, dir string, want map[string]string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var d []string
	seen := map[string]bool{}
	for _, e := range ents {
		n := e.Name()
		if n == "lock" || n == ".local-ipam" {
			continue
		}
		seen[n] = true
		if _, err := netip.ParseAddr(n); err != nil && !strings.HasPrefix(n, "last_reserved_ip.") {
			d = append(d, "stray file "+n)
			continue
		}
		if got := read(t, filepath.Join(dir, n)); got != want[n] {
			if len(got) > 40 {
				got = got[:40] + "..."
			}
			d = append(d, fmt.Sprintf("%s = %q (%d bytes), want %d bytes", n, got, len(read(t, filepath.Join(dir, n))), len(want[n])))
		}
	}
	for n := range want {
		if !seen[n] {
			d = append(d, "missing "+n)
		}
	}
	return strings.Join(d, "; ")
}

// The records are host-local's, byte for byte.
func TestHostLocalFormat(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, "net")
	mustReserve(t, s, "10.0.0.2", a1)
	if err := s.SetLastReserved(0, ip("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, s, "2001:db8::5", a1)
	closeIt(t, s)
	net := filepath.Join(dir, "net")
	if got := read(t, filepath.Join(net, "10.0.0.2")); got != "c1\r\neth0" {
		t.Errorf("record = %q", got)
	}
	if got := read(t, filepath.Join(net, "2001:db8::5")); got != "c1\r\neth0" {
		t.Errorf("v6 record = %q", got)
	}
	if got := read(t, filepath.Join(net, "last_reserved_ip.0")); got != "10.0.0.2" {
		t.Errorf("last_reserved_ip.0 = %q", got)
	}
	if st, err := os.Stat(filepath.Join(net, "lock")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("lock file: %v", err)
	}
	// No temporary file is left.
	wantEntries(t, net, ".local-ipam", "10.0.0.2", "2001:db8::5", "last_reserved_ip.0", "lock")
}

// Someone else (host-local, a person with rm or an editor) changes the records: the next
// call sees it and rebuilds the index from the records.
func TestRebuildAfterForeignChange(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	s := mustOpen(t, dir, "net")
	for i := 2; i < 10; i++ {
		s.Reserve(ip(fmt.Sprintf("10.0.0.%d", i)), store.Owner{ID: fmt.Sprintf("c%d", i), IfName: "eth0"})
	}
	closeIt(t, s)

	// host-local adds one, a person removes one, an old host-local left a legacy record,
	// a crashed host-local left an empty one, and there is junk.
	os.WriteFile(filepath.Join(net, "10.0.0.20"), []byte("hl\r\neth0"), 0o600)
	os.Remove(filepath.Join(net, "10.0.0.5"))
	os.WriteFile(filepath.Join(net, "10.0.0.21"), []byte("legacy\n"), 0o600)
	os.WriteFile(filepath.Join(net, "10.0.0.22"), nil, 0o600)
	os.Mkdir(filepath.Join(net, "10.0.0.23"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(net, "10.0.0.24"))
	os.WriteFile(filepath.Join(net, "notes.txt"), []byte("c9\r\neth0"), 0o600)
	os.WriteFile(filepath.Join(net, "010.0.0.25"), []byte("x"), 0o600) // not canonical: not a record

	s = mustOpen(t, dir, "net")
	defer closeIt(t, s)
	if s.Rebuilds() != 1 {
		t.Fatalf("Rebuilds = %d, want 1", s.Rebuilds())
	}
	check := func(o store.Owner, want ...string) {
		t.Helper()
		got, err := s.Owned(o)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("Owned(%q) = %v, want %v", o.Key(), got, want)
		}
	}
	check(store.Owner{ID: "hl", IfName: "eth0"}, "10.0.0.20")
	check(store.Owner{ID: "c5", IfName: "eth0"})
	check(store.Owner{ID: "legacy"}, "10.0.0.21")
	check(store.Owner{ID: "c9", IfName: "eth0"}, "10.0.0.9")
	free := func(from, to string) string {
		a, ok, err := s.FirstFree(ip(from), ip(to))
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return "none"
		}
		return a.String()
	}
	if got := free("10.0.0.2", "10.0.0.254"); got != "10.0.0.5" {
		t.Errorf("first free = %s, want the removed 10.0.0.5", got)
	}
	if got := free("10.0.0.20", "10.0.0.254"); got != "10.0.0.22" {
		t.Errorf("first free from .20 = %s, want the empty record 10.0.0.22", got)
	}
	if got := free("10.0.0.23", "10.0.0.254"); got != "10.0.0.25" {
		t.Errorf("first free from .23 = %s, want .25 (a directory and a symlink block .23 and .24)", got)
	}
	// The empty record is taken over atomically; the symlink is never followed.
	mustReserve(t, s, "10.0.0.22", a1)
	if got := read(t, filepath.Join(net, "10.0.0.22")); got != "c1\r\neth0" {
		t.Errorf("empty record now holds %q", got)
	}
	if ok, _ := s.Reserve(ip("10.0.0.24"), a1); ok {
		t.Error("Reserve through a symlink succeeded")
	}
	if ok, _ := s.Release(ip("10.0.0.24"), store.Owner{ID: "x"}); ok {
		t.Error("Release of a symlink succeeded")
	}
	if _, err := os.Lstat(filepath.Join(net, "10.0.0.24")); err != nil {
		t.Error("the symlink was removed")
	}
}

// A call killed after changing the records but before writing the state leaves a
// state that no longer matches: the next call rebuilds, and the index agrees again.
func TestCrashBeforeCommitIsRepaired(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, "net")
	s.Reserve(ip("10.0.0.2"), a1)
	closeIt(t, s)

	s = mustOpen(t, dir, "net")
	if s.Rebuilds() != 0 {
		t.Fatalf("clean reopen rebuilt the index")
	}
	s.Reserve(ip("10.0.0.3"), a2)
	s.Release(ip("10.0.0.2"), a1)
	// Simulate kill -9: drop the store without Close (the lock goes with the process; here
	// we release it by hand).
	s.Abandon()

	s = mustOpen(t, dir, "net")
	defer closeIt(t, s)
	if s.Rebuilds() != 1 {
		t.Fatalf("Rebuilds = %d after an interrupted call, want 1", s.Rebuilds())
	}
	if got, _ := s.Owned(a2); fmt.Sprint(got) != "[10.0.0.3]" {
		t.Errorf("a2 owns %v", got)
	}
	if got, _ := s.Owned(a1); len(got) != 0 {
		t.Errorf("a1 owns %v", got)
	}
}

// The index can be deleted, or damaged, at will: it is rebuilt.
func TestIndexDamage(t *testing.T) {
	for name, damage := range map[string]func(meta string){
		"removed":       func(meta string) { os.RemoveAll(meta) },
		"state garbage": func(meta string) { os.WriteFile(filepath.Join(meta, "state"), []byte("garbage"), 0o600) },
		"state empty":   func(meta string) { os.WriteFile(filepath.Join(meta, "state"), nil, 0o600) },
		"index gone": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*"))
			for _, e := range ents {
				os.RemoveAll(e)
			}
		},
		"page truncated": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "p4-*"))
			for _, e := range ents {
				os.Truncate(e, 10)
			}
		},
		"owner table garbage": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "owners"))
			if len(ents) != 1 {
				panic("no owner table")
			}
			os.WriteFile(ents[0], []byte("\x00\x01junk"), 0o600)
		},
		// Damage that keeps the files' format (sizes, magic) valid: caught by checksums.
		"owner table zeroed after its header": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "owners"))
			fi, _ := os.Stat(ents[0])
			f, _ := os.OpenFile(ents[0], os.O_WRONLY, 0)
			f.WriteAt(make([]byte, fi.Size()-4096), 4096)
			f.Close()
		},
		"page all ones": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "p4-*"))
			f, _ := os.OpenFile(ents[0], os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xff}, 8192), 0)
			f.Close()
		},
		"one bit of the owner table's header": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "owners"))
			f, _ := os.OpenFile(ents[0], os.O_RDWR, 0)
			b := make([]byte, 1)
			f.ReadAt(b, 100)
			f.WriteAt([]byte{b[0] ^ 1}, 100)
			f.Close()
		},
		"owner table gone": func(meta string) {
			ents, _ := filepath.Glob(filepath.Join(meta, "idx.*", "owners"))
			for _, e := range ents {
				os.Remove(e)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, "net")
			s.Reserve(ip("10.0.0.2"), a1)
			s.Reserve(ip("10.0.0.3"), a2)
			closeIt(t, s)
			damage(filepath.Join(dir, "net", ".local-ipam"))
			// The very next call notices and answers right; so does the one after.
			for i := 0; i < 2; i++ {
				s = mustOpen(t, dir, "net")
				got1, err1 := s.Owned(a1)
				a, ok, err2 := s.FirstFree(ip("10.0.0.2"), ip("10.0.0.9"))
				closeIt(t, s)
				if err1 != nil || err2 != nil {
					t.Fatalf("call %d: %v, %v", i, err1, err2)
				}
				if fmt.Sprint(got1) != "[10.0.0.2]" {
					t.Errorf("call %d: after damage a1 owns %v", i, got1)
				}
				if !ok || a.String() != "10.0.0.4" {
					t.Errorf("call %d: after damage first free = %v %v", i, a, ok)
				}
			}
		})
	}
}

// A block rolled back to an older copy of the same generation (a lost write) is a
// self-consistent block: the checksum its parent holds catches it. Each file of the index
// (and each 4 KiB block of the owner table) is restored, alone, from a snapshot taken
// before a2's reservation; the next call must still see a2's address and not hand it out.
func TestIndexRollback(t *testing.T) {
	setup := func(t *testing.T) (dir string, snap map[string][]byte) {
		dir = t.TempDir()
		s := mustOpen(t, dir, "net")
		s.Reserve(ip("10.0.0.2"), a1)
		closeIt(t, s)
		snap = map[string][]byte{}
		files, _ := filepath.Glob(filepath.Join(dir, "net", ".local-ipam", "idx.*", "*"))
		for _, f := range files {
			snap[f], _ = os.ReadFile(f)
		}
		s = mustOpen(t, dir, "net")
		s.Reserve(ip("10.0.0.3"), a2)
		closeIt(t, s)
		return dir, snap
	}
	_, snap := setup(t)
	var cases []string
	for f, b := range snap {
		for off := 0; off < len(b); off += 4096 {
			cases = append(cases, fmt.Sprintf("%s@%d", filepath.Base(f), off))
		}
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			dir, snap := setup(t)
			var name string
			var off int
			fmt.Sscanf(strings.Replace(c, "@", " ", 1), "%s %d", &name, &off)
			for f, old := range snap {
				if filepath.Base(f) != name {
					continue
				}
				cur, _ := os.ReadFile(f)
				if bytes.Equal(cur[off:min(off+4096, len(cur))], old[off:min(off+4096, len(old))]) {
					t.Skip("block unchanged by the reservation")
				}
				fh, _ := os.OpenFile(f, os.O_WRONLY, 0)
				fh.WriteAt(old[off:min(off+4096, len(old))], int64(off))
				fh.Close()
			}
			s := mustOpen(t, dir, "net")
			got, err1 := s.Owned(a2)
			a, ok, err2 := s.FirstFree(ip("10.0.0.2"), ip("10.0.0.9"))
			closeIt(t, s)
			if err1 != nil || err2 != nil || fmt.Sprint(got) != "[10.0.0.3]" || !ok || a.String() != "10.0.0.4" {
				t.Errorf("after rolling back %s: a2 owns %v (%v); first free %v %v (%v)", c, got, err1, a, ok, err2)
			}
		})
	}
}

func TestRefusesSymlinkedNetworkDir(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(dir, "net"))
	_, err := disk.Open(dir, "net", disk.Options{})
	if cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Fatalf("Open through a symlinked network directory: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("wrote %d entries outside the data dir", len(ents))
	}
}

func TestRefusesSymlinkedLock(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim")
	os.MkdirAll(filepath.Join(dir, "net"), 0o755)
	os.Symlink(outside, filepath.Join(dir, "net", "lock"))
	_, err := disk.Open(dir, "net", disk.Options{})
	if cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Fatalf("Open with a symlinked lock: %v", err)
	}
	if _, err := os.Lstat(outside); err == nil {
		t.Error("created the symlink's target outside the data dir")
	}
}

func TestDataDirIsAFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "net"), []byte("x"), 0o600)
	_, err := disk.Open(dir, "net", disk.Options{})
	if err == nil || !strings.Contains(err.Error(), "not a directory") || cnierr.Code(err) != cnierr.StoreCorrupt {
		t.Fatalf("Open on a network directory that is a file: want code 104, got %v", err)
	}
	// The data dir itself a file: nothing of the store to refuse, an unusable path (5).
	_, err = disk.Open(filepath.Join(dir, "net"), "n2", disk.Options{})
	if err == nil || !strings.Contains(err.Error(), "not a directory") || cnierr.Code(err) != cnierr.IOFailure {
		t.Fatalf("Open under a data dir that is a file: want code 5, got %v", err)
	}
}

func TestBadNetworkNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := disk.Open(t.TempDir(), n, disk.Options{}); cnierr.Code(err) != cnierr.InvalidConfig {
			t.Errorf("Open(%q) = %v, want code 7", n, err)
		}
	}
}

// Release reads the record before removing it: a stale index never frees someone else's
// address.
func TestReleaseChecksTheRecord(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	s := mustOpen(t, dir, "net")
	s.Reserve(ip("10.0.0.2"), a1)
	closeIt(t, s)
	// Rewrite the record in place (no directory change, so the index is not rebuilt).
	f, _ := os.OpenFile(filepath.Join(net, "10.0.0.2"), os.O_WRONLY|os.O_TRUNC, 0)
	f.WriteString("other\r\neth0")
	f.Close()
	s = mustOpen(t, dir, "net")
	if ok, err := s.Release(ip("10.0.0.2"), a1); ok || err != nil {
		t.Fatalf("Release of a record that names someone else = %v, %v", ok, err)
	}
	closeIt(t, s)
	if got := read(t, filepath.Join(net, "10.0.0.2")); got != "other\r\neth0" {
		t.Fatalf("record now %q", got)
	}
	s = mustOpen(t, dir, "net")
	defer closeIt(t, s)
	if got, _ := s.Owned(store.Owner{ID: "other", IfName: "eth0"}); fmt.Sprint(got) != "[10.0.0.2]" {
		t.Errorf("index not repaired: other owns %v", got)
	}
}

// A record rewritten in place (no create, unlink or rename: no directory timestamp
// moves) escapes the index, as the limits in docs/RELIABILITY.md say; a GC that keeps it
// reads it, notices, and has the next call rebuild: the new owner's DEL then frees it.
func TestGCNoticesRecordEditedInPlace(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	s := mustOpen(t, dir, "net")
	for a, o := range map[string]store.Owner{"10.0.0.2": a1, "10.0.0.3": a2} {
		mustReserve(t, s, a, o)
	}
	closeIt(t, s)
	edited := store.Owner{ID: "c9", IfName: "eth0"}
	f, err := os.OpenFile(filepath.Join(net, "10.0.0.2"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(edited.Key()); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = mustOpen(t, dir, "net")
	if got, _ := s.Owned(edited); s.Rebuilds() != 0 || len(got) != 0 {
		t.Fatalf("the premise: the edit in place went unnoticed; but %s owns %v (rebuilds: %d)", edited.ID, got, s.Rebuilds())
	}
	removed, err := s.GC([]types.GCAttachment{{ContainerID: "c9", IfName: "eth0"}, {ContainerID: "c2", IfName: "eth0"}})
	if err != nil || len(removed) != 0 {
		t.Fatalf("GC keeping c9 and c2 removed %v, %v", removed, err)
	}
	closeIt(t, s)

	s = mustOpen(t, dir, "net")
	defer closeIt(t, s)
	if got, err := s.Owned(edited); err != nil || fmt.Sprint(got) != "[10.0.0.2]" {
		t.Fatalf("after the GC, %s owns %v, %v; want [10.0.0.2] (rebuilds: %d)", edited.ID, got, err, s.Rebuilds())
	}
	if got, _ := s.Owned(a1); len(got) != 0 {
		t.Errorf("after the GC, c1 still owns %v", got)
	}
	if ok, err := s.Release(ip("10.0.0.2"), edited); !ok || err != nil {
		t.Errorf("Release of c9's edited record = %v, %v", ok, err)
	}
}

// The owner table grows past its first size, keeps working through many deletions
// (tombstones), and owners with more addresses than a slot holds use an overflow file.
func TestOwnerTableGrowthAndOverflow(t *testing.T) {
	dir := t.TempDir()
	owner := func(i int) store.Owner { return store.Owner{ID: fmt.Sprintf("c%05d", i), IfName: "eth0"} }
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }
	const n = 3000
	for batch := 0; batch < n; batch += 500 {
		s := mustOpen(t, dir, "net")
		for i := batch; i < batch+500; i++ {
			if ok, err := s.Reserve(addr(i), owner(i)); !ok || err != nil {
				t.Fatalf("Reserve %d: %v %v", i, ok, err)
			}
		}
		closeIt(t, s)
	}
	// Release every other owner, in several calls: tombstones, then re-adds.
	for batch := 0; batch < n; batch += 1000 {
		s := mustOpen(t, dir, "net")
		for i := batch; i < batch+1000; i += 2 {
			if ok, err := s.Release(addr(i), owner(i)); !ok || err != nil {
				t.Fatalf("Release %d: %v %v", i, ok, err)
			}
		}
		closeIt(t, s)
	}
	big := store.Owner{ID: "multi", IfName: "eth0"}
	s := mustOpen(t, dir, "net")
	for j := 0; j < 5; j++ {
		if ok, err := s.Reserve(netip.AddrFrom4([4]byte{10, 9, 0, byte(j)}), big); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	closeIt(t, s)
	s = mustOpen(t, dir, "net")
	defer closeIt(t, s)
	if s.Rebuilds() != 0 {
		t.Fatalf("the index was rebuilt (%d): it should have kept up", s.Rebuilds())
	}
	for i := 0; i < n; i++ {
		got, err := s.Owned(owner(i))
		if err != nil {
			t.Fatal(err)
		}
		want := "[]"
		if i%2 == 1 {
			want = fmt.Sprint([]netip.Addr{addr(i)})
		}
		if fmt.Sprint(got) != want {
			t.Fatalf("owner %d holds %v, want %v", i, got, want)
		}
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "net", ".local-ipam", "idx.*", "owners"))
	if fi, err := os.Stat(tables[0]); err != nil || fi.Size() < 4096+8192*64 {
		t.Fatalf("owner table did not grow with 3000 owners: %v", fi.Size())
	}
	if got, _ := s.Owned(big); len(got) != 5 {
		t.Fatalf("multi holds %v", got)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "net", ".local-ipam", "idx.*", "x.*")); len(ents) != 1 {
		t.Fatalf("overflow files: %v", ents)
	}
	for j := 0; j < 5; j++ {
		if ok, err := s.Release(netip.AddrFrom4([4]byte{10, 9, 0, byte(j)}), big); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "net", ".local-ipam", "idx.*", "x.*")); len(ents) != 0 {
		t.Fatalf("overflow file left behind: %v", ents)
	}
}

// Records prepared before the lock (Options.Records) end up exactly as written ones: the
// owner's content at the address's name; a prepared file survives a taken address for the
// next try, is never used for another owner, and nothing of it is left behind.
func TestPreparedRecords(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, "net")
	if ok, _ := s.Reserve(ip("10.9.0.3"), a2); !ok {
		t.Fatal("setup Reserve failed")
	}
	closeIt(t, s)

	s, err := disk.Open(dir, "net", disk.Options{Records: 2, Owner: a1})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Reserve(ip("10.9.0.3"), a1); ok || err != nil {
		t.Fatalf("Reserve of a2's address = %v, %v", ok, err)
	}
	for _, a := range []string{"10.9.0.4", "fd00::4"} {
		mustReserve(t, s, a, a1)
	}
	// Both prepared files are used up: a third reservation is written the usual way.
	mustReserve(t, s, "10.9.0.5", a1)
	// Another owner never gets a1's prepared content.
	mustReserve(t, s, "10.9.0.6", a2)
	closeIt(t, s)
	want := map[string]string{
		"10.9.0.3": "c2\r\neth0", "10.9.0.4": "c1\r\neth0", "fd00::4": "c1\r\neth0",
		"10.9.0.5": "c1\r\neth0", "10.9.0.6": "c2\r\neth0",
	}
	net := filepath.Join(dir, "net")
	if diff := diffFiles(t, net, want); diff != "" {
		t.Errorf("records: %s", diff)
	}

	// A call that reserves nothing leaves nothing.
	s, err = disk.Open(dir, "net", disk.Options{Records: 3, Owner: a1})
	if err != nil {
		t.Fatal(err)
	}
	closeIt(t, s)
	if diff := diffFiles(t, net, want); diff != "" {
		t.Errorf("an ADD that reserved nothing changed the directory: %s", diff)
	}
}
