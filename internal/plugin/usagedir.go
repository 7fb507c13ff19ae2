package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/usage"
	"github.com/local-ipam/local-ipam/pkg/config"
)

// MetricsBinary writes usage's report in the Prometheus text format. It is a separate
// program because the Prometheus libraries would add to the start-up of every call of
// the plugin (docs/PERFORMANCE.md).
const MetricsBinary = "local-ipam-metrics"

// confFiles are the network config files of dir as libcni finds them: .conf, .conflist
// and .json, in name order.
func confFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			if !e.IsDir() {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// dirUsage is the usage of every network of dir whose IPAM is local-ipam or host-local;
// other configs are skipped, and a network named again in a later file is counted once
// (libcni, looking a network up by name, takes the first file). A config that cannot be
// read, or a network that cannot be counted, is an entry of Errors.
func (p *Plugin) dirUsage(dir string) usage.Report {
	rep := usage.Report{Networks: []usage.Network{}, Errors: []usage.Failure{}}
	files, err := confFiles(dir)
	if err != nil {
		rep.Errors = append(rep.Errors, usage.Failure{File: dir, Error: err.Error()})
		return rep
	}
	type netConf struct {
		file string
		c    *config.Config
	}
	var nets []netConf
	seen := map[string]bool{}
	for _, f := range files {
		name, c, ours, err := readNetConf(f)
		switch {
		case err != nil:
			rep.Errors = append(rep.Errors, usage.Failure{File: f, Network: name, Error: errText(err)})
		case ours && !seen[c.Name]:
			seen[c.Name] = true
			nets = append(nets, netConf{f, c})
		}
	}
	// Networks kept in etcd are local-ipam-etcd's: it is given the whole command (it
	// counts disk networks too). Without it, they are errors and the others are counted.
	var handoffErr error
	for _, n := range nets {
		if p.handsOff(n.c) {
			handoffErr = handoff(nil) // returns only on failure
			break
		}
	}
	for _, n := range nets {
		if p.handsOff(n.c) {
			rep.Errors = append(rep.Errors, failure(n.file, n.c, handoffErr))
			continue
		}
		u, err := p.networkUsage(n.c)
		if err != nil {
			rep.Errors = append(rep.Errors, failure(n.file, n.c, err))
			continue
		}
		u.File = n.file
		rep.Networks = append(rep.Networks, u)
	}
	return rep
}

// readConfFile reads a file of a config directory: a regular file (a FIFO named *.conf
// would block the report) of at most maxConf bytes.
func readConfFile(file string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	return readMax(f, file)
}

// readNetConf reads a config file of a config directory: its network's name and config;
// ours is false for a config whose IPAM is neither local-ipam (or local-ipam-etcd) nor
// host-local (or that has none).
func readNetConf(file string) (name string, c *config.Config, ours bool, err error) {
	raw, err := readConfFile(file)
	if err != nil {
		return "", nil, false, err
	}
	stdin, err := config.PluginConf(raw)
	if err != nil {
		if json.Valid(raw) {
			return "", nil, false, nil // a conflist without an ipam section
		}
		return "", nil, false, fmt.Errorf("not a network config: %v", err)
	}
	var conf struct {
		Name string `json:"name"`
		IPAM struct {
			Type string `json:"type"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return "", nil, false, fmt.Errorf("not a network config: %v", err)
	}
	if t := conf.IPAM.Type; t != "local-ipam" && t != "host-local" && t != EtcdBinary {
		return conf.Name, nil, false, nil
	}
	c, err = config.Load(stdin, "")
	return conf.Name, c, err == nil, err
}

// runMetrics hands the report, as JSON on stdin, to local-ipam-metrics next to this
// executable, which writes it to stdout in the Prometheus text format.
func runMetrics(rep usage.Report, stdout io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Join(filepath.Dir(self), MetricsBinary)
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("--format prometheus needs %s, installed in the same directory as %s (%s)", MetricsBinary, filepath.Base(self), filepath.Dir(self))
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(b), stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v", bin, err)
	}
	return nil
}
