package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// wantIn requires every one of parts in s.
func wantIn(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s lacks %q:\n%s", what, p, s)
		}
	}
}

// TestNoFreeDetails: code 100 keeps host-local's message and says in its details what the
// range set holds (its assignable addresses, gateway aside; how many are excluded), the
// network, and the commands that show and free its reservations; freeOnReboot when
// reservations made before this machine booted are there. STATUS's code 50 says the same.
func TestNoFreeDetails(t *testing.T) {
	t.Parallel()

	t.Run("a /30 exhausted", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "full30", map[string]any{"subnet": "10.46.0.0/30"})
		n.add(t, "a", "eth0")
		e := wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		if want := "failed to allocate for range 0: no IP addresses available in range set: 10.46.0.1-10.46.0.2"; e.Msg != want {
			t.Errorf("msg = %q, want host-local's %q", e.Msg, want)
		}
		wantIn(t, "ADD's details", e.Details,
			"network full30: range set 0 assigns 10.46.0.2 (1 address; the gateway 10.46.0.1 is never assigned), 0 of them excluded, the rest reserved.",
			"local-ipam list --network full30 --data-dir "+n.dataDir+";",
			"local-ipam usage --conf FILE",
			"local-ipam release --network full30 --data-dir "+n.dataDir+" --container ID")
		if strings.Contains(e.Details, "freeOnReboot") {
			t.Errorf("details suggest freeOnReboot though every reservation is of this boot: %s", e.Details)
		}
		s := wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		if s.Msg != "network full30: no free address in range set(s) 10.46.0.1-10.46.0.2" {
			t.Errorf("STATUS msg changed: %q", s.Msg)
		}
		wantIn(t, "STATUS's details", s.Details,
			"range set 0 assigns 10.46.0.2 (1 address; the gateway 10.46.0.1 is never assigned), 0 of them excluded",
			"local-ipam list --network full30 --data-dir "+n.dataDir+";", "local-ipam release --network full30")

		// A reservation older than this boot: freeOnReboot is named (not once it is set).
		old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := os.Chtimes(filepath.Join(n.dir(), "10.46.0.2"), old, old); err != nil {
			t.Fatal(err)
		}
		e = wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		wantIn(t, "details with a reservation of an earlier boot", e.Details,
			`1 reservation predates this machine's boot: "freeOnReboot": true in the ipam section frees such reservations`)
		s = wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		wantIn(t, "STATUS's details with a reservation of an earlier boot", s.Details, `"freeOnReboot": true`)
		withFree := n.with(map[string]any{"freeOnReboot": true})
		e = wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "b", IfName: "eth0", Conf: withFree.conf(t, nil)}), 100)
		if strings.Contains(e.Details, "freeOnReboot") {
			t.Errorf("details suggest freeOnReboot, which the config sets: %s", e.Details)
		}
	})

	t.Run("exclusions and a second range set", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "fullx", map[string]any{
			"ranges": []any{
				[]any{map[string]any{"subnet": "fd00:47::/64"}},
				[]any{map[string]any{"subnet": "10.47.0.0/29"}, map[string]any{"subnet": "10.47.1.0/24", "rangeStart": "10.47.1.10", "rangeEnd": "10.47.1.12", "gateway": "10.47.1.11"}},
			},
			"exclude": []string{"10.47.0.4/30", "10.47.1.12"},
		})
		for _, id := range []string{"a", "b", "c"} { // 10.47.0.2, .3 and 10.47.1.10
			n.add(t, id, "eth0")
		}
		e := wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "d", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		if !strings.HasPrefix(e.Msg, "failed to allocate for range 1: no IP addresses available in range set: 10.47.0.1-10.47.0.6,10.47.1.10-10.47.1.12") {
			t.Errorf("msg = %q", e.Msg)
		}
		wantIn(t, "details", e.Details,
			"network fullx: range set 1 assigns 10.47.0.2-10.47.0.6,10.47.1.10,10.47.1.12 (7 addresses; the gateways 10.47.0.1, 10.47.1.11 are never assigned), 4 of them excluded, the rest reserved.")
		if recs := recordFiles(t, n.dir()); len(recs) != 6 {
			t.Errorf("the failed ADD left records behind: %v", recs)
		}
	})

	t.Run("STATUS of an unusable store", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "unusable", map[string]any{"subnet": "10.48.0.0/24"})
		file := filepath.Join(t.TempDir(), "file")
		writeIn(t, filepath.Dir(file), "file", "")
		n.dataDir = file
		e := wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		wantIn(t, "details", e.Details, "check that "+file+"/unusable can be created or opened and written")
	})
}
