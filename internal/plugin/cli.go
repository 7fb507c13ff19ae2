package plugin

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// UsageText is the operator's help.
const UsageText = `local-ipam: a CNI IPAM plugin (a runtime runs it with CNI_COMMAND=ADD, DEL,
CHECK, GC, STATUS or VERSION and the network config on stdin).

Operator's commands:
  local-ipam list    [--data-dir DIR] [--network NAME] [--json]
  local-ipam list    --conf FILE [--json]
        every allocation: network, address, container ID, ifname, when it was made
        (and by which node, for an etcd store)
  local-ipam usage   --conf FILE [--json]
        for a network config or conflist, per range set: size, in use, excluded,
        free, percent used
  local-ipam release --network NAME --container ID [--ifname IF] [--data-dir DIR]
  local-ipam release --conf FILE --container ID [--ifname IF]
        release a container's addresses (all its interfaces unless --ifname), safely
        under the network's lock (by transaction, for an etcd store)
  local-ipam release --conf FILE --node NAME
        etcd store: release every address a machine gone for good reserved, and
        free its node name for another machine (batch by batch; re-run to go on)
  local-ipam version
  local-ipam help

--data-dir defaults to ` + config.DefaultDataDir + `. --conf takes a network config or
conflist; a network kept in etcd (ipam.store.type "etcd") is reached only through it.
`

// errUsage marks a mistyped command line: one line, the usage, exit 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func runCLI(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout)
	var ue errUsage
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "local-ipam: %s\n\n%s", ue.msg, UsageText)
		return 2
	default:
		fmt.Fprintf(stderr, "local-ipam: %s\n", errText(err))
		return 1
	}
}

func dispatch(args []string, stdout io.Writer) error {
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, UsageText)
		return nil
	case "version", "--version":
		fmt.Fprintf(stdout, "%s %s\nCNI spec versions: %s\n", opts.Name, opts.Version, strings.Join(version.All.SupportedVersions(), ", "))
		return nil
	case "list":
		return cmdList(args[1:], stdout)
	case "usage":
		return cmdUsage(args[1:], stdout)
	case "release":
		return cmdRelease(args[1:], stdout)
	}
	return errUsage{fmt.Sprintf("unknown command %q", args[0])}
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

