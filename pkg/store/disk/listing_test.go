package disk_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// lister is what the operator's commands list and count through: both the locked Store
// and the Reader.
type lister interface {
	List(id string, fn func(store.Entry) error) error
	CountReserved(from, to netip.Addr) (int, error)
	Close() error
}

// listingNet makes a network as the operator finds it: reservations of three owners, a
// record of an old host-local (container ID only), an empty record (holds nothing), a
// directory named like an address (blocks it, names no one) and files that are not
// records.
func listingNet(t *testing.T) (dataDir string) {
	t.Helper()
	dataDir = t.TempDir()
	s := mustOpen(t, dataDir, "net")
	for _, r := range []struct {
		addr string
		o    store.Owner
	}{
		{"10.1.0.2", a1}, {"10.1.0.3", store.Owner{ID: "c1", IfName: "net1"}},
		{"10.1.0.4", a2}, {"fd00::2", a1},
	} {
		if ok, err := s.Reserve(ip(r.addr), r.o); !ok || err != nil {
			t.Fatalf("Reserve %s: %v, %v", r.addr, ok, err)
		}
	}
	closeIt(t, s)
	dir := filepath.Join(dataDir, "net")
	writeFile(t, filepath.Join(dir, "10.1.0.9"), "c1")
	writeFile(t, filepath.Join(dir, "10.1.0.10"), "")
	if err := os.Mkdir(filepath.Join(dir, "10.1.0.11"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "notes.txt"), "c1")
	writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.1.0.4")
	return dataDir
}

func listed(t *testing.T, l lister, id string) []string {
	t.Helper()
	var out []string
	err := l.List(id, func(e store.Entry) error {
		if age := time.Since(e.Created); age < -time.Minute || age > time.Hour {
			t.Errorf("entry %s: Created %v is not the record's time", e.Addr, e.Created)
		}
		if e.Node != "" {
			t.Errorf("entry %s: Node %q on a disk store", e.Addr, e.Node)
		}
		out = append(out, fmt.Sprintf("%s=%s/%s", e.Addr, e.Owner.ID, e.Owner.IfName))
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", id, err)
	}
	slices.Sort(out)
	return out
}

// wantEntries fails the test unless dir holds exactly the entries named want, given in
// os.ReadDir's order (sorted by name).
func wantEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v", dir, names, want)
	}
}

func counted(t *testing.T, l lister, from, to string) int {
	t.Helper()
	n, err := l.CountReserved(ip(from), ip(to))
	if err != nil {
		t.Fatalf("CountReserved(%s, %s): %v", from, to, err)
	}
	return n
}

// The locked Store and the Reader list and count the same: what names an owner is
// listed, by container when asked; what takes an address is counted.
func TestListAndCount(t *testing.T) {
	dataDir := listingNet(t)
	open := map[string]func() lister{
		"Store": func() lister { return mustOpen(t, dataDir, "net") },
		"Reader": func() lister {
			r, err := disk.OpenReader(dataDir, "net")
			if err != nil {
				t.Fatal(err)
			}
			return r
		},
	}
	for _, name := range []string{"Store", "Reader"} {
		t.Run(name, func(t *testing.T) {
			l := open[name]()
			defer l.Close()
			all := []string{"10.1.0.2=c1/eth0", "10.1.0.3=c1/net1", "10.1.0.4=c2/eth0", "10.1.0.9=c1/", "fd00::2=c1/eth0"}
			if got := listed(t, l, ""); !slices.Equal(got, all) {
				t.Errorf("List() = %v, want %v", got, all)
			}
			c1 := []string{"10.1.0.2=c1/eth0", "10.1.0.3=c1/net1", "10.1.0.9=c1/", "fd00::2=c1/eth0"}
			if got := listed(t, l, "c1"); !slices.Equal(got, c1) {
				t.Errorf("List(c1) = %v, want %v", got, c1)
			}
			if got := listed(t, l, "nobody"); len(got) != 0 {
				t.Errorf("List(nobody) = %v", got)
			}
			for _, c := range []struct {
				from, to string
				want     int
			}{
				{"10.1.0.0", "10.1.0.255", 5}, // .2 .3 .4 .9 and the directory .11; not the empty .10
				{"10.1.0.3", "10.1.0.9", 3},
				{"10.1.0.10", "10.1.0.10", 0},
				{"10.1.0.11", "10.1.0.11", 1},
				{"10.1.0.5", "10.1.0.8", 0},
				{"10.1.0.9", "10.1.0.2", 0}, // empty interval
				{"fd00::", "fd00::ffff", 1},
				{"10.2.0.0", "10.2.0.255", 0},
			} {
				if got := counted(t, l, c.from, c.to); got != c.want {
					t.Errorf("CountReserved(%s, %s) = %d, want %d", c.from, c.to, got, c.want)
				}
			}
		})
	}
}

