// Command local-ipam is a CNI IPAM plugin: host-local's configuration, store format and
// addresses, at a cost that does not grow with the number of allocations. Run by a
// person with a subcommand instead of CNI_COMMAND, it is also the operator's tool. A
// network kept in etcd is served by local-ipam-etcd, to which this binary hands the call.
package main

import ipam "github.com/local-ipam/local-ipam/internal/plugin"

// buildVersion is set at build time (-ldflags -X main.buildVersion=...).
var buildVersion = "dev"

func main() { ipam.Main(ipam.Options{Name: "local-ipam", Version: buildVersion}) }
