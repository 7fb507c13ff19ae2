package main

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestChainedMode: local-ipam appended to a plugin list after a main plugin that already
// used it as IPAM (top-level "type": "local-ipam" and a prevResult): ADD passes the
// prevResult on, converted to the config's version, and allocates nothing.
func TestChainedMode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, version, prev, want string
	}{
		{
			name:    "1.1.0 config, 1.0.0 prevResult from bridge",
			version: "1.1.0",
			prev: `{"cniVersion":"1.0.0",
				"interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/var/run/netns/x"}],
				"ips":[{"address":"10.80.0.5/24","gateway":"10.80.0.1","interface":1},{"address":"fd00:80::5/64","interface":1}],
				"routes":[{"dst":"0.0.0.0/0","gw":"10.80.0.1"}],
				"dns":{"nameservers":["10.80.0.1"],"search":["example.org"]}}`,
			want: `{"cniVersion":"1.1.0",
				"interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/var/run/netns/x"}],
				"ips":[{"address":"10.80.0.5/24","gateway":"10.80.0.1","interface":1},{"address":"fd00:80::5/64","interface":1}],
				"routes":[{"dst":"0.0.0.0/0","gw":"10.80.0.1"}],
				"dns":{"nameservers":["10.80.0.1"],"search":["example.org"]}}`,
		},
		{
			name:    "0.3.1 config and prevResult",
			version: "0.3.1",
			prev: `{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],
				"ips":[{"version":"4","address":"10.80.0.5/24","gateway":"10.80.0.1","interface":0}]}`,
			want: `{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],
				"ips":[{"version":"4","address":"10.80.0.5/24","gateway":"10.80.0.1","interface":0}],"dns":{}}`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			n := newNet(t, c.version, "chain", map[string]any{"subnet": "10.80.0.0/24"})
			conf := n.conf(t, map[string]any{"type": "local-ipam", "prevResult": rawJSON(c.prev)})
			o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "ctr", IfName: "eth0", Conf: conf})
			if o.Exit != 0 {
				t.Fatalf("chained ADD: %s", o)
			}
			var got, want any
			if err := json.Unmarshal([]byte(o.Stdout), &got); err != nil {
				t.Fatalf("chained ADD output is not JSON: %s", o)
			}
			if err := json.Unmarshal([]byte(c.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("chained ADD printed\n%s\nwant\n%s", o.Stdout, c.want)
			}
			if pathExists(n.dir()) && len(recordFiles(t, n.dir())) != 0 {
				t.Errorf("chained ADD allocated: %v", recordFiles(t, n.dir()))
			}
			if l := listJSON(t, "--data-dir", n.dataDir); len(l) != 0 {
				t.Errorf("chained ADD allocated: %v", l)
			}
		})
	}

	t.Run("as the IPAM of bridge (top-level type bridge) the same config allocates", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "notchained", map[string]any{"subnet": "10.80.0.0/24"})
		conf := n.conf(t, map[string]any{"prevResult": rawJSON(`{"cniVersion":"1.1.0","ips":[{"address":"10.80.0.99/24"}]}`)})
		o := plugin(t, cniexec.Call{Cmd: "ADD", ID: "ctr", IfName: "eth0", Conf: conf})
		if r := o.Result(t); o.Exit != 0 || len(r.IPs) != 1 || r.IPs[0].Address != "10.80.0.2/24" {
			t.Errorf("ADD with a prevResult as bridge's IPAM: %s", o)
		}
	})
}
