package config

import (
	"bufio"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// maxResolvConf bounds what is read of a resolv.conf (real ones are a few hundred bytes).
const maxResolvConf = 1 << 20

// DNS reads c.ResolvConf (resolv.conf format) into the result's dns section, exactly as
// host-local does: nameserver, domain, search, options; comments and short lines skipped.
func (c *Config) DNS() (types.DNS, error) {
	var dns types.DNS
	if c.ResolvConf == "" {
		return dns, nil
	}
	// Non-blocking, a regular file, and a bounded read: a FIFO or /dev/urandom named by
	// mistake must not hang the runtime's call.
	f, err := os.OpenFile(c.ResolvConf, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return dns, cnierr.IO(err, "cannot read resolvConf %s", c.ResolvConf)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return dns, cnierr.New(cnierr.IOFailure, "", "cannot read resolvConf %s: not a regular file", c.ResolvConf)
	}
	sc := bufio.NewScanner(io.LimitReader(f, maxResolvConf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return dns, cnierr.IO(err, "cannot read resolvConf %s", c.ResolvConf)
	}
	return dns, nil
}
