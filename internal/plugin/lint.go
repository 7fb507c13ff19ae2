package plugin

import (
	"fmt"
	"io"
	"os"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// cmdLint checks a network config or conflist (config.Examine; docs/LINT.md): each
// finding on a line with its JSON path and severity, or a JSON array with --json.
func (p *Plugin) cmdLint(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags("lint")
	confFile := fs.String("conf", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *confFile == "" {
		return errUsage{"lint: --conf FILE (or - for stdin) is required"}
	}
	var raw []byte
	var err error
	if *confFile == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(*confFile)
	}
	if err != nil {
		return err
	}
	found := config.Examine(raw)
	if *asJSON {
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
			fmt.Fprintf(stdout, "%s: no findings\n", *confFile)
		}
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s: 1 finding", *confFile)
	}
	return fmt.Errorf("%s: %d findings", *confFile, len(found))
}
