package main

// Peak memory of one plugin call. A child's ru_maxrss is not only its own: exec folds the
// peak RSS of the address space it replaces into it, and Go starts children with vfork
// semantics (the child runs in the parent's address space until exec), so any direct child
// of this harness would report at least the harness's own peak. So the plugin is started by
// a middleman whose own small peak is then the floor of the measurement (internal/rss): the
// tiny rsshelper command, built at start-up, or else this same binary re-executed with
// rssMarker set (a higher floor, and slow to start when it is a -race test binary).

import (
	"fmt"
	"os"
	"strings"

	"github.com/local-ipam/local-ipam/internal/rss"
)

// rssMain is the middleman's main when this binary acts as it.
func rssMain(args []string) int { return rss.Main(args, rssMarker) }

// rssMarker in the environment makes this binary (or the test binary, see TestMain) act as
// the middleman. It is not passed on to the plugin.
const rssMarker = "LOCAL_IPAM_STRESS_RSS_HELPER"

// rssHelper is the middleman's command (setupRSSHelper): rsshelper, or this executable.
var (
	rssHelper      = []string{"/proc/self/exe"}
	rssHelperSetUp bool
	// rssSlowStart: the middleman is this binary, maybe a -race test binary that takes up
	// to a second to start; calls through it get that much more time before they are
	// killed (the time a call took is measured by the middleman, without its start).
	rssSlowStart bool
)

// setupRSSHelper builds rsshelper into dir with the go command and makes it the
// middleman; if it cannot, this executable is. It returns a warning in that case. Only the
// first call of a process does anything (dir must outlive the process's calls).
func setupRSSHelper(dir string) string {
	if rssHelperSetUp {
		return ""
	}
	rssHelperSetUp = true
	self, err := os.Executable()
	if err == nil {
		rssHelper = []string{self}
	}
	rssSlowStart = true
	out, msg, err := rss.Build(dir)
	if err != nil {
		return fmt.Sprintf("could not build the RSS middleman (%v: %s); using this binary (higher floor)", err, strings.TrimSpace(string(msg)))
	}
	rssHelper, rssSlowStart = []string{out}, false
	return ""
}
