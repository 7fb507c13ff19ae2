package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestCheck: CHECK compares the config's prevResult (the ADD's result) with the store.
func TestCheck(t *testing.T) {
	t.Parallel()
	dual := map[string]any{"ranges": []any{
		[]any{map[string]any{"subnet": "10.30.0.0/24"}},
		[]any{map[string]any{"subnet": "fd00:30::/120"}},
	}}
	check := func(t *testing.T, n *netw, id, ifname string, prev any) cniexec.Out {
		t.Helper()
		return plugin(t, cniexec.Call{Cmd: "CHECK", ID: id, IfName: ifname, Conf: n.conf(t, map[string]any{"prevResult": prev})})
	}

	for _, v := range []string{"1.0.0", "1.1.0"} {
		t.Run("passes with the true prevResult (cniVersion "+v+")", func(t *testing.T) {
			t.Parallel()
			n := newNet(t, v, "ckok", dual)
			r := n.add(t, "a", "eth0")
			n.add(t, "a", "eth1")
			n.add(t, "b", "eth0")
			wantOK(t, check(t, n, "a", "eth0", r.Raw), "CHECK a/eth0")
		})
	}

	t.Run("fails with 105 naming the address when prevResult lists another container's", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.0.0", "ckother", dual)
		n.add(t, "a", "eth0")          // 10.30.0.2, fd00:30::2
		other := n.add(t, "b", "eth0") // 10.30.0.3, fd00:30::3
		e := wantError(t, check(t, n, "a", "eth0", other.Raw), 105)
		if !strings.Contains(e.Msg, "10.30.0.3") {
			t.Errorf("message %q does not name 10.30.0.3", e.Msg)
		}
		// Same interface name, other container: b's address is not a's even on eth0.
		prev := rawJSON(`{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.2/24"},{"address":"fd00:30::3/120"}]}`)
		e = wantError(t, check(t, n, "a", "eth0", prev), 105)
		if !strings.Contains(e.Msg, "fd00:30::3") {
			t.Errorf("message %q does not name fd00:30::3", e.Msg)
		}
	})

	t.Run("fails with 105 when the record was removed by hand", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.0.0", "ckrm", dual)
		r := n.add(t, "a", "eth0")
		wantOK(t, check(t, n, "a", "eth0", r.Raw), "CHECK before the removal")
		if err := os.Remove(filepath.Join(n.dir(), "fd00:30::2")); err != nil {
			t.Fatal(err)
		}
		e := wantError(t, check(t, n, "a", "eth0", r.Raw), 105)
		if !strings.Contains(e.Msg, "fd00:30::2") {
			t.Errorf("message %q does not name fd00:30::2", e.Msg)
		}
	})

	t.Run("fails with 105 for a range set in which the attachment holds nothing", func(t *testing.T) {
		t.Parallel()
		v4 := newNet(t, "1.0.0", "ckset", map[string]any{"subnet": "10.30.0.0/24"})
		r := v4.add(t, "a", "eth0")
		wantOK(t, check(t, v4, "a", "eth0", r.Raw), "CHECK with the ADD's config")
		// The operator added an IPv6 range set to the config since the ADD.
		both := v4.with(map[string]any{"ranges": dual["ranges"]})
		delete(both.ipam, "subnet")
		e := wantError(t, check(t, both, "a", "eth0", r.Raw), 105)
		if !strings.Contains(e.Msg, "range set 1") || !strings.Contains(e.Msg, "fd00:30::") {
			t.Errorf("message %q does not name range set 1 (fd00:30::/120)", e.Msg)
		}
	})

	t.Run("fails with 105 when prevResult omits an address the attachment holds", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.0.0", "ckomit", dual)
		n.add(t, "a", "eth0")
		prev := rawJSON(`{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.2/24"}]}`)
		e := wantError(t, check(t, n, "a", "eth0", prev), 105)
		if !strings.Contains(e.Msg, "fd00:30::2") {
			t.Errorf("message %q does not name fd00:30::2", e.Msg)
		}
	})

	t.Run("passes for a legacy (container ID only) record of the container", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.0.0", "cklegacy", map[string]any{"subnet": "10.30.0.0/24"})
		n.add(t, "other", "eth0")
		if err := os.WriteFile(filepath.Join(n.dir(), "10.30.0.77"), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		prev := rawJSON(`{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.77/24","gateway":"10.30.0.1"}]}`)
		wantOK(t, check(t, n, "old", "eth0", prev), "CHECK of a legacy record")
		wantOK(t, check(t, n, "old", "net1", prev), "CHECK of a legacy record from another ifname")
		wantError(t, check(t, n, "older", "eth0", prev), 105)
	})
	t.Run("passes when a legacy record in one set and an own record in the other hold prevResult", func(t *testing.T) {
		t.Parallel()
		// An old host-local left an ID-only record for the IPv4 set; the IPv6 set holds a
		// record with the ifname. host-local's CHECK counts both as the container's
		// (GetByID matches either form).
		n := newNet(t, "1.0.0", "ckmixed", dual)
		if err := os.MkdirAll(n.dir(), 0o755); err != nil {
			t.Fatal(err)
		}
		writeIn(t, n.dir(), "10.30.0.77", "ctr")
		writeIn(t, n.dir(), "fd00:30::77", recKey("ctr", "eth0"))
		prev := rawJSON(`{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.77/24"},{"address":"fd00:30::77/120"}]}`)
		wantOK(t, check(t, n, "ctr", "eth0", prev), "CHECK of a container with a legacy and an own record")
		// The same store and prevResult for another container, or a prevResult without the
		// IPv6 record, must not pass: the CHECK above passed on the records, not regardless.
		wantError(t, check(t, n, "other", "eth0", prev), 105)
		v4only := rawJSON(`{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.77/24"}]}`)
		e := wantError(t, check(t, n, "ctr", "eth0", v4only), 105)
		if !strings.Contains(e.Msg, "fd00:30::77") {
			t.Errorf("message %q does not name fd00:30::77", e.Msg)
		}
	})
}
