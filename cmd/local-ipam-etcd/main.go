// Command local-ipam-etcd is local-ipam with its second store: a cluster-wide pool kept
// in etcd (ipam.store.type "etcd"). It serves disk networks too, but local-ipam is the
// one to install as the plugin: it starts three times faster, and hands etcd networks
// to this binary, which must sit next to it.
package main

import (
	"fmt"
	"os"
	"strings"

	ipam "github.com/local-ipam/local-ipam/internal/plugin"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// buildVersion is set at build time (-ldflags -X main.buildVersion=...).
var buildVersion = "dev"

func main() {
	ipam.Main(ipam.Options{Name: "local-ipam-etcd", Version: buildVersion, OpenEtcd: open})
}

// network adapts the etcd store to what the plugin's verbs and commands use.
type network struct {
	*etcd.Store
	desc string
}

var (
	_ ipam.Network      = network{}
	_ ipam.NodeReleaser = network{}
	_ ipam.BlockLister  = network{}
)

func (n network) ListBlocks() (int, []ipam.Block, error) {
	bs, err := n.Blocks()
	if err != nil {
		return 0, nil, err
	}
	out := make([]ipam.Block, len(bs))
	for i, b := range bs {
		out[i] = ipam.Block{CIDR: b.Prefix.String(), Node: b.Node, InUse: b.InUse, Size: b.Size}
	}
	return n.BlockSize(), out, nil
}

func (n network) String() string { return n.desc }

func entry(r etcd.Record) store.Entry {
	return store.Entry{Addr: r.Addr, Owner: r.Owner, Node: r.Node, Created: r.Created}
}

func (n network) List(id string, fn func(store.Entry) error) error {
	return n.Records(func(r etcd.Record) error {
		if id != "" && r.Owner.ID != id {
			return nil
		}
		return fn(entry(r))
	})
}

func (n network) ReleaseNode(node string, releasing, freed func([]store.Entry)) (int, bool, error) {
	entries := func(rs []etcd.Record) []store.Entry {
		es := make([]store.Entry, len(rs))
		for i, r := range rs {
			es[i] = entry(r)
		}
		return es
	}
	return n.Store.ReleaseNode(node,
		func(rs []etcd.Record) { releasing(entries(rs)) },
		func(rs []etcd.Record) { freed(entries(rs)) })
}

// open opens the network with the config's store settings (defaults included); for a CNI
// call with freeOnReboot, it frees what this machine's node reserved in an earlier boot.
// Never for an operator's command: its machine's boot ID says nothing of the node's.
func open(c *config.Config, who ipam.Caller) (ipam.Network, error) {
	s := c.Store
	st, err := etcd.Open(etcd.Config{
		Endpoints: s.Endpoints, Prefix: s.Prefix,
		CertFile: s.CertFile, KeyFile: s.KeyFile, TrustedCAFile: s.TrustedCAFile,
		Username: s.Username, Password: s.Password,
		Timeout: s.Timeout, Node: s.Node, BlockSize: s.BlockSize,
	}, c.Name)
	if err != nil {
		return nil, err
	}
	if who == ipam.CNICall && c.FreeOnReboot {
		// This machine's reservations only: the others' containers did not reboot.
		b, err := os.ReadFile(disk.BootIDFile())
		if err != nil {
			st.Close()
			return nil, cnierr.IO(err, "freeOnReboot: cannot read the boot ID")
		}
		if _, err := st.FreeOnReboot(strings.TrimSpace(string(b))); err != nil {
			st.Close()
			return nil, err
		}
	}
	at := s.Endpoints[0]
	if len(s.Endpoints) > 1 {
		at += fmt.Sprintf(" and %d more", len(s.Endpoints)-1)
	}
	return network{st, "etcd store " + st.String() + " at " + at}, nil
}
