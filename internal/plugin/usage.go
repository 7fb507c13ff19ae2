package plugin

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/local-ipam/local-ipam/internal/usage"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// cmdUsage counts, per range set of a network config or conflist (--conf) or of every
// local-ipam and host-local network of a config directory (--conf-dir), what is in use,
// excluded and free, and tells whether the network can serve an ADD now; it writes that
// as a table, JSON, or (through local-ipam-metrics) Prometheus metrics.
func (p *Plugin) cmdUsage(args []string, stdout io.Writer) error {
	fs := newFlags("usage")
	confFile := fs.String(confFlag, "", "")
	confDir := fs.String("conf-dir", "", "")
	asJSON := fs.Bool("json", false, "")
	format := fs.String("format", "table", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *asJSON && isSet(fs, "format") && *format != "json":
		return errUsage{"usage: --json and --format " + *format + " disagree"}
	case *asJSON:
		*format = "json"
	case *format != "table" && *format != "json" && *format != "prometheus":
		return errUsage{fmt.Sprintf("usage: --format %q: table, json or prometheus", *format)}
	}
	if (*confFile == "") == (*confDir == "") {
		return errUsage{"usage: --conf FILE or --conf-dir DIR is required (one of them)"}
	}
	var rep usage.Report
	if *confDir != "" {
		rep = p.dirUsage(*confDir)
		if len(rep.Networks) == 0 && len(rep.Errors) == 0 && *format != "prometheus" {
			// Nothing to count: a mistyped directory, or configs of other IPAM plugins.
			files, _ := confFiles(*confDir)
			s := "s"
			if len(files) == 1 {
				s = ""
			}
			return fmt.Errorf("no local-ipam or host-local network in %s (%d config file%s read)", *confDir, len(files), s)
		}
	} else {
		c, err := p.loadConf(fs)
		if err == nil {
			var n usage.Network
			if n, err = p.networkUsage(c); err == nil {
				n.File = *confFile
				rep.Networks = append(rep.Networks, n)
			}
		}
		if err != nil {
			if *format != "prometheus" {
				return err
			}
			rep.Errors = append(rep.Errors, failure(*confFile, c, err))
		}
	}
	var err error
	switch {
	case *format == "prometheus":
		return runMetrics(rep, stdout)
	case *format == "json" && *confFile != "":
		err = writeJSON(stdout, rep.Networks[0])
	case *format == "json":
		err = writeJSON(stdout, rep)
	default:
		err = writeUsageTable(stdout, rep)
	}
	if err == nil && len(rep.Errors) > 0 {
		msgs := make([]string, len(rep.Errors))
		for i, f := range rep.Errors {
			msgs[i] = f.File + ": " + f.Error
		}
		err = fmt.Errorf("%d network(s) of %s could not be read: %s", len(rep.Errors), *confDir, strings.Join(msgs, "; "))
	}
	return err
}

// networkUsage counts c's network (ranges.Set.Usage) and asks it STATUS's question.
func (p *Plugin) networkUsage(c *config.Config) (usage.Network, error) {
	u := usage.Network{Network: c.Name, DataDir: c.DataDir, Sets: []usage.Set{}}
	if c.Store.Type == config.StoreEtcd {
		u.DataDir, u.Store = "", c.Store.Endpoints
	}
	st, err := p.openNetwork(c, OperatorRead, disk.Options{})
	if err != nil {
		return u, err
	}
	defer st.Close()
	count := func(from, to netip.Addr) (uint64, error) {
		n, err := st.CountReserved(from, to)
		return uint64(n), err
	}
	for i, set := range c.Pool.Sets {
		su, err := set.Usage(c.Pool.Exclude, count)
		if err != nil {
			return u, err
		}
		family := "ipv6"
		if set.Is4() {
			family = "ipv4"
		}
		u.Sets = append(u.Sets, usage.Set{
			Set: i, Ranges: set.String(), Family: family,
			Size: usage.NewCount(su.Size), InUse: usage.NewCount(su.InUse),
			Excluded: usage.NewCount(su.Excluded), Free: usage.NewCount(su.Free),
			Percent: su.Percent(),
		})
	}
	// A set has an address to give when its count of free addresses is not 0: the
	// counts read the records, which a reader of the store, holding no lock, goes by.
	avail := make([]bool, len(u.Sets))
	for i, s := range u.Sets {
		avail[i] = s.Free.Int().Sign() > 0
	}
	if err := ready(c, st, avail); err != nil {
		u.NotReady = err.Error()
	} else {
		u.Ready = true
	}
	return u, nil
}

func failure(file string, c *config.Config, err error) usage.Failure {
	f := usage.Failure{File: file, Error: errText(err)}
	if c != nil {
		f.Network = c.Name
	}
	return f
}

// writeUsageTable writes each network's title (where it is kept, whether it can serve an
// ADD) and its table; counts of 2^40 and more in a short exact form (usage.Count.Readable).
func writeUsageTable(w io.Writer, rep usage.Report) error {
	for i, u := range rep.Networks {
		if i > 0 {
			fmt.Fprintln(w)
		}
		where := u.DataDir
		if where == "" {
			where = "etcd " + strings.Join(u.Store, ",")
		}
		state := "ready"
		if !u.Ready {
			state = "NOT READY: " + u.NotReady
		}
		fmt.Fprintf(w, "network %s (%s): %s\n", u.Network, where, state)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "SET\tSIZE\tIN USE\tEXCLUDED\tFREE\tUSED\t  RANGES")
		for _, s := range u.Sets {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%.1f%%\t  %s\n", s.Set, s.Size.Readable(), s.InUse.Readable(),
				s.Excluded.Readable(), s.Free.Readable(), s.Percent, s.Ranges)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
