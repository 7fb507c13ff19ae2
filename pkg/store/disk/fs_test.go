package disk_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/internal/mounttest"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// Each way of creating a record, forced by refusing the system calls of the ways before
// it as a file system without them does: every way writes exactly the records the fast
// one does (exclusive: a taken name is never replaced; an empty record is taken over;
// a record longer than a page too), leaves no temporary file, and keeps the index in line.
// A refusal is paid once per call, and learnt again by the next call.
func TestRecordWays(t *testing.T) {
	big := store.Owner{ID: strings.Repeat("b", disk.OnePage+100), IfName: "eth0"}
	type perCall struct{ tmpfile, link, rename2 int64 }
	for _, c := range []struct {
		name                   string
		tmpfile, link, rename2 bool
		// Attempts of each refusable call in the first call (3 records of a1, 2 of them
		// prepared, 2 more records and a cursor) and in the second (a prepared record,
		// then a taken address).
		first, second perCall
	}{
		{name: "O_TMPFILE", first: perCall{6, 6, 0}, second: perCall{2, 2, 0}},
		{name: "no O_TMPFILE", tmpfile: true, first: perCall{1, 6, 0}, second: perCall{1, 2, 0}},
		{name: "no hard links", link: true, first: perCall{2, 2, 6}, second: perCall{1, 2, 2}},
		{name: "no hard links, no RENAME_NOREPLACE", link: true, rename2: true, first: perCall{2, 2, 1}, second: perCall{1, 2, 1}},
		{name: "none", tmpfile: true, link: true, rename2: true, first: perCall{1, 1, 1}, second: perCall{1, 1, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			net := filepath.Join(dir, "net")
			s := mustOpen(t, dir, "net")
			mustReserve(t, s, "10.0.0.3", a2)
			closeIt(t, s)
			// A record left empty by a writer killed between create and write.
			writeFile(t, filepath.Join(net, "10.0.0.9"), "")

			at := disk.Refuse(t, c.tmpfile, c.link, c.rename2)
			s, err := disk.Open(dir, "net", disk.Options{Records: 2, Owner: a1})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []string{"10.0.0.2", "fd00::2", "10.0.0.4"} {
				mustReserve(t, s, a, a1)
			}
			mustReserve(t, s, "10.0.0.9", a2)
			mustReserve(t, s, "10.0.0.10", big)
			if err := s.SetLastReserved(0, ip("10.0.0.10")); err != nil {
				t.Fatal(err)
			}
			closeIt(t, s)
			got := perCall{at.Tmpfile.Load(), at.Link.Load(), at.Rename2.Load()}
			if got != c.first {
				t.Errorf("first call: attempts (O_TMPFILE, link, RENAME_NOREPLACE) = %v, want %v", got, c.first)
			}

			// The next call learns the refusals again (nothing is remembered across calls).
			at = disk.Refuse(t, c.tmpfile, c.link, c.rename2)
			s, err = disk.Open(dir, "net", disk.Options{Records: 1, Owner: a2})
			if err != nil {
				t.Fatal(err)
			}
			mustReserve(t, s, "10.0.0.11", a2)
			if s.Rebuilds() != 0 {
				t.Errorf("the second call rebuilt the index: the first left it stale")
			}
			if got, _ := s.Owned(a1); fmt.Sprint(got) != "[10.0.0.2 10.0.0.4 fd00::2]" {
				t.Errorf("a1 owns %v", got)
			}
			if got, _ := s.Owned(a2); fmt.Sprint(got) != "[10.0.0.3 10.0.0.9 10.0.0.11]" {
				t.Errorf("a2 owns %v", got)
			}
			if got, ok, err := s.FirstFree(ip("10.0.0.2"), ip("10.0.0.20")); !ok || err != nil || got != ip("10.0.0.5") {
				t.Errorf("FirstFree = %v %v %v, want 10.0.0.5", got, ok, err)
			}
			if ok, err := s.Reserve(ip("10.0.0.3"), a1); ok || err != nil {
				t.Fatalf("Reserve of a2's address = %v, %v", ok, err)
			}
			closeIt(t, s)
			got = perCall{at.Tmpfile.Load(), at.Link.Load(), at.Rename2.Load()}
			if got != c.second {
				t.Errorf("second call: attempts = %v, want %v", got, c.second)
			}

			want := map[string]string{
				"10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0", "10.0.0.4": "c1\r\neth0",
				"10.0.0.3": "c2\r\neth0", "10.0.0.9": "c2\r\neth0", "10.0.0.11": "c2\r\neth0",
				"10.0.0.10": big.Key(), "last_reserved_ip.0": "10.0.0.10",
			}
			if d := diffFiles(t, net, want); d != "" {
				t.Error(d)
			}
		})
	}
}

