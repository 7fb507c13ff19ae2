package plugin

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

type setUsage struct {
	Set      int     `json:"set"`
	Ranges   string  `json:"ranges"`
	Size     uint64  `json:"size"`
	InUse    uint64  `json:"inUse"`
	Excluded uint64  `json:"excluded"`
	Free     uint64  `json:"free"`
	Percent  float64 `json:"percentUsed"`
	// Saturated: the set holds 2^64 addresses or more; size and free are then about 2^64.
	Saturated bool `json:"saturated,omitempty"`
}

type netUsage struct {
	Network string     `json:"network"`
	DataDir string     `json:"dataDir,omitempty"`
	Store   []string   `json:"etcdEndpoints,omitempty"`
	Sets    []setUsage `json:"rangeSets"`
}

// cmdUsage counts, per range set of a network config or conflist, what is in use,
// excluded and free (the math is ranges.Set.Usage).
func (p *Plugin) cmdUsage(args []string, stdout io.Writer) error {
	fs := newFlags("usage")
	confFile := fs.String(confFlag, "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *confFile == "" {
		return errUsage{"usage: --conf FILE (or - for stdin) is required"}
	}
	c, err := p.loadConf(fs)
	if err != nil {
		return err
	}
	u := netUsage{Network: c.Name, DataDir: c.DataDir}
	if c.Store.Type == config.StoreEtcd {
		u.DataDir, u.Store = "", c.Store.Endpoints
	}
	st, err := p.openNetwork(c, OperatorRead, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	count := func(from, to netip.Addr) (uint64, error) {
		n, err := st.CountReserved(from, to)
		return uint64(n), err
	}
	for i, set := range c.Pool.Sets {
		su, err := set.Usage(c.Pool.Exclude, count)
		if err != nil {
			return err
		}
		u.Sets = append(u.Sets, setUsage{
			Set: i, Ranges: set.String(), Size: su.Size, InUse: su.InUse, Excluded: su.Excluded,
			Free: su.Free, Percent: su.Percent(), Saturated: su.Saturated,
		})
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
