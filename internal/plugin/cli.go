package main

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

const usageText = `local-ipam: a CNI IPAM plugin (a runtime runs it with CNI_COMMAND=ADD, DEL,
CHECK, GC, STATUS or VERSION and the network config on stdin).

Operator's commands:
  local-ipam list    [--data-dir DIR] [--network NAME] [--json]
        every allocation: network, address, container ID, ifname, when it was made
  local-ipam usage   --conf FILE [--json]
        for a network config or conflist, per range set: size, in use, excluded,
        free, percent used
  local-ipam release --network NAME --container ID [--ifname IF] [--data-dir DIR]
        release a container's addresses (all its interfaces unless --ifname), safely
        under the network's lock
  local-ipam version
  local-ipam help

--data-dir defaults to ` + config.DefaultDataDir + `.
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
		fmt.Fprintf(stderr, "local-ipam: %s\n\n%s", ue.msg, usageText)
		return 2
	default:
		fmt.Fprintf(stderr, "local-ipam: %s\n", errText(err))
		return 1
	}
}

func dispatch(args []string, stdout io.Writer) error {
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	case "version", "--version":
		fmt.Fprintf(stdout, "local-ipam %s\nCNI spec versions: %s\n", buildVersion, strings.Join(version.All.SupportedVersions(), ", "))
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
	Created     time.Time `json:"created"`
	addr        netip.Addr
}

func cmdList(args []string, stdout io.Writer) error {
	fs := newFlags("list")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "")
	network := fs.String("network", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	nets := []string{*network}
	if *network == "" {
		var err error
		if nets, err = disk.Networks(*dataDir); err != nil {
			return err
		}
	}
	entries := []listEntry{}
	for _, n := range nets {
		err := disk.ReadRecords(*dataDir, n, func(r disk.Record, created time.Time) error {
			if !r.Regular || r.Content == "" {
				return nil // blocks an address, but holds no allocation
			}
			o := r.Owner()
			entries = append(entries, listEntry{n, r.Addr.String(), o.ID, o.IfName, created.UTC(), r.Addr})
			return nil
		})
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
	fmt.Fprintln(tw, "NETWORK\tADDRESS\tCONTAINER\tIFNAME\tCREATED")
	for _, e := range entries {
		ifname := e.IfName
		if ifname == "" {
			ifname = "-" // a record of an old host-local: container ID only
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Network, e.Address, e.ContainerID, ifname, e.Created.Format(time.RFC3339))
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
	DataDir string     `json:"dataDir"`
	Sets    []setUsage `json:"rangeSets"`
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
	raw, err := os.ReadFile(*confFile)
	if err != nil {
		return err
	}
	stdin, err := pluginConf(raw)
	if err != nil {
		return fmt.Errorf("%s: %v", *confFile, err)
	}
	c, err := config.Load(stdin, "")
	if err != nil {
		return err
	}
	u := netUsage{Network: c.Name, DataDir: c.DataDir}
	taken := map[netip.Addr]bool{}
	err = disk.ReadRecords(c.DataDir, c.Name, func(r disk.Record, _ time.Time) error {
		if !r.Regular || r.Content != "" {
			taken[r.Addr] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, set := range c.Pool.Sets {
		su := setUsage{Set: i, Ranges: set.String()}
		for _, r := range set {
			n, exact := ranges.Size(r.Start, r.End)
			su.Size = addSat(su.Size, n)
			su.Saturated = su.Saturated || !exact || su.Size == math.MaxUint64
			ex := c.Pool.Exclude.Count(r.Start, r.End)
			if r.Contains(r.Gateway) {
				su.Size--
				if _, ok := c.Pool.Exclude.Covering(r.Gateway); ok {
					ex--
				}
			}
			su.Excluded = addSat(su.Excluded, ex)
		}
		for a := range taken {
			if i := set.RangeFor(a); i >= 0 && a != set[i].Gateway {
				su.InUse++
				if _, ok := c.Pool.Exclude.Covering(a); ok {
					su.Excluded-- // counted as in use, not as excluded
				}
			}
		}
		su.Free = su.Size - su.InUse - su.Excluded
		if avail := su.Size - su.Excluded; avail > 0 {
			su.Percent = math.Round(float64(su.InUse)/float64(avail)*1000) / 10
		}
		u.Sets = append(u.Sets, su)
	}
	if *asJSON {
		return writeJSON(stdout, u)
	}
	fmt.Fprintf(stdout, "network %s (%s)\n", u.Network, u.DataDir)
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
	container := fs.String("container", "", "")
	ifname := fs.String("ifname", "", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *network == "" || *container == "" {
		return errUsage{"release: --network and --container are required"}
	}
	// Never create a network (or a data dir) by mistyping its name.
	if fi, err := os.Lstat(filepath.Join(*dataDir, *network)); err != nil || !fi.IsDir() {
		fmt.Fprintf(stdout, "nothing reserved for container %s in network %s (no directory %s)\n",
			*container, *network, filepath.Join(*dataDir, *network))
		return nil
	}
	st, err := disk.Open(*dataDir, *network, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
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
		err := st.Records(func(r disk.Record) error {
			if o := r.Owner(); r.Regular && o.ID == *container {
				all = append(all, freed{r.Addr, o})
			}
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
		fmt.Fprintf(stdout, "nothing reserved for container %s in network %s\n", *container, *network)
		return nil
	}
	for _, f := range done {
		ifn := f.o.IfName
		if ifn == "" {
			ifn = "-"
		}
		fmt.Fprintf(stdout, "released %s (container %s, ifname %s)\n", f.addr, f.o.ID, ifn)
	}
	return nil
}