// A Reader neither waits for the network's lock nor writes anything: not the index of a
// directory only host-local has used, not the directory of a network that has none.
func TestReaderTakesNoLockAndWritesNothing(t *testing.T) {
	dataDir := t.TempDir()
	dir := filepath.Join(dataDir, "hl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "10.2.0.2"), "ctr\r\neth0")
	writeFile(t, filepath.Join(dir, "lock"), "")
	release := holdInOtherProcess(t, filepath.Join(dir, "lock"))
	defer release()

	done := make(chan []string, 1)
	go func() {
		r, err := disk.OpenReader(dataDir, "hl")
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		defer r.Close()
		var got []string
		_ = r.List("", func(e store.Entry) error { got = append(got, e.Addr.String()); return nil })
		done <- got
	}()
	select {
	case got := <-done:
		if !slices.Equal(got, []string{"10.2.0.2"}) {
			t.Errorf("Reader listed %v while host-local held the lock, want 10.2.0.2", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reader waited for the network's lock")
	}
	// Reading wrote nothing: the directory holds what host-local left.
	wantEntries(t, dir, "10.2.0.2", "lock")

	r, err := disk.OpenReader(dataDir, "typo")
	if err != nil {
		t.Fatalf("OpenReader of a network without a directory: %v", err)
	}
	if got := listed(t, r, ""); len(got) != 0 || counted(t, r, "0.0.0.0", "255.255.255.255") != 0 {
		t.Errorf("a network without a directory lists %v", got)
	}
	r.Close()
	if _, err := os.Lstat(filepath.Join(dataDir, "typo")); !os.IsNotExist(err) {
		t.Errorf("OpenReader created the directory of an unknown network (%v)", err)
	}
}

// A Reader holds no lock: every change through it is refused, and the records stay.
func TestReaderRefusesChanges(t *testing.T) {
	dataDir := listingNet(t)
	dir := filepath.Join(dataDir, "net")
	r, err := disk.OpenReader(dataDir, "net")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ok, err := r.Reserve(ip("10.1.0.50"), a1); ok || err == nil {
		t.Errorf("Reserve through a Reader: %v, %v; want refused", ok, err)
	}
	if ok, err := r.Release(ip("10.1.0.2"), a1); ok || err == nil {
		t.Errorf("Release through a Reader: %v, %v; want refused", ok, err)
	}
	if err := r.SetLastReserved(0, ip("10.1.0.50")); err == nil {
		t.Error("SetLastReserved through a Reader: want refused")
	}
	if _, err := r.GC(nil); err == nil {
		t.Error("GC through a Reader: want refused")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for name, want := range map[string]string{"10.1.0.2": "c1\r\neth0", "last_reserved_ip.0": "10.1.0.4"} {
		if got := read(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q after refused changes, want %q", name, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "10.1.0.50")); !os.IsNotExist(err) {
		t.Errorf("a refused Reserve left a record (%v)", err)
	}
}

// The counts of one Reader come from one walk of the records: usage's figures add up
// even while calls change the network.
func TestReaderCountsOneSnapshot(t *testing.T) {
	dataDir := listingNet(t)
	r, err := disk.OpenReader(dataDir, "net")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := counted(t, r, "10.1.0.0", "10.1.0.255"); got != 5 {
		t.Fatalf("CountReserved = %d, want 5", got)
	}
	if err := os.Remove(filepath.Join(dataDir, "net", "10.1.0.4")); err != nil {
		t.Fatal(err)
	}
	if got := counted(t, r, "10.1.0.4", "10.1.0.4"); got != 1 {
		t.Errorf("CountReserved after a change = %d, want 1 (the first walk's)", got)
	}
}

// A network directory that is a symlink is not followed: its target's records are not
// the network's.
func TestReaderOfASymlinkedNetwork(t *testing.T) {
	dataDir, target := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(target, "10.3.0.2"), "ctr\r\neth0")
	if err := os.Symlink(target, filepath.Join(dataDir, "ln")); err != nil {
		t.Fatal(err)
	}
	r, err := disk.OpenReader(dataDir, "ln")
	if err == nil {
		t.Errorf("OpenReader of a symlinked network directory lists %v; want an error", listed(t, r, ""))
		r.Close()
	} else if code := cnierr.Code(err); code != cnierr.IOFailure && code != cnierr.StoreCorrupt {
		t.Errorf("OpenReader of a symlinked network directory: %v; want code 5 or 104", err)
	}
}
