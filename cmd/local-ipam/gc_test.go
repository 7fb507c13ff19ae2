package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// gcNet is a CNI 1.1 network over subnet with the attachments ("id/ifname") ADDed, in
// that order.
func gcNet(t *testing.T, name, subnet string, atts ...string) *netw {
	t.Helper()
	n := newNet(t, "1.1.0", name, map[string]any{"subnet": subnet})
	for _, a := range atts {
		id, ifname, _ := strings.Cut(a, "/")
		n.add(t, id, ifname)
	}
	return n
}

// TestGC: CNI 1.1 GC with cni.dev/valid-attachments (or the older cni.dev/attachments).
func TestGC(t *testing.T) {
	t.Parallel()

	t.Run("mixed store: exactly the unlisted attachments lose their records", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "gcmix", map[string]any{"subnet": "10.10.0.0/24"})
		results := map[string]cniexec.Result{}
		for _, a := range []string{"a/eth0", "a/eth1", "b/eth0", "c/eth0", "c/eth1", "d/eth0"} {
			id, ifname, _ := strings.Cut(a, "/")
			results[a] = n.add(t, id, ifname)
		}
		// .2 a/eth0, .3 a/eth1, .4 b/eth0, .5 c/eth0, .6 c/eth1, .7 d/eth0
		writeIn(t, n.dir(), "10.10.0.50", "legacy")  // old host-local record, container listed
		writeIn(t, n.dir(), "10.10.0.51", "oldgone") // old host-local record, container not listed
		writeIn(t, n.dir(), "10.10.0.60", "")        // empty record
		writeIn(t, n.dir(), "notes.txt", "an operator's notes")
		cursor := mustRead(t, filepath.Join(n.dir(), "last_reserved_ip.0"))

		wantOK(t, n.gc(t, validAttachments, "a/eth1", "c/eth0", "d/eth0", "legacy/eth0", "never-added/eth0"), "GC")
		n.wantRecords(t, map[string]string{
			"10.10.0.3":  recKey("a", "eth1"),
			"10.10.0.5":  recKey("c", "eth0"),
			"10.10.0.7":  recKey("d", "eth0"),
			"10.10.0.50": "legacy",
		}, "after GC")
		all := dirFiles(t, n.dir())
		if _, ok := all["lock"]; !ok {
			t.Error("GC removed the lock file")
		}
		if all["last_reserved_ip.0"] != cursor {
			t.Errorf("last_reserved_ip.0 = %q after GC, want %q", all["last_reserved_ip.0"], cursor)
		}
		if all[".local-ipam"] != "<dir>" {
			t.Error("GC removed the .local-ipam index directory")
		}

		// The index followed: kept attachments still CHECK, removed ones do not, and
		// ADDs (of a new container and of a collected attachment) carry on from the cursor.
		for _, a := range []string{"a/eth1", "c/eth0", "d/eth0"} {
			id, ifname, _ := strings.Cut(a, "/")
			wantOK(t, n.check(t, id, ifname, results[a].Raw), "CHECK of kept "+a)
		}
		e := wantError(t, n.check(t, "c", "eth1", results["c/eth1"].Raw), 105)
		if !strings.Contains(e.Msg, "10.10.0.6") {
			t.Errorf("CHECK of a collected attachment: message does not name 10.10.0.6: %q", e.Msg)
		}
		if got := n.add(t, "e", "eth0").Addrs(); len(got) != 1 || got[0] != "10.10.0.8/24" {
			t.Errorf("ADD after GC got %v, want 10.10.0.8/24 (the cursor was at .7)", got)
		}
		if got := n.add(t, "a", "eth0").Addrs(); len(got) != 1 || got[0] != "10.10.0.9/24" {
			t.Errorf("ADD of the collected attachment a/eth0 got %v, want 10.10.0.9/24", got)
		}
		// Kept attachments still hold their addresses: a second ADD is a duplicate.
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "a", IfName: "eth1", Conf: n.conf(t, nil)}), 103)
		// The legacy record still counts as its container's: a new ADD of it is refused.
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "legacy", IfName: "eth3", Conf: n.conf(t, nil)}), 103)
	})

	t.Run("older key cni.dev/attachments is honoured too", func(t *testing.T) {
		t.Parallel()
		n := gcNet(t, "gcold", "10.11.0.0/24", "keep/eth0", "drop/eth0")
		wantOK(t, n.gc(t, "cni.dev/attachments", "keep/eth0"), "GC with cni.dev/attachments")
		n.wantRecords(t, map[string]string{"10.11.0.2": recKey("keep", "eth0")}, "after GC")
	})

	t.Run("empty list removes every record", func(t *testing.T) {
		t.Parallel()
		n := gcNet(t, "gcempty", "10.12.0.0/24", "a/eth0", "b/eth0", "b/eth1")
		writeIn(t, n.dir(), "10.12.0.100", "legacy")
		wantOK(t, n.gc(t, validAttachments), "GC with an empty list")
		n.wantRecords(t, map[string]string{}, "after GC with an empty list")
		if got := listJSON(t, "--data-dir", n.dataDir); len(got) != 0 {
			t.Errorf("list after GC with an empty list: %v", got)
		}
		if got := n.add(t, "b", "eth0").Addrs(); len(got) != 1 || got[0] != "10.12.0.5/24" {
			t.Errorf("ADD after GC got %v, want 10.12.0.5/24", got)
		}
	})

	t.Run("a list of 5000 attachments (over 64 KiB of config) is read whole", func(t *testing.T) {
		t.Parallel()
		n := gcNet(t, "gcbig", "10.16.0.0/16", "drop/eth0", "keep/eth0")
		list := make([]string, 0, 5001)
		for i := 0; i < 5000; i++ {
			list = append(list, fmt.Sprintf("container-%06d/eth0", i))
		}
		conf := n.conf(t, map[string]any{validAttachments: attachments(append(list, "keep/eth0")...)})
		if len(conf) < 128<<10 {
			t.Fatalf("config is only %d bytes", len(conf))
		}
		wantOK(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: conf}), "GC with a long list")
		n.wantRecords(t, map[string]string{"10.16.0.3": recKey("keep", "eth0")}, "after GC")
	})

	// libcni sends null for a runtime with no live attachment; cnitool gc sends no list.
	for _, tc := range []struct {
		name  string
		extra map[string]any
	}{
		{"no list", nil},
		{"a null list", map[string]any{validAttachments: nil}},
		{"a null list and a null older key", map[string]any{validAttachments: nil, "cni.dev/attachments": nil}},
	} {
		t.Run(tc.name+": nothing is valid, every record goes, as with host-local", func(t *testing.T) {
			t.Parallel()
			n := gcNet(t, "gcnolist", "10.13.0.0/24", "a/eth0", "b/eth0", "b/eth1")
			writeIn(t, n.dir(), "10.13.0.100", "legacy")
			writeIn(t, n.dir(), "notes.txt", "x")
			gcSameAsHostLocal(t, n, tc.extra)
			n.wantRecords(t, map[string]string{}, "after GC")
			if got := n.add(t, "c", "eth0").Addrs(); len(got) != 1 || got[0] != "10.13.0.5/24" {
				t.Errorf("ADD after GC got %v, want 10.13.0.5/24", got)
			}
		})
	}

	for _, v := range []any{"all", 3, map[string]any{"containerID": "a", "ifname": "eth0"}, []any{"a/eth0"}} {
		t.Run(fmt.Sprintf("a list that is not a list (%v): code 7 and the store is untouched", v), func(t *testing.T) {
			t.Parallel()
			n := gcNet(t, "gcbadlist", "10.17.0.0/24", "a/eth0", "b/eth0")
			before := dirFiles(t, n.dir())
			wantError(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: n.conf(t, map[string]any{validAttachments: v})}), 7)
			if d := diffMaps(dirFiles(t, n.dir()), before); d != "" {
				t.Fatalf("a GC refused changed the store: %s", d)
			}
		})
	}

	t.Run("after a takeover from host-local: same records as host-local's own GC", func(t *testing.T) {
		t.Parallel()
		hl := cniexec.Bin(t, "host-local")
		n := newNet(t, "1.1.0", "gctake", map[string]any{"subnet": "10.14.0.0/24", "rangeEnd": "10.14.0.20"})
		hlResults := map[string]cniexec.Result{}
		for i := 0; i < 10; i++ {
			for _, ifname := range []string{"eth0", "eth1"}[:1+i%2] {
				o := cniexec.CNI(t, hl, cniexec.Call{Cmd: "ADD", ID: fmt.Sprintf("c%d", i), IfName: ifname, Conf: n.conf(t, nil)})
				if o.Exit != 0 {
					t.Fatalf("host-local ADD c%d/%s: %s", i, ifname, o)
				}
				hlResults[fmt.Sprintf("c%d/%s", i, ifname)] = o.Result(t)
			}
		}
		for _, i := range []int{2, 5, 8} {
			if o := cniexec.CNI(t, hl, cniexec.Call{Cmd: "DEL", ID: fmt.Sprintf("c%d", i), IfName: "eth0", Conf: n.conf(t, nil)}); o.Exit != 0 {
				t.Fatalf("host-local DEL c%d: %s", i, o)
			}
		}
		writeIn(t, n.dir(), "10.14.0.19", "legacy-kept")
		writeIn(t, n.dir(), "10.14.0.20", "legacy-gone")
		writeIn(t, n.dir(), "10.14.0.18", "")
		writeIn(t, n.dir(), "notes.txt", "x")

		gcSameAsHostLocal(t, n, map[string]any{validAttachments: attachments(
			"c0/eth0", "c1/eth1", "c3/eth0", "c3/eth1", "c5/eth1", "c6/eth0", "c9/eth0", "legacy-kept/eth0", "c2/eth0")})
		if len(recordFiles(t, n.dir())) < 5 {
			t.Fatalf("suspiciously few records kept: %v", recordFiles(t, n.dir()))
		}
		// And local-ipam carries on: CHECK of a kept host-local attachment passes, of a
		// collected one fails.
		wantOK(t, n.check(t, "c3", "eth1", hlResults["c3/eth1"].Raw), "CHECK of a kept host-local attachment")
		wantError(t, n.check(t, "c4", "eth0", hlResults["c4/eth0"].Raw), 105)
	})

	t.Run("a record that cannot be removed: GC goes on, then code 5 naming it", func(t *testing.T) {
		t.Parallel()
		if _, err := exec.LookPath("chattr"); err != nil {
			t.Skip("chattr not found (e2fsprogs): cannot make a record undeletable")
		}
		n := gcNet(t, "gcimm", "10.15.0.0/24", "a/eth0", "b/eth0", "c/eth0")
		stuck := filepath.Join(n.dir(), "10.15.0.3")
		if out, err := exec.Command("chattr", "+i", stuck).CombinedOutput(); err != nil {
			t.Skipf("chattr +i does not work here (file system without the immutable flag, or not root): %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", stuck).Run() })

		e := wantError(t, n.gc(t, validAttachments), 5)
		if !strings.Contains(e.Msg+" "+e.Details, "10.15.0.3") {
			t.Errorf("GC error does not name the record it could not remove: %+v", e)
		}
		n.wantRecords(t, map[string]string{"10.15.0.3": recKey("b", "eth0")}, "after a GC that must go on past the undeletable record")
		// The index is still right: the next ADD skips the stuck address.
		if got := n.add(t, "d", "eth0").Addrs(); len(got) != 1 || got[0] != "10.15.0.5/24" {
			t.Errorf("ADD after the failed GC got %v, want 10.15.0.5/24", got)
		}
		if out, err := exec.Command("chattr", "-i", stuck).CombinedOutput(); err != nil {
			t.Fatalf("chattr -i: %v %s", err, out)
		}
		wantOK(t, n.gc(t, validAttachments, "d/eth0"), "GC once the record can be removed")
		n.wantRecords(t, map[string]string{"10.15.0.5": recKey("d", "eth0")}, "after the second GC")
	})
}

// gcSameAsHostLocal runs host-local's GC on a copy of the network's directory and
// local-ipam's on the network, both with extra, and requires the same files to be left
// (local-ipam's index aside).
func gcSameAsHostLocal(t *testing.T, n *netw, extra map[string]any) {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref")
	if out, err := exec.Command("cp", "-a", n.dataDir, ref).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	refNet := *n
	refNet.dataDir = ref
	wantOK(t, plugin(t, cniexec.Call{Cmd: "GC", Conf: n.conf(t, extra)}), "local-ipam GC")
	if o := cniexec.CNI(t, cniexec.Bin(t, "host-local"), cniexec.Call{Cmd: "GC", Conf: refNet.conf(t, extra)}); o.Exit != 0 {
		t.Fatalf("host-local GC: %s", o)
	}
	got, want := dirFiles(t, n.dir()), dirFiles(t, refNet.dir())
	delete(got, ".local-ipam")
	delete(want, ".local-ipam")
	if d := diffMaps(got, want); d != "" {
		t.Fatalf("local-ipam's GC and host-local's differ (got = local-ipam): %s", d)
	}
}