// The last way (no O_TMPFILE, no hard links, no RENAME_NOREPLACE) on a full disk: the
// record cannot be written, the call fails with code 5, and no empty file is left at the
// address (nor a temporary file).
func TestLastWayOnFullDisk(t *testing.T) {
	mnt := mounttest.TempTmpfs(t, "size=512k")
	s := mustOpen(t, mnt, "net")
	closeIt(t, s) // the index is written

	disk.Refuse(t, true, true, true)
	s = mustOpen(t, mnt, "net")
	defer s.Abandon()
	mustReserve(t, s, "10.0.0.2", a1)
	filler := filepath.Join(mnt, "filler")
	mounttest.Fill(t, filler)
	ok, err := s.Reserve(ip("10.0.0.3"), a1)
	if ok || cnierr.Code(err) != cnierr.IOFailure || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Reserve on a full disk = %v, %v; want code 5 (no space)", ok, err)
	}
	for _, name := range []string{"10.0.0.3", disk.TmpName} {
		if _, err := os.Lstat(filepath.Join(mnt, "net", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after the failed write (%v)", name, err)
		}
	}
	// Space again: the same call writes the record.
	os.Remove(filler)
	mustReserve(t, s, "10.0.0.3", a1)
	if got := read(t, filepath.Join(mnt, "net", "10.0.0.3")); got != "c1\r\neth0" {
		t.Errorf("record = %q", got)
	}
}

// A record left empty (by host-local, or by the last way, killed between its create and
// its write) holds nothing for any reader: not for the index rebuilt from the records,
// nor Holder (CHECK), nor a Release that finds it where the index had an owner, nor
// GC, which removes it as host-local's GC does; Reserve takes it over.
func TestEmptyRecordIsFree(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	s := mustOpen(t, dir, "net")
	for _, a := range []string{"10.0.0.2", "10.0.0.3"} {
		mustReserve(t, s, a, a1)
	}
	closeIt(t, s)

	// In place, so the directory does not change and the index still says a1 holds it.
	if err := os.Truncate(filepath.Join(net, "10.0.0.2"), 0); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, "net")
	if s.Rebuilds() != 0 {
		t.Fatal("the index was rebuilt: this test needs it to still name a1")
	}
	if ok, err := s.Release(ip("10.0.0.2"), a1); ok || err != nil {
		t.Fatalf("Release of an empty record = %v, %v; want false (nothing of a1's to remove)", ok, err)
	}
	if got, ok, err := s.FirstFree(ip("10.0.0.2"), ip("10.0.0.9")); !ok || err != nil || got != ip("10.0.0.2") {
		t.Errorf("after Release found the record empty, FirstFree = %v %v %v; want 10.0.0.2", got, ok, err)
	}
	if _, held, err := s.Holder(ip("10.0.0.2")); held || err != nil {
		t.Errorf("Holder of an empty record: held=%v err=%v", held, err)
	}
	closeIt(t, s)

	// A foreign empty record: the rebuild takes it as free.
	writeFile(t, filepath.Join(net, "10.0.0.4"), "")
	s = mustOpen(t, dir, "net")
	if s.Rebuilds() != 1 {
		t.Errorf("Rebuilds = %d, want 1", s.Rebuilds())
	}
	if got, ok, err := s.FirstFree(ip("10.0.0.3"), ip("10.0.0.9")); !ok || err != nil || got != ip("10.0.0.4") {
		t.Errorf("FirstFree = %v %v %v; want 10.0.0.4 (empty record)", got, ok, err)
	}
	removed, err := s.GC([]types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}})
	if err != nil || fmt.Sprint(removed) != "[10.0.0.2 10.0.0.4]" {
		t.Errorf("GC removed %v, %v; want the two empty records", removed, err)
	}
	mustReserve(t, s, "10.0.0.2", a2)
	closeIt(t, s)
	if d := diffFiles(t, net, map[string]string{"10.0.0.2": "c2\r\neth0", "10.0.0.3": "c1\r\neth0"}); d != "" {
		t.Error(d)
	}
}
