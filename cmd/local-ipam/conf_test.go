package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestConfForms: list, usage and release take --conf as a file, stdin (-), /dev/stdin, a
// process substitution or a named pipe, and read it once, for a disk network (the etcd
// network's forms, which go through the hand-off, are in cmd/local-ipam-etcd).
func TestConfForms(t *testing.T) {
	t.Parallel()
	bin := cniexec.Bin(t, "local-ipam")
	for i, form := range cniexec.ConfForms {
		t.Run(form.Name, func(t *testing.T) {
			t.Parallel()
			n := newNet(t, "1.1.0", "forms", map[string]any{"subnet": fmt.Sprintf("10.80.%d.0/24", i)})
			n.add(t, "keep", "eth0")
			gone := strings.TrimSuffix(n.add(t, "gone", "eth0").Addrs()[0], "/24")
			conf := n.conf(t, nil)

			o := form.Run(t, bin, conf, "list", "--json")
			var l []listed
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &l) != nil || len(l) != 2 || l[0].Network != "forms" {
				t.Errorf("list: want the 2 entries of network forms, got %s", o)
			}
			o = form.Run(t, bin, conf, "usage", "--json")
			var u usageJSON
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &u) != nil || u.Network != "forms" || len(u.RangeSets) != 1 || u.RangeSets[0].InUse != 2 {
				t.Errorf("usage: want network forms with 2 in use, got %s", o)
			}
			o = form.Run(t, bin, conf, "release", "--container", "gone")
			if want := "released " + gone + " (container gone, ifname eth0)\n"; o.Exit != 0 || o.Stdout != want {
				t.Errorf("release: want %q, got %s", want, o)
			}
		})
	}
}
