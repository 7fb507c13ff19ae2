package disk

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/mounttest"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// The index modes a call goes through, on real file systems, and what each one answers:
// current and rebuilt on disk; read-only, current or rebuilt in memory; a rebuild whose
// write fails on a full disk (indexMemWrote); the index dropped for a record's space
// (indexDropped). Every mode answers Owned and FirstFree from the records' truth.

var (
	modeA = store.Owner{ID: "a", IfName: "eth0"}
	modeF = store.Owner{ID: "foreign", IfName: "eth0"}
)

func remount(t *testing.T, mnt string, flags uintptr) {
	t.Helper()
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|flags, ""); err != nil {
		t.Fatalf("remount %s: %v", mnt, err)
	}
}

func openMode(t *testing.T, dataDir string, want indexMode) *Store {
	t.Helper()
	s, err := Open(dataDir, "net", Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s.index != want {
		s.release()
		t.Fatalf("Open: mode %d, want %d", s.index, want)
	}
	return s
}

func wantOwned(t *testing.T, s *Store, o store.Owner, want ...string) {
	t.Helper()
	got, err := s.Owned(o)
	if err != nil {
		t.Fatalf("Owned(%s): %v", o.ID, err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) && (len(got) > 0 || len(want) > 0) {
		t.Errorf("mode %d: Owned(%s) = %v, want %v", s.index, o.ID, got, want)
	}
}

func wantFirstFree(t *testing.T, s *Store, want string) {
	t.Helper()
	a, ok, err := s.FirstFree(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.254"))
	if err != nil || !ok || a.String() != want {
		t.Errorf("mode %d: FirstFree = %v, %v, %v; want %s", s.index, a, ok, err, want)
	}
}

func reserve(t *testing.T, s *Store, a string, o store.Owner) {
	t.Helper()
	if ok, err := s.Reserve(netip.MustParseAddr(a), o); !ok || err != nil {
		t.Fatalf("mode %d: Reserve(%s) = %v, %v", s.index, a, ok, err)
	}
}

func commit(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func foreignRecord(t *testing.T, dataDir, a string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dataDir, "net", a), []byte(modeF.Key()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func generations(t *testing.T, dataDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dataDir, "net", metaName, idxPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIndexModeOnDisk(t *testing.T) {
	dir := t.TempDir()
	s := openMode(t, dir, indexRebuilt) // a new network: the index is written
	reserve(t, s, "10.0.0.2", modeA)
	commit(t, s)

	s = openMode(t, dir, indexCurrent)
	wantOwned(t, s, modeA, "10.0.0.2")
	reserve(t, s, "10.0.0.3", modeA)
	if s.index != indexCurrent || !s.marked {
		t.Errorf("after a Reserve: mode %d, marked %v; want %d, marked", s.index, s.marked, indexCurrent)
	}
	commit(t, s)

	foreignRecord(t, dir, "10.0.0.4") // behind the index's back
	s = openMode(t, dir, indexRebuilt)
	wantOwned(t, s, modeF, "10.0.0.4")
	wantFirstFree(t, s, "10.0.0.5")
	commit(t, s)
	s = openMode(t, dir, indexCurrent)
	wantOwned(t, s, modeA, "10.0.0.2", "10.0.0.3")
	commit(t, s)
}

func TestIndexModeReadOnly(t *testing.T) {
	mnt := mounttest.TempTmpfs(t, "size=1m")
	s := openMode(t, mnt, indexRebuilt)
	reserve(t, s, "10.0.0.2", modeA)
	commit(t, s)

	readOnly := func(want indexMode) {
		t.Helper()
		remount(t, mnt, unix.MS_RDONLY)
		defer remount(t, mnt, 0)
		s := openMode(t, mnt, want)
		defer commit(t, s)
		wantOwned(t, s, modeA, "10.0.0.2")
		wantFirstFree(t, s, "10.0.0.3")
		ok, err := s.Reserve(netip.MustParseAddr("10.0.0.3"), modeA)
		// Refused before any attempt to write (the same message in both modes).
		if ok || cnierr.Code(err) != cnierr.IOFailure || !strings.Contains(err.Error(), "cannot change the store") {
			t.Errorf("mode %d: Reserve = %v, %v; want code 5, cannot change the store", s.index, ok, err)
		}
		if s.index != want {
			t.Errorf("mode %d after a refused Reserve, want %d", s.index, want)
		}
	}
	readOnly(indexReadOnly) // the index is current: read from disk
	foreignRecord(t, mnt, "10.0.0.9")
	readOnly(indexMemReadOnly) // it is not: rebuilt in memory, nothing written
	if _, err := os.Stat(filepath.Join(mnt, "net", "10.0.0.3")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a record was written on the read-only store: %v", err)
	}
}

// A rebuild on a full disk cannot write the new generation: it goes on in memory
// (indexMemWrote), and a Reserve that finds no space drops what is left (indexDropped).
func TestIndexModeFullDiskRebuild(t *testing.T) {
	mnt := mounttest.TempTmpfs(t, "size=512k")
	s := openMode(t, mnt, indexRebuilt)
	reserve(t, s, "10.0.0.2", modeA)
	commit(t, s)
	// Records in two more bitmap pages: the next generation needs more space than the
	// one it replaces.
	foreignRecord(t, mnt, "10.1.0.2")
	foreignRecord(t, mnt, "10.2.0.2")
	mounttest.Fill(t, filepath.Join(mnt, "filler"))

	s = openMode(t, mnt, indexMemWrote)
	defer commit(t, s)
	if g := generations(t, mnt); len(g) != 0 {
		t.Errorf("the failed generation was left on disk: %v", g)
	}
	wantOwned(t, s, modeA, "10.0.0.2")
	wantOwned(t, s, modeF, "10.1.0.2", "10.2.0.2")
	wantFirstFree(t, s, "10.0.0.3")
	// What the failed generation took is free again: fill it too. A Reserve then gives
	// back the state's block (all that is left of this call's index) and tries again.
	mounttest.Fill(t, filepath.Join(mnt, "filler2"))
	ok, err := s.Reserve(netip.MustParseAddr("10.0.0.3"), modeA)
	if err != nil && !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Reserve on a full disk = %v, %v; want success or no space", ok, err)
	}
	if st, err := os.Stat(filepath.Join(mnt, "net", metaName, stateName)); err != nil || st.Size() != 0 {
		t.Errorf("the state after a Reserve on a full disk is not empty (%v)", err)
	}
	if s.index != indexDropped {
		t.Errorf("mode %d after a Reserve on a full disk, want %d (dropped)", s.index, indexDropped)
	}
	wantOwned(t, s, modeF, "10.1.0.2", "10.2.0.2")
}

// An index this call wrote is given back when a record needs its space; the index in
// memory is then rebuilt from the records, this call's change included.
func TestIndexModeDroppedForRecord(t *testing.T) {
	mnt := mounttest.TempTmpfs(t, "size=512k")
	s := openMode(t, mnt, indexRebuilt)
	reserve(t, s, "10.0.0.2", modeA)
	mounttest.Fill(t, filepath.Join(mnt, "filler"))
	reserve(t, s, "10.0.0.3", modeA) // succeeds with the index's space
	if s.index != indexDropped {
		t.Fatalf("mode %d after a Reserve that needed the index's space, want %d", s.index, indexDropped)
	}
	if g := generations(t, mnt); len(g) != 0 {
		t.Errorf("index generations left on disk: %v", g)
	}
	wantOwned(t, s, modeA, "10.0.0.2", "10.0.0.3")
	wantFirstFree(t, s, "10.0.0.4")
	commit(t, s)

	// An index this call did not write is left alone: the ADD fails as host-local's would.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	s = openMode(t, mnt, indexRebuilt)
	commit(t, s)
	mounttest.Fill(t, filepath.Join(mnt, "filler"))
	s = openMode(t, mnt, indexCurrent)
	defer commit(t, s)
	ok, err := s.Reserve(netip.MustParseAddr("10.0.0.4"), modeA)
	if ok || !strings.Contains(fmt.Sprint(err), "no space") {
		t.Errorf("Reserve on a full disk with the index current = %v, %v; want no space", ok, err)
	}
	if s.index != indexCurrent || len(generations(t, mnt)) != 1 {
		t.Errorf("mode %d, generations %v; want the current index kept", s.index, generations(t, mnt))
	}
}
