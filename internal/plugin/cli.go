package plugin

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/local-ipam/local-ipam/pkg/config"
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
  local-ipam blocks  --conf FILE [--json]
        etcd store: each node-affine block (CIDR, node holding it, in use, size)
  local-ipam version
  local-ipam help

--data-dir defaults to ` + config.DefaultDataDir + `. --conf takes a network config or
conflist; a network kept in etcd (ipam.store.type "etcd") is reached only through it.
`

// errUsage marks a mistyped command line: one line, the usage, exit 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

// runCLI runs an operator's command and returns the exit code.
func (p *Plugin) runCLI(args []string, stdout, stderr io.Writer) int {
	err := p.dispatch(args, stdout)
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

func (p *Plugin) dispatch(args []string, stdout io.Writer) error {
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, UsageText)
		return nil
	case "version", "--version":
		fmt.Fprintf(stdout, "%s %s\nCNI spec versions: %s\n", p.opts.Name, p.opts.Version, strings.Join(version.All.SupportedVersions(), ", "))
		return nil
	case "list":
		return p.cmdList(args[1:], stdout)
	case "usage":
		return p.cmdUsage(args[1:], stdout)
	case "release":
		return p.cmdRelease(args[1:], stdout)
	case "blocks":
		return p.cmdBlocks(args[1:], stdout)
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

// loadConf reads a network config or conflist file as the runtime would hand it to the
// IPAM plugin.
func loadConf(file string) (*config.Config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	stdin, err := config.PluginConf(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	return config.Load(stdin, "")
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
