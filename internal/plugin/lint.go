package plugin

import (
	"fmt"
	"io"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// cmdLint checks a network config or conflist (config.Examine; docs/LINT.md): each
// finding on a line with its JSON path and severity, or a JSON array with --json.
func (p *Plugin) cmdLint(args []string, stdout io.Writer) error {
	fs, asJSON, err := parseConfCommand("lint", args)
	if err != nil {
		return err
	}
	file := fs.Lookup(confFlag).Value.String()
	raw, err := readConf(file)
	if err != nil {
		return err
	}
	name := confName(file)
	found := config.Examine(raw)
	if asJSON {
		if found == nil {
			found = []config.Finding{}
		}
		if err := writeJSON(stdout, found); err != nil {
			return err
		}
	} else {
		for _, f := range found {
			fmt.Fprintln(stdout, f)
		}
		if len(found) == 0 {
			fmt.Fprintf(stdout, "%s: no findings\n", name)
		}
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s: 1 finding", name)
	}
	return fmt.Errorf("%s: %d findings", name, len(found))
}
