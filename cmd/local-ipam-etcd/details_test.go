package main

import (
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

// TestEtcdDetails: on an etcd network, code 100 and STATUS's code 50 say in their details
// what the range set holds and which commands (by --conf) show and free reservations; a
// misspelled key is named on stderr once, though local-ipam hands the call to
// local-ipam-etcd, which reads the config again.
func TestEtcdDetails(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("full30", eps, map[string]any{"subnet": "10.46.0.0/30"})
	wantOK(t, add(t, n, "a", "c1"), "ADD of the only address")
	e := wantCode(t, add(t, n, "a", "c2"), 100, "ADD on a full /30")
	if want := "failed to allocate for range 0: no IP addresses available in range set: 10.46.0.1-10.46.0.2"; e.Msg != want {
		t.Errorf("msg = %q, want host-local's %q", e.Msg, want)
	}
	for _, part := range []string{
		"network full30: range set 0 assigns 10.46.0.2 (1 address; the gateway 10.46.0.1 is never assigned), 0 of them excluded",
		"local-ipam list --conf FILE;", "local-ipam usage --conf FILE", "local-ipam release --conf FILE --container ID",
	} {
		if !strings.Contains(e.Details, part) {
			t.Errorf("ADD's details lack %q: %s", part, e.Details)
		}
	}
	s := wantCode(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, "a", nil)}), 50, "STATUS on a full /30")
	if !strings.Contains(s.Details, "range set 0 assigns 10.46.0.2 (1 address") || !strings.Contains(s.Details, "local-ipam list --conf FILE") {
		t.Errorf("STATUS's details: %s", s.Details)
	}

	typo := newEtcdNet("typo", eps, map[string]any{"subnet": "10.47.0.0/24", "exlcude": []string{"10.47.0.0/28"}})
	o := add(t, typo, "a", "c1")
	wantOK(t, o, "ADD with a misspelled key")
	if want := `local-ipam: unknown key "exlcude", did you mean "exclude"? (at ipam.exlcude)` + "\n"; o.Stderr != want {
		t.Errorf("stderr = %q, want %q once", o.Stderr, want)
	}
	if got := o.Addrs(t); len(got) != 1 || got[0] != "10.47.0.2/24" {
		t.Errorf("ADD got %v, want 10.47.0.2/24 (the misspelled exclusion ignored)", got)
	}
}
