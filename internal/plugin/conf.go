package plugin

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// confFlag is the flag that names an operator's network config or conflist: a file, a
// pipe, a process substitution (/dev/fd/N), /dev/stdin, or "-" for stdin.
const confFlag = "conf"

// maxConf bounds what readConf reads: a network config is a few KiB, and a file that
// never ends (/dev/zero, a wrong path) must get an error, not a hang.
const maxConf = 16 << 20

// readConf reads the config an operator named, once: a pipe cannot be read twice.
func readConf(file string) ([]byte, error) {
	in := os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	raw, err := readMax(in, confName(file))
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%s: empty (a pipe or stdin that was already read?)", confName(file))
	}
	return raw, nil
}

// readMax reads r to its end, or fails once it passes maxConf bytes.
func readMax(r io.Reader, name string) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxConf+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxConf {
		return nil, fmt.Errorf("%s: longer than %d MiB: not a network config", name, maxConf>>20)
	}
	return raw, nil
}

func confName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}

// loadConf reads the config fs's --conf names (once) and decodes it as the runtime would
// hand it to the IPAM plugin. It keeps the bytes for a hand-off to local-ipam-etcd, which
// gets them on its stdin with --conf=- and never the path.
func (p *Plugin) loadConf(fs *flag.FlagSet) (*config.Config, error) {
	file := fs.Lookup(confFlag).Value.String()
	raw, err := readConf(file)
	if err != nil {
		return nil, err
	}
	stdin, err := config.PluginConf(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", confName(file), err)
	}
	c, err := config.Load(stdin, "")
	if err != nil {
		return nil, err
	}
	p.stdin, p.argv = raw, confFromStdin(fs)
	return c, nil
}

// confFromStdin is the command line fs parsed, with --conf=- for whatever --conf named.
func confFromStdin(fs *flag.FlagSet) []string {
	args := []string{fs.Name()}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != confFlag {
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	return append(args, "--"+confFlag+"=-")
}
