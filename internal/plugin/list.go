package plugin

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

type listEntry struct {
	Network     string    `json:"network"`
	Address     string    `json:"address"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	Node        string    `json:"node,omitempty"`
	Created     time.Time `json:"created"`
	addr        netip.Addr
}

// cmdList lists the reservations of one network (--conf, or --network in --data-dir) or
// of every disk network of the data dir.
func (p *Plugin) cmdList(args []string, stdout io.Writer) error {
	fs := newFlags("list")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "")
	network := fs.String("network", "", "")
	confFile := fs.String(confFlag, "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	var nets []*config.Config
	cluster := false // an etcd network: its entries name their node
	if *confFile != "" {
		c, err := p.loadConf(fs)
		if err != nil {
			return err
		}
		*network = c.Name
		*dataDir = c.DataDir
		if c.Store.Type == config.StoreEtcd {
			nets, cluster = []*config.Config{c}, true
		}
	}
	if !cluster {
		names := []string{*network}
		if *confFile == "" {
			var err error
			if names, err = diskNetworks(*dataDir, *network); err != nil {
				return err
			}
		}
		for _, n := range names {
			nets = append(nets, diskNetwork(*dataDir, n))
		}
	}
	entries := []listEntry{}
	for _, c := range nets {
		st, err := p.openNetwork(c, OperatorRead, disk.Options{})
		if err != nil {
			return err
		}
		err = st.List("", func(e store.Entry) error {
			entries = append(entries, listEntry{c.Name, e.Addr.String(), e.Owner.ID, e.Owner.IfName, e.Node, e.Created.UTC(), e.Addr})
			return nil
		})
		st.Close()
		if err != nil {
			return err
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Network != entries[j].Network {
			return entries[i].Network < entries[j].Network
		}
		return entries[i].addr.Less(entries[j].addr)
	})
	if *asJSON {
		return writeJSON(stdout, entries)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if cluster {
		fmt.Fprintln(tw, "NETWORK\tADDRESS\tCONTAINER\tIFNAME\tNODE\tCREATED")
	} else {
		fmt.Fprintln(tw, "NETWORK\tADDRESS\tCONTAINER\tIFNAME\tCREATED")
	}
	for _, e := range entries {
		ifname := e.IfName
		if ifname == "" {
			ifname = "-" // a record of an old host-local: container ID only
		}
		if cluster {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Network, e.Address, e.ContainerID, ifname, e.Node, e.Created.Format(time.RFC3339))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Network, e.Address, e.ContainerID, ifname, e.Created.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

// diskNetworks checks an operator's --data-dir and --network: the data dir must not be a
// network's own directory, and a named network must have a directory in it, or the
// command would answer with an empty success. It returns the networks to read: the named
// one, or every one of the data dir.
func diskNetworks(dataDir, network string) ([]string, error) {
	if looksLikeNetworkDir(dataDir) {
		dir := filepath.Clean(dataDir)
		return nil, fmt.Errorf("%s looks like a network's own directory (it holds a lock file and address records), not a data dir: use its parent, --data-dir %s (and --network %s)",
			dir, filepath.Dir(dir), filepath.Base(dir))
	}
	if network != "" {
		// "..", "." or a path would name another directory than a network's.
		if err := store.CheckNetworkName(network); err != nil {
			return nil, err
		}
	}
	names, err := disk.Networks(dataDir)
	if err != nil || network == "" {
		return names, err
	}
	if fi, err := os.Lstat(filepath.Join(dataDir, network)); err == nil && fi.IsDir() {
		return []string{network}, nil
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no network %q in %s, which holds no network", network, dataDir)
	}
	return nil, fmt.Errorf("no network %q in %s; the networks there: %s", network, dataDir, strings.Join(names, ", "))
}

// looksLikeNetworkDir tells whether dir holds a lock file and records (files named as
// addresses, or host-local's last_reserved_ip.N): what a network's directory holds and a
// data dir, which holds network directories, does not.
func looksLikeNetworkDir(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	lock, records := false, false
	for _, e := range ents {
		switch name := e.Name(); {
		case name == "lock" && e.Type().IsRegular():
			lock = true
		case e.Type().IsRegular() && strings.HasPrefix(name, "last_reserved_ip."):
			records = true
		case e.Type().IsRegular():
			if _, err := netip.ParseAddr(name); err == nil {
				records = true
			}
		}
	}
	return lock && records
}
