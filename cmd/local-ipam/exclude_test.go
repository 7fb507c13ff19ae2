package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestExclude: the ipam field "exclude" (addresses and CIDRs local-ipam never gives).
func TestExclude(t *testing.T) {
	t.Parallel()
	// A /28: .1 is the gateway, .2-.3 and .9 excluded, ten addresses left.
	excl := map[string]any{"subnet": "10.50.0.0/28", "exclude": []string{"10.50.0.0/30", "10.50.0.9", "192.168.0.0/16", "fd00::/8"}}
	free := []string{"4", "5", "6", "7", "8", "10", "11", "12", "13", "14"}

	t.Run("dynamic ADDs skip excluded addresses until the rest is exhausted (code 100)", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "ex", excl)
		for i, want := range free {
			got := n.add(t, fmt.Sprintf("c%d", i), "eth0").Addrs()
			if len(got) != 1 || got[0] != "10.50.0."+want+"/28" {
				t.Fatalf("ADD %d got %v, want 10.50.0.%s/28", i, got, want)
			}
		}
		e := wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "full", IfName: "eth0", Conf: n.conf(t, nil)}), 100)
		if !strings.Contains(e.Msg, "10.50.0.1-10.50.0.14") {
			t.Errorf("exhaustion message %q does not name the range set", e.Msg)
		}
		wantError(t, plugin(t, cniexec.Call{Cmd: "STATUS", Conf: n.conf(t, nil)}), 50)
		// After a DEL the round-robin walk wraps and still skips the exclusions.
		n.del(t, "c4", "eth0") // .8
		n.del(t, "c0", "eth0") // .4
		if got := n.add(t, "again", "eth0").Addrs(); len(got) != 1 || got[0] != "10.50.0.4/28" {
			t.Errorf("ADD after DELs got %v, want 10.50.0.4/28", got)
		}
	})

	t.Run("a requested excluded address fails with code 102", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "exreq", excl)
		for _, ip := range []string{"10.50.0.9", "10.50.0.2", "10.50.0.3/28"} {
			e := wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "r", IfName: "eth0", Args: "IP=" + ip, Conf: n.conf(t, nil)}), 102)
			if !strings.Contains(e.Msg, strings.TrimSuffix(ip, "/28")) {
				t.Errorf("message %q does not name %s", e.Msg, ip)
			}
		}
		// The same request through runtimeConfig.ips.
		wantError(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: "r", IfName: "eth0",
			Conf: n.conf(t, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.50.0.9/28"}}})}), 102)
		if got := recordFiles(t, n.dir()); len(got) != 0 {
			t.Errorf("refused ADDs left records: %v", got)
		}
		// A requested address that is not excluded is given.
		if got := plugin(t, cniexec.Call{Cmd: "ADD", ID: "r", IfName: "eth0", Args: "IP=10.50.0.10", Conf: n.conf(t, nil)}); got.Exit != 0 || !strings.Contains(got.Stdout, "10.50.0.10/28") {
			t.Errorf("ADD with IP=10.50.0.10: %s", got)
		}
	})

	t.Run("an invalid entry is refused with code 7", func(t *testing.T) {
		t.Parallel()
		for _, bad := range []string{"banana", "10.0.0.1/24", "10.50.0.300", "fd00::1/64", ""} {
			n := newNet(t, "1.1.0", "exbad", map[string]any{"subnet": "10.50.0.0/28", "exclude": []string{"10.50.0.9", bad}})
			for _, verb := range []string{"ADD", "STATUS"} {
				e := wantError(t, plugin(t, cniexec.Call{Cmd: verb, ID: "a", IfName: "eth0", Conf: n.conf(t, nil)}), 7)
				if !strings.Contains(e.Msg, fmt.Sprintf("%q", bad)) {
					t.Errorf("%s with exclude %q: message %q does not quote the entry", verb, bad, e.Msg)
				}
			}
			if pathExists(n.dir()) && len(recordFiles(t, n.dir())) != 0 {
				t.Errorf("exclude %q: records written", bad)
			}
		}
	})

	t.Run("usage --conf counts the excluded addresses", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "exuse", excl)
		for i := 0; i < 3; i++ {
			n.add(t, fmt.Sprintf("c%d", i), "eth0")
		}
		o := operator(t, "usage", "--conf", n.confFile(t), "--json")
		if o.Exit != 0 {
			t.Fatalf("usage --json: %s", o)
		}
		var u usageJSON
		if err := json.Unmarshal([]byte(o.Stdout), &u); err != nil || len(u.RangeSets) != 1 {
			t.Fatalf("usage --json output: %v %s", err, o)
		}
		// 14 addresses .1-.14 less the gateway = 13; excluded .2, .3, .9 = 3; in use 3.
		want := usageSet{Set: 0, Ranges: "10.50.0.1-10.50.0.14", Size: 13, InUse: 3, Excluded: 3, Free: 7, Percent: 30}
		if u.RangeSets[0] != want {
			t.Errorf("usage = %+v, want %+v", u.RangeSets[0], want)
		}
	})
}
