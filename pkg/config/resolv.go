package config

import (
	"bufio"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// DNS reads c.ResolvConf (resolv.conf format) into the result's dns section, exactly as
// host-local does: nameserver, domain, search, options; comments and short lines skipped.
func (c *Config) DNS() (types.DNS, error) {
	var dns types.DNS
	if c.ResolvConf == "" {
		return dns, nil
	}
	f, err := os.Open(c.ResolvConf)
	if err != nil {
		return dns, cnierr.IO(err, "cannot read resolvConf %s", c.ResolvConf)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
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
