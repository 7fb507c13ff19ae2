// Command rsshelper is the benchmark's middleman for peak-RSS measurements (see package
// cmd/bench/internal/rss). The benchmark builds it into its temp dir at run time; it is not
// meant to be run by hand.
package main

import (
	"os"

	"github.com/local-ipam/local-ipam/cmd/bench/internal/rss"
)

func main() { os.Exit(rss.Main(os.Args)) }
