package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

// TestConfForms: the operator's commands take an etcd network's --conf as a file, stdin
// (-), /dev/stdin, a process substitution or a named pipe. local-ipam reads it once and
// hands the bytes, not the path, to local-ipam-etcd: a pipe read twice would be empty.
func TestConfForms(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	for i, form := range cniexec.ConfForms {
		t.Run(form.Name, func(t *testing.T) {
			n := newDualStack("forms", eps, fmt.Sprintf("10.90.%d.0/24", i), fmt.Sprintf("fd00:90:%d::/120", i))
			for _, c := range []struct{ node, id string }{{"a", "keep"}, {"a", "gone"}, {"b", "b1"}, {"b", "b2"}} {
				wantOK(t, add(t, n, c.node, c.id), "ADD "+c.id)
			}
			conf := n.conf(t, "op", nil)
			for _, bin := range []string{"local-ipam", "local-ipam-etcd"} {
				o := form.Run(t, cniexec.Bin(t, bin), conf, "list", "--json")
				var l []listed
				if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &l) != nil || len(l) != 8 {
					t.Errorf("%s list: want 8 entries, got %s", bin, o)
				}
			}
			local := cniexec.Bin(t, "local-ipam")
			o := form.Run(t, local, conf, "usage", "--json")
			var u struct {
				Network   string           `json:"network"`
				RangeSets []map[string]any `json:"rangeSets"`
			}
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &u) != nil || u.Network != "forms" || len(u.RangeSets) != 2 || fmt.Sprint(u.RangeSets[1]["inUse"]) != "4" {
				t.Errorf("usage: want network forms, 2 range sets with 4 in use, got %s", o)
			}
			// Released in address order: IPv4 first.
			o = form.Run(t, local, conf, "release", "--container", "gone")
			if o.Exit != 0 || !strings.HasPrefix(o.Stdout, "released 10.90.") || !strings.Contains(o.Stdout, "\nreleased fd00:90:") || strings.Count(o.Stdout, "\n") != 2 {
				t.Errorf("release --container gone: want its IPv4 then its IPv6 address released, got %s", o)
			}
			o = form.Run(t, local, conf, "release", "--node", "b")
			if o.Exit != 0 || strings.Count(o.Stdout, "released ") != 4 {
				t.Errorf("release --node b: want 4 addresses released, got %s", o)
			}
			if l := list(t, n); len(l) != 2 || l[0].ContainerID != "keep" || l[1].ContainerID != "keep" {
				t.Errorf("after the releases, list shows %+v, want keep's two addresses", l)
			}
		})
	}
}
