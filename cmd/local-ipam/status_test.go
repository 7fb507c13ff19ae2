package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/mounttest"
)

// TestStatus: CNI 1.1 STATUS answers whether an ADD could succeed now (code 50 if not).
func TestStatus(t *testing.T) {
	t.Parallel()

	t.Run("a /29 is available until its five usable addresses are taken", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "st29", map[string]any{"subnet": "10.20.0.0/29"})
		status := func() cniexec.Out { return plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}) }
		wantOK(t, status(), "STATUS of an empty /29")
		var got []string
		for _, id := range []string{"a", "b", "c", "d", "e"} {
			got = append(got, n.add(t, id, "eth0").Addrs()...)
		}
		if strings.Join(got, " ") != "10.20.0.2/29 10.20.0.3/29 10.20.0.4/29 10.20.0.5/29 10.20.0.6/29" {
			t.Fatalf("five ADDs in a /29 got %v, want .2 to .6 (the gateway .1 is never given)", got)
		}
		e := wantError(t, status(), 50)
		for _, s := range []string{"st29", "10.20.0.1-10.20.0.6"} {
			if !strings.Contains(e.Msg, s) {
				t.Errorf("STATUS of a full pool: message %q does not name %s", e.Msg, s)
			}
		}
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "f", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		n.del(t, "c", "eth0")
		wantOK(t, status(), "STATUS after one DEL")
	})

	t.Run("a full range set is named, the others are not", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "stdual", map[string]any{"ranges": []any{
			[]any{map[string]any{"subnet": "10.21.0.0/30"}, map[string]any{"subnet": "10.21.1.0/30"}},
			[]any{map[string]any{"subnet": "fd00:21::/120"}},
		}})
		wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), "STATUS of an empty dual-stack pool")
		n.add(t, "a", "eth0") // 10.21.0.2
		n.add(t, "b", "eth0") // 10.21.1.2
		e := wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		if !strings.Contains(e.Msg, "10.21.0.1-10.21.0.2,10.21.1.1-10.21.1.2") {
			t.Errorf("message %q does not name the full range set", e.Msg)
		}
		if strings.Contains(e.Msg, "fd00:21::") {
			t.Errorf("message %q names the IPv6 set, which has room", e.Msg)
		}
	})

	t.Run("exclusions covering every free address make it unavailable", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "stexcl", map[string]any{"subnet": "10.22.0.0/29", "exclude": []string{"10.22.0.4/30"}})
		wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), "STATUS with .2 and .3 free")
		n.add(t, "a", "eth0")
		n.add(t, "b", "eth0")
		wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "c", IfName: "eth0", Conf: n.conf(t, nil)}), 100)

		all := newNet(t, "1.1.0", "stexclall", map[string]any{"subnet": "10.22.1.0/29", "exclude": []string{"10.22.1.0/29"}})
		wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: all.conf(t, nil)}), 50)
	})

	t.Run("read-only store: code 50 about the store, ADD fails cleanly, records stay readable", func(t *testing.T) {
		t.Parallel()
		mnt := mounttest.TempTmpfs(t, "size=1m")
		n := newNet(t, "1.1.0", "stro", map[string]any{"subnet": "10.23.0.0/24"})
		n.dataDir = mnt
		n.add(t, "a", "eth0")
		wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), "STATUS of a writable store")
		if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Skipf("cannot remount the tmpfs read-only: %v", err)
		}
		if err := os.WriteFile(filepath.Join(mnt, "probe"), nil, 0o600); err == nil {
			t.Fatal("the remounted tmpfs is still writable")
		}

		e := wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		if !strings.Contains(e.Msg, "stro") || !strings.Contains(e.Msg, "store") || !strings.Contains(e.Msg, "read-only") {
			t.Errorf("STATUS message %q does not say the network's store is read-only", e.Msg)
		}
		o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0", Conf: n.conf(t, nil)})
		if o.Exit != 1 {
			t.Fatalf("ADD on a read-only store: want exit 1, got %s", o)
		}
		noPanic(t, o)
		if _, _, err := cniexec.ParseError(o.Stdout); err != nil {
			t.Fatalf("ADD on a read-only store did not print a CNI error (%v): %s", err, o)
		}
		if got := mustRead(t, filepath.Join(n.dir(), "10.23.0.2")); got != recKey("a", "eth0") {
			t.Errorf("record 10.23.0.2 = %q, want a's", got)
		}
		if l := listJSON(t, "--data-dir", mnt); len(l) != 1 || l[0].Address != "10.23.0.2" || l[0].ContainerID != "a" {
			t.Errorf("list of the read-only store: %+v", l)
		}
	})
}

// TestFullFileSystem: with no space left, STATUS says so (code 50), ADD fails with a CNI
// error, and DEL still releases (it only removes files; host-local's DEL works here too).
func TestFullFileSystem(t *testing.T) {
	t.Parallel()
	mnt := mounttest.TempTmpfs(t, "size=256k")
	n := newNet(t, "1.1.0", "full", map[string]any{"subnet": "10.24.0.0/24"})
	n.dataDir = mnt
	n.add(t, "a", "eth0") // 10.24.0.2
	n.add(t, "c", "eth0") // 10.24.0.3
	filler := filepath.Join(mnt, "filler")
	mounttest.Fill(t, filler)

	e := wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
	if !strings.Contains(e.Msg, "no space") {
		t.Errorf("STATUS on a full file system: message %q does not say so", e.Msg)
	}
	wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0", Conf: n.conf(t, nil)}), 5)

	t.Run("DEL after a failed ADD still releases", func(t *testing.T) {
		o := plugin(t, cniexec.Call{Cmd: "DEL", ID: "a", IfName: "eth0", Conf: n.conf(t, nil)})
		if o.Exit != 0 || pathExists(filepath.Join(n.dir(), "10.24.0.2")) {
			t.Errorf("DEL a/eth0 on a full file system: want exit 0 and 10.24.0.2 released (as host-local does), got %s; records %v",
				o, recordFiles(t, n.dir()))
		}
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	n.del(t, "a", "eth0")
	wantOK(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), "STATUS once space is free")
	if got := n.add(t, "b", "eth0").Addrs(); len(got) != 1 || got[0] != "10.24.0.4/24" {
		t.Errorf("ADD once space is free got %v, want 10.24.0.4/24", got)
	}
	if d := diffMaps(recordFiles(t, n.dir()), map[string]string{"10.24.0.3": recKey("c", "eth0"), "10.24.0.4": recKey("b", "eth0")}); d != "" {
		t.Errorf("records at the end: %s", d)
	}
}
