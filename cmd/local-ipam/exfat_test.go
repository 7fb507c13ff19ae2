package main

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/mounttest"
)

// TestExfat: a data dir on exFAT through FUSE, a file system with no O_TMPFILE, no hard
// links and no RENAME_NOREPLACE (as on removable media), where host-local's create-then-
// write works. local-ipam serves ADD, CHECK, DEL, GC and list there as anywhere; a call
// killed at any instant of an ADD leaves no torn record, and nothing that blocks an
// address once the runtime has DELeted what failed: a fresh round refills the range
// exactly.
func TestExfat(t *testing.T) {
	mnt := mountExfat(t)
	bin := cniexec.Bin(t, "local-ipam")
	dataDir := filepath.Join(mnt, "data")
	const size = 29 // 10.99.0.2 - 10.99.0.30
	n := &netw{version: "1.1.0", name: "exnet", dataDir: dataDir,
		ipam: map[string]any{"type": "local-ipam", "subnet": "10.99.0.0/27"}}

	// host-local works on this file system: so must we.
	hl := &netw{version: "1.0.0", name: "hlnet", dataDir: dataDir,
		ipam: map[string]any{"type": "host-local", "subnet": "10.98.0.0/27"}}
	if o := cniexec.CNI(t, cniexec.Bin(t, "host-local"), cniexec.Call{Cmd: "ADD", ID: "h", IfName: "eth0", Conf: hl.conf(t, nil)}); o.Exit != 0 {
		t.Fatalf("host-local ADD on exFAT: %s", o)
	}

	addAll := func(prefix string, count int) (map[string]string, []time.Duration) {
		t.Helper()
		byAddr := map[string]string{}
		var took []time.Duration
		for i := range count {
			id := fmt.Sprintf("%s%d", prefix, i)
			o := plugin(t, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: n.conf(t, nil)})
			if o.Exit != 0 {
				t.Fatalf("ADD %s: %s", id, o)
			}
			took = append(took, o.Took)
			addrs := o.Addrs(t)
			if len(addrs) != 1 {
				t.Fatalf("ADD %s gave %v", id, addrs)
			}
			a := strings.TrimSuffix(addrs[0], "/27")
			if prev, dup := byAddr[a]; dup {
				t.Fatalf("ADD %s got %s, already %s's", id, a, prev)
			}
			byAddr[a] = id
		}
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: prefix + "-over", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		return byAddr, took
	}
	// wantRecords: the records are exactly byAddr's (whole, none empty, no temporary file).
	wantRecords := func(byAddr map[string]string, when string) {
		t.Helper()
		want := map[string]string{}
		for a, id := range byAddr {
			want[a] = recKey(id, "eth0")
		}
		n.wantRecords(t, want, when)
	}

	// ADD until full, CHECK, list.
	byAddr, took := addAll("c", size)
	wantRecords(byAddr, "after filling the range")
	for a, id := range byAddr {
		prev := rawJSON(fmt.Sprintf(`{"cniVersion":"1.0.0","ips":[{"address":"%s/27"}]}`, a))
		wantOK(t, plugin(t, cniexec.Call{Cmd: "CHECK", ID: id, IfName: "eth0", Conf: n.conf(t, map[string]any{"prevResult": prev})}), "CHECK "+id)
	}
	if l := listJSON(t, "--data-dir", dataDir, "--network", n.name); len(l) != size {
		t.Errorf("list shows %d reservations, want %d", len(l), size)
	}

	// DEL ten, GC four more: exactly those fourteen addresses come back.
	var freed []string
	valid := []string{}
	for a, id := range byAddr {
		var i int
		fmt.Sscanf(id, "c%d", &i)
		switch {
		case i < 10:
			n.del(t, id, "eth0")
		case i >= 25:
		default:
			valid = append(valid, id+"/eth0")
			continue
		}
		freed = append(freed, a)
		delete(byAddr, a)
	}
	wantOK(t, n.gc(t, validAttachments, valid...), "GC")
	wantRecords(byAddr, "after DEL and GC")
	refill, _ := addAll("r", len(freed))
	if got := slices.Sorted(maps.Keys(refill)); !slices.Equal(got, slices.Sorted(slices.Values(freed))) {
		t.Fatalf("the refill got %v, want the freed %v", got, freed)
	}
	for a, id := range refill {
		byAddr[a] = id
	}
	wantRecords(byAddr, "after the refill")
	for _, id := range byAddr {
		n.del(t, id, "eth0")
	}
	wantRecords(map[string]string{}, "after DEL of everything")

	// kill -9 at random instants of ADDs (up to half again as long as an ADD takes).
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	span := took[len(took)/2] * 3 / 2
	conf := n.conf(t, nil)
	var killed []string
	for i := range 60 {
		id := fmt.Sprintf("k%d", i)
		add := cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: conf, Kill: true, KillAfter: time.Duration(rand.Int64N(int64(span) + 1))}
		if _, err := cniexec.CNIExec(bin, add); err != nil {
			t.Fatal(err)
		}
		killed = append(killed, id)
	}
	// Whatever the kills left: records that are whole (of a killed ADD's container, one
	// each) or empty, never torn.
	empty, whole := 0, 0
	owners := map[string]bool{}
	for name, content := range recordFiles(t, n.dir()) {
		id, ifname, _ := strings.Cut(content, "\r\n")
		switch {
		case content == "":
			empty++
		case ifname != "eth0" || !slices.Contains(killed, id):
			t.Fatalf("record %s after the kills holds %q: torn or foreign", name, content)
		case owners[id]:
			t.Fatalf("container %s holds two records after the kills", id)
		default:
			owners[id] = true
			whole++
		}
	}
	t.Logf("after %d kills within %v of the start: %d whole records, %d empty", len(killed), span, whole, empty)
	// The runtime DELs every ADD that did not succeed.
	for _, id := range killed {
		n.del(t, id, "eth0")
	}
	// An empty record as a kill between create and write leaves it: free all the same.
	writeIn(t, n.dir(), "10.99.0.17", "")

	final, _ := addAll("f", size)
	wantRecords(final, "after the fresh round")
	if l := listJSON(t, "--data-dir", dataDir, "--network", n.name); len(l) != size {
		t.Errorf("list shows %d reservations after the fresh round, want %d", len(l), size)
	}
}

// mountExfat mounts a fresh exFAT through FUSE for the test (mounttest.Exfat), or skips
// the test saying why it cannot.
func mountExfat(t *testing.T) string {
	t.Helper()
	mnt := t.TempDir()
	if err := mounttest.Exfat(t, mnt); err != nil {
		t.Skip(err)
	}
	return mnt
}
