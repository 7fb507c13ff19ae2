// Command local-ipam-metrics writes the report of `local-ipam usage` in the Prometheus
// text format. local-ipam runs it, from its own directory, for `usage --format
// prometheus`, with the report as JSON on stdin; it is not meant to be run by hand.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/local-ipam/local-ipam/internal/metrics"
	"github.com/local-ipam/local-ipam/internal/usage"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "local-ipam-metrics takes no arguments: run 'local-ipam usage --format prometheus (--conf FILE | --conf-dir DIR)'")
		os.Exit(2)
	}
	var rep usage.Report
	if err := json.NewDecoder(os.Stdin).Decode(&rep); err != nil {
		fmt.Fprintf(os.Stderr, "local-ipam-metrics: cannot read the usage report on stdin: %v\n", err)
		os.Exit(1)
	}
	for _, f := range rep.Errors {
		fmt.Fprintf(os.Stderr, "local-ipam: %s: %s\n", f.File, f.Error)
	}
	// Whole or nothing: the text is made in memory, then written at once.
	var out bytes.Buffer
	err := metrics.Write(&out, rep)
	if err == nil {
		_, err = os.Stdout.Write(out.Bytes())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "local-ipam-metrics: %v\n", err)
		os.Exit(1)
	}
}