type listEntry struct {
	Network     string    `json:"network"`
	Address     string    `json:"address"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	Node        string    `json:"node,omitempty"`
	Created     time.Time `json:"created"`
	addr        netip.Addr
}

// loadConf reads a network config or conflist file as the runtime would hand it to the
// IPAM plugin.
func loadConf(file string) (*config.Config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	stdin, err := pluginConf(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	return config.Load(stdin, "")
}

// openEtcd opens a network kept in etcd for an operator's command, which acts for no
// node (no freeOnReboot: the operator's machine is not the network's); without the etcd
// store in this binary, the command is handed to local-ipam-etcd (no return then).
func openEtcd(c *config.Config) (Network, error) {
	if opts.OpenEtcd == nil {
		return nil, handoff(nil)
	}
	return opts.OpenEtcd(c, false)
}

func cmdList(args []string, stdout io.Writer) error {
	fs := newFlags("list")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "")
	network := fs.String("network", "", "")
	confFile := fs.String("conf", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	entries := []listEntry{}
	var etcdNet Network
	if *confFile != "" {
		c, err := loadConf(*confFile)
		if err != nil {
			return err
		}
		*network = c.Name
		*dataDir = c.DataDir
		if c.Store.Type == config.StoreEtcd {
			if etcdNet, err = openEtcd(c); err != nil {
				return err
			}
			defer etcdNet.Close()
		}
	}
	if etcdNet != nil {
		l, ok := etcdNet.(Lister)
		if !ok {
			return fmt.Errorf("%s cannot list its reservations", etcdNet)
		}
		err := l.List(func(e Entry) error {
			entries = append(entries, listEntry{*network, e.Addr.String(), e.Owner.ID, e.Owner.IfName, e.Node, e.Created.UTC(), e.Addr})
			return nil
		})
		if err != nil {
			return err
		}
	} else {
		nets := []string{*network}
		if *network == "" {
			var err error
			if nets, err = disk.Networks(*dataDir); err != nil {
				return err
			}
		}
		for _, n := range nets {
			err := disk.ReadRecords(*dataDir, n, func(r disk.Record, created time.Time) error {
				if !r.Regular || r.Content == "" {
					return nil // blocks an address, but holds no allocation
				}
				o := r.Owner()
				entries = append(entries, listEntry{n, r.Addr.String(), o.ID, o.IfName, "", created.UTC(), r.Addr})
				return nil
			})
			if err != nil {
				return err
			}
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
	if etcdNet != nil {
		fmt.Fprintln(tw, "NETWORK\tADDRESS\tCONTAINER\tIFNAME\tNODE\tCREATED")
	} else {
		fmt.Fprintln(tw, "NETWORK\tADDRESS\tCONTAINER\tIFNAME\tCREATED")
	}
	for _, e := range entries {
		ifname := e.IfName
		if ifname == "" {
			ifname = "-" // a record of an old host-local: container ID only
		}
		if etcdNet != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Network, e.Address, e.ContainerID, ifname, e.Node, e.Created.Format(time.RFC3339))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Network, e.Address, e.ContainerID, ifname, e.Created.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

type setUsage struct {
	Set      int     `json:"set"`
	Ranges   string  `json:"ranges"`
	Size     uint64  `json:"size"`
	InUse    uint64  `json:"inUse"`
	Excluded uint64  `json:"excluded"`
	Free     uint64  `json:"free"`
	Percent  float64 `json:"percentUsed"`
	// Saturated: the set holds 2^64 addresses or more; size and free are then 2^64-1.
	Saturated bool `json:"saturated,omitempty"`
}

type netUsage struct {
	Network string     `json:"network"`
	DataDir string     `json:"dataDir,omitempty"`
	Store   []string   `json:"etcdEndpoints,omitempty"`
	Sets    []setUsage `json:"rangeSets"`
}

// usageOf counts one range set: count answers how many addresses of [from, to] are
// reserved, so that a store that can count without listing (etcd) never lists.
func usageOf(idx int, set ranges.Set, excl ranges.Exclusions, count func(from, to netip.Addr) (uint64, error)) (setUsage, error) {
	su := setUsage{Set: idx, Ranges: set.String()}
	for _, r := range set {
		n, exact := ranges.Size(r.Start, r.End)
		su.Size = addSat(su.Size, n)
		su.Saturated = su.Saturated || !exact || su.Size == math.MaxUint64
		ex := excl.Count(r.Start, r.End)
		inUse, err := count(r.Start, r.End)
		if err != nil {
			return su, err
		}
		// Reserved and excluded: counted as in use, not as excluded.
		var exInUse uint64
		for _, iv := range excl {
			from, to := maxAddr(iv.From, r.Start), minAddr(iv.To, r.End)
			if from.Compare(to) > 0 {
				continue
			}
			k, err := count(from, to)
			if err != nil {
				return su, err
			}
			exInUse += k
		}
		if r.Contains(r.Gateway) {
			// The gateway is never given out: not part of the size, nor of what is used.
			su.Size--
			_, gwExcluded := excl.Covering(r.Gateway)
			if gwExcluded {
				ex--
			}
			k, err := count(r.Gateway, r.Gateway)
			if err != nil {
				return su, err
			}
			inUse -= k
			if gwExcluded {
				exInUse -= k
			}
		}
		su.InUse += inUse
		su.Excluded = addSat(su.Excluded, ex-exInUse)
	}
	su.Free = su.Size - su.InUse - su.Excluded
	if avail := su.Size - su.Excluded; avail > 0 {
		su.Percent = math.Round(float64(su.InUse)/float64(avail)*1000) / 10
	}
	return su, nil
}

func maxAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

func minAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) <= 0 {
		return a
	}
	return b
}

func cmdUsage(args []string, stdout io.Writer) error {
	fs := newFlags("usage")
	confFile := fs.String("conf", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *confFile == "" {
		return errUsage{"usage: --conf FILE is required"}
	}
	c, err := loadConf(*confFile)
	if err != nil {
		return err
	}
	u := netUsage{Network: c.Name, DataDir: c.DataDir}
	var count func(from, to netip.Addr) (uint64, error)
	if c.Store.Type == config.StoreEtcd {
		u.DataDir, u.Store = "", c.Store.Endpoints
		st, err := openEtcd(c)
		if err != nil {
			return err
		}
		defer st.Close()
		ctr, ok := st.(Counter)
		if !ok {
			return fmt.Errorf("%s cannot count its reservations", st)
		}
		count = func(from, to netip.Addr) (uint64, error) {
			n, err := ctr.CountReserved(from, to)
			return uint64(n), err
		}
	} else {
		var taken []netip.Addr
		err = disk.ReadRecords(c.DataDir, c.Name, func(r disk.Record, _ time.Time) error {
			if !r.Regular || r.Content != "" {
				taken = append(taken, r.Addr)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(taken, netip.Addr.Compare)
		count = func(from, to netip.Addr) (uint64, error) {
			i, _ := slices.BinarySearchFunc(taken, from, netip.Addr.Compare)
			j, found := slices.BinarySearchFunc(taken, to, netip.Addr.Compare)
			if found {
				j++
			}
			return uint64(max(j-i, 0)), nil
		}
	}
	for i, set := range c.Pool.Sets {
		su, err := usageOf(i, set, c.Pool.Exclude, count)
		if err != nil {
			return err
		}
		u.Sets = append(u.Sets, su)
	}
	if *asJSON {
		return writeJSON(stdout, u)
	}
	where := u.DataDir
	if where == "" {
		where = "etcd " + strings.Join(u.Store, ",")
	}
	fmt.Fprintf(stdout, "network %s (%s)\n", u.Network, where)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SET\tSIZE\tIN USE\tEXCLUDED\tFREE\tUSED\t  RANGES")
	for _, s := range u.Sets {
		size, free := fmt.Sprint(s.Size), fmt.Sprint(s.Free)
		if s.Saturated {
			size, free = ">=2^64", "~2^64"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%.1f%%\t  %s\n", s.Set, size, s.InUse, s.Excluded, free, s.Percent, s.Ranges)
	}
	return tw.Flush()
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// pluginConf turns a network config or a conflist into what a runtime would send the IPAM
// plugin: for a conflist, the first plugin with an ipam section, given the list's name and
// cniVersion (as libcni does).
func pluginConf(raw []byte) ([]byte, error) {
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	if list.Plugins == nil {
		return raw, nil
	}
	for _, p := range list.Plugins {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		if _, ok := m["ipam"]; ok {
			m["name"], m["cniVersion"] = list.Name, list.CNIVersion
			return json.Marshal(m)
		}
	}
	return nil, errors.New("no plugin of the conflist has an ipam section")
}

func cmdRelease(args []string, stdout io.Writer) error {
	fs := newFlags("release")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "")
	network := fs.String("network", "", "")
	confFile := fs.String("conf", "", "")
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
		c, err := loadConf(*confFile)
		if err != nil {
			return err
		}
		*network, *dataDir = c.Name, c.DataDir
		if c.Store.Type == config.StoreEtcd {
			if st, err = openEtcd(c); err != nil {
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
		// Never create a network (or a data dir) by mistyping its name.
		if fi, err := os.Lstat(filepath.Join(*dataDir, *network)); err != nil || !fi.IsDir() {
			fmt.Fprintf(stdout, "nothing reserved for container %s in network %s (no directory %s)\n",
				*container, *network, filepath.Join(*dataDir, *network))
			return nil
		}
		ds, err := disk.Open(*dataDir, *network, disk.Options{})
		if err != nil {
			return err
		}
		st = ds
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
		var err error
		switch st := st.(type) {
		case *disk.Store:
			err = st.Records(func(r disk.Record) error {
				if o := r.Owner(); r.Regular && o.ID == *container {
					all = append(all, freed{r.Addr, o})
				}
				return nil
			})
		case Lister:
			err = st.List(func(e Entry) error {
				if e.Owner.ID == *container {
					all = append(all, freed{e.Addr, e.Owner})
				}
				return nil
			})
		default:
			err = fmt.Errorf("%s cannot list its reservations", st)
		}
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
		fmt.Fprintf(stdout, "nothing reserved for container %s in network %s\n", *container, *network)
		return nil
	}
	for _, f := range done {
		printReleased(stdout, f.addr, f.o)
	}
	return nil
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
	n, cleared, err := nr.ReleaseNode(node, func(es []Entry) {
		announced += len(es)
		for _, e := range es {
			printRelease(stdout, "releasing", e.Addr, e.Owner)
		}
	}, func(es []Entry) {
		for _, e := range es {
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
