// Command rsshelper is the peak-RSS middleman of the benchmark and the stress suite (see
// package internal/cniexec). They build it at run time; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/local-ipam/local-ipam/internal/cniexec/rss"
)

func main() { os.Exit(rss.Main(os.Args, "")) }
