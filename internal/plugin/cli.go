package plugin

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
  local-ipam usage   --conf FILE [--json | --format table|json|prometheus]
  local-ipam usage   --conf-dir DIR [--json | --format table|json|prometheus]
        for a network config or conflist, or every local-ipam and host-local network
        of a config directory, per range set: size, in use, excluded, free, percent
        used; and whether the network can serve an ADD now (STATUS). Counts are exact
        (2^64-2); in JSON, a string above 2^53. prometheus: runs local-ipam-metrics
  local-ipam release --network NAME --container ID [--ifname IF] [--data-dir DIR]
  local-ipam release --conf FILE --container ID [--ifname IF]
        release a container's addresses (all its interfaces unless --ifname), safely
        under the network's lock (by transaction, for an etcd store)
  local-ipam release --conf FILE --node NAME
        etcd store: release every address a machine gone for good reserved, and
        free its node name for another machine (batch by batch; re-run to go on)
  local-ipam install   [--dir DIR] [--as NAME]
        put local-ipam, and local-ipam-etcd (and local-ipam-metrics) from beside it, in
        the plugin directory DIR (default ` + DefaultInstallDir + `), each by an atomic rename;
        --as host-local: also as DIR/host-local, keeping a host-local there that
        is not local-ipam as host-local.orig (once)
  local-ipam uninstall [--dir DIR] [--as NAME]
        remove them; --as host-local: put host-local.orig back as host-local
  local-ipam lint    --conf FILE|- [--json]
        check a network config or conflist: unknown or misspelled keys, ranges,
        exclusions, gateways, store (docs/LINT.md); exit 1 on any finding
  local-ipam blocks  --conf FILE [--json]
        etcd store: each node-affine block (CIDR, node holding it, in use, size)
  local-ipam version
  local-ipam help

--data-dir defaults to ` + config.DefaultDataDir + `. --conf takes a network config or
conflist, from a file, a pipe or - (stdin); a network kept in etcd (ipam.store.type
"etcd") is reached only through it. Exit 2: a mistyped command line; exit 1: a failure,
or a command that would do nothing (an unknown network, a release of nothing).
`

// errUsage marks a mistyped command line: one line, the usage, exit 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

// errHelp: -h or --help after a command; the usage on stdout, exit 0.
var errHelp = errors.New("help requested")

// command runs one operator's command with its arguments (after the command's name).
type command func(p *Plugin, args []string, stdout io.Writer) error

// commands are the operator's commands by name, aliases included. A new command is one
// line here and its lines in UsageText (the tests derive the command list from it). Each
// parses its arguments with newFlags and parse, which refuse unknown flags and extra
// arguments with exit 2.
var commands = map[string]command{
	"help":      cmdHelp,
	"-h":        cmdHelp,
	"-help":     cmdHelp,
	"--help":    cmdHelp,
	"version":   (*Plugin).cmdVersion,
	"--version": (*Plugin).cmdVersion,
	"list":      (*Plugin).cmdList,
	"usage":     (*Plugin).cmdUsage,
	"release":   (*Plugin).cmdRelease,
	"install":   (*Plugin).cmdInstall,
	"uninstall": (*Plugin).cmdUninstall,
	"lint":      (*Plugin).cmdLint,
	"blocks":    (*Plugin).cmdBlocks,
}

// runCLI runs an operator's command and returns the exit code.
func (p *Plugin) runCLI(args []string, stdout, stderr io.Writer) int {
	err := p.dispatch(args, stdout)
	var ue errUsage
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, UsageText)
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
	run, ok := commands[args[0]]
	if !ok {
		return errUsage{fmt.Sprintf("unknown command %q", args[0])}
	}
	return run(p, args[1:], stdout)
}

func cmdHelp(_ *Plugin, args []string, stdout io.Writer) error {
	if err := parse(newFlags("help"), args); err != nil {
		return err
	}
	fmt.Fprint(stdout, UsageText)
	return nil
}

func (p *Plugin) cmdVersion(args []string, stdout io.Writer) error {
	if err := parse(newFlags("version"), args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s\nCNI spec versions: %s\n", p.opts.Name, p.opts.Version, strings.Join(version.All.SupportedVersions(), ", "))
	return nil
}

// newFlags is a command's flag set; parse it with parse.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses a command's arguments: an unknown flag, a missing or empty value, an
// argument that is not a flag, or --network or --data-dir beside --conf is a usage error
// (exit 2); -h or --help asks for the usage. Every command parses with it.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = "unknown flag --" + name
		}
		return errUsage{fmt.Sprintf("%s: %s", fs.Name(), msg)}
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	// A flag given an empty value (an unset shell variable) is refused rather than read
	// as left out: `release --ifname ""` would release every interface of the container.
	// So is a flag that --conf overrides.
	var err error
	conf := false
	fs.Visit(func(f *flag.Flag) {
		switch {
		case err != nil:
		case f.Name == confFlag && f.Value.String() == "":
			err = errUsage{fmt.Sprintf("%s: --conf needs a file (or - for stdin)", fs.Name())}
		case f.Value.String() == "":
			err = errUsage{fmt.Sprintf("%s: --%s needs a value", fs.Name(), f.Name)}
		case f.Name == confFlag:
			conf = true
		}
	})
	if err == nil && conf {
		fs.Visit(func(f *flag.Flag) {
			if err == nil && (f.Name == "network" || f.Name == "data-dir") {
				err = errUsage{fmt.Sprintf("%s: --conf names the network and its data dir: leave out --%s", fs.Name(), f.Name)}
			}
		})
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// isSet tells whether the command line gave flag name (its default is not enough).
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseConfCommand parses the command line of a command that reads one config, --conf
// FILE|- (required), and may print JSON (--json).
func parseConfCommand(name string, args []string) (fs *flag.FlagSet, asJSON bool, err error) {
	fs = newFlags(name)
	confFile := fs.String(confFlag, "", "")
	js := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return nil, false, err
	}
	if *confFile == "" {
		return nil, false, errUsage{name + ": --conf FILE (or - for stdin) is required"}
	}
	return fs, *js, nil
}
