package main

// Peak memory of one plugin call: through the middleman of internal/cniexec, the tiny
// rsshelper command built at start-up, or else this same binary re-executed (a higher
// floor, and slow to start when it is a -race test binary; main and TestMain serve it).

import "github.com/local-ipam/local-ipam/internal/cniexec"

// rssHelper is the middleman (setupRSSHelper): rsshelper, or this executable.
var (
	rssHelper      = cniexec.SelfMiddleman()
	rssHelperSetUp bool
)

// setupRSSHelper builds rsshelper into dir with the go command and makes it the
// middleman; if it cannot, this executable is. It returns a warning in that case. Only the
// first call of a process does anything (dir must outlive the process's calls).
func setupRSSHelper(dir string) string {
	if rssHelperSetUp {
		return ""
	}
	rssHelperSetUp = true
	var warn string
	rssHelper, warn = cniexec.BuildMiddleman(dir)
	return warn
}
