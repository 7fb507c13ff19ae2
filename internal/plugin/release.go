package plugin

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// cmdRelease releases a container's addresses (one interface's with --ifname), or every
// address a node reserved (--node, an etcd network).
func (p *Plugin) cmdRelease(args []string, stdout io.Writer) error {
	fs := newFlags("release")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "")
	network := fs.String("network", "", "")
	confFile := fs.String(confFlag, "", "")
	container := fs.String("container", "", "")
	ifname := fs.String("ifname", "", "")
	node := fs.String("node", "", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if (*node == "") == (*container == "") {
		return errUsage{"release: one of --container or --node is required"}
	}
	if *node != "" && (*confFile == "" || *ifname != "") {
		return errUsage{"release: --node needs --conf (an etcd network) and no --ifname"}
	}
	var st Network
	if *confFile != "" {
		c, err := p.loadConf(fs)
		if err != nil {
			return err
		}
		*network, *dataDir = c.Name, c.DataDir
		if c.Store.Type == config.StoreEtcd {
			if st, err = p.openNetwork(c, Operator, disk.Options{}); err != nil {
				return err
			}
		} else if *node != "" {
			return errUsage{"release: --node is for networks kept in etcd"}
		}
	}
	if *network == "" {
		return errUsage{"release: --network (or --conf) is required"}
	}
	if st == nil {
		if *confFile == "" {
			if _, err := diskNetworks(*dataDir, *network); err != nil {
				return err
			}
		}
		var err error
		st, err = p.openNetwork(diskNetwork(*dataDir, *network), Operator, disk.Options{})
		if errors.Is(err, errNoNetwork) {
			return fmt.Errorf("nothing reserved for container %s in network %s: it has no directory %s (nothing was ever allocated from it)",
				*container, *network, filepath.Join(*dataDir, *network))
		}
		if err != nil {
			return err
		}
	}
	defer st.Close()
	if *node != "" {
		return releaseNode(st, *node, *network, stdout)
	}
	type freed struct {
		addr netip.Addr
		o    store.Owner
	}
	var done []freed
	if *ifname != "" {
		addrs, by, err := allocator.Release(st, store.Owner{ID: *container, IfName: *ifname})
		if err != nil {
			return err
		}
		for _, a := range addrs {
			done = append(done, freed{a, by})
		}
	} else {
		var all []freed
		err := st.List(*container, func(e store.Entry) error {
			all = append(all, freed{e.Addr, e.Owner})
			return nil
		})
		if err != nil {
			return err
		}
		for _, f := range all {
			ok, err := st.Release(f.addr, f.o)
			if err != nil {
				return err
			}
			if ok {
				done = append(done, f)
			}
		}
	}
	if err := st.Commit(); err != nil {
		return err
	}
	if len(done) == 0 {
		return nothingReleased(st, *container, *ifname, *network)
	}
	slices.SortFunc(done, func(a, b freed) int { return a.addr.Compare(b.addr) })
	for _, f := range done {
		printReleased(stdout, f.addr, f.o)
	}
	return nil
}

// nothingReleased is the error of a release that matched nothing; for --ifname it names
// the interfaces the container does hold.
func nothingReleased(st Network, container, ifname, network string) error {
	held := map[string][]netip.Addr{}
	if ifname != "" {
		err := st.List(container, func(e store.Entry) error {
			name := e.Owner.IfName
			if name == "" {
				name = "-" // an ID-only record (a release by ifname would have taken it)
			}
			held[name] = append(held[name], e.Addr)
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(held) == 0 {
		return fmt.Errorf("nothing reserved for container %s in network %s ('list' shows what is)", container, network)
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(held)) {
		addrs := held[name]
		slices.SortFunc(addrs, netip.Addr.Compare)
		s := make([]string, len(addrs))
		for i, a := range addrs {
			s[i] = a.String()
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", name, strings.Join(s, ", ")))
	}
	return fmt.Errorf("nothing reserved for container %s on ifname %s in network %s; it holds %s: name one of these with --ifname, or leave --ifname out to release them all",
		container, ifname, network, strings.Join(parts, "; "))
}

func printReleased(w io.Writer, a netip.Addr, o store.Owner) {
	printRelease(w, "released", a, o)
}

func printRelease(w io.Writer, verb string, a netip.Addr, o store.Owner) {
	ifn := o.IfName
	if ifn == "" {
		ifn = "-"
	}
	fmt.Fprintf(w, "%s %s (container %s, ifname %s)\n", verb, a, o.ID, ifn)
}

// releaseNode releases everything node reserved (a machine gone for good), in batches: a
// node of any size, each batch bounded by the timeout. Each batch's addresses are printed
// as "releasing" before its transaction is sent, and as "released" once it is done: if
// the command is killed, or a transaction's answer is lost, every address it may have
// released is printed. When a batch fails, what was printed as released is released,
// and running the command again goes on.
func releaseNode(st Network, node, network string, stdout io.Writer) error {
	nr, ok := st.(NodeReleaser)
	if !ok {
		return fmt.Errorf("%s cannot release a node's reservations", st)
	}
	announced := 0
	n, cleared, err := nr.ReleaseNode(node, func(es []store.Entry) {
		announced += len(es)
		for _, e := range byAddress(es) {
			printRelease(stdout, "releasing", e.Addr, e.Owner)
		}
	}, func(es []store.Entry) {
		for _, e := range byAddress(es) {
			printReleased(stdout, e.Addr, e.Owner)
		}
	})
	if err != nil {
		if announced == 0 {
			return err
		}
		return fmt.Errorf("released %d addresses of node %s (the lines 'released' above), then failed: %s; those printed as 'releasing' only may or may not be released ('list' shows which are still reserved); run the same command again to release the rest", n, node, errText(err))
	}
	if n == 0 {
		fmt.Fprintf(stdout, "nothing reserved by node %s in network %s\n", node, network)
	}
	if cleared {
		fmt.Fprintf(stdout, "node name %s is no longer bound to a machine in network %s\n", node, network)
	}
	return nil
}

// byAddress is es sorted by address (IPv4 first), for output that does not vary.
func byAddress(es []store.Entry) []store.Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b store.Entry) int { return a.Addr.Compare(b.Addr) })
	return es
}
