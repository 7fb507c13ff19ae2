package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The text report gives a developer the date and the paths of the binaries and stores;
// the Markdown report, which goes into the documentation, names the binaries by what they
// are and the machine in words, with no path of the machine and no date, even where a
// note or an error held one.
func TestReportHeader(t *testing.T) {
	lt := built(t, li)
	hl := built(t, "host-local")
	root := t.TempDir()
	h := header(root, lt, hl)
	res := newResults()
	res.addTime(lt.slot, "version", time.Millisecond)
	res.note("a note about %s", filepath.Join(root, "50k", lt.slot))
	failures := []string{"50k: " + lt.bin + " misbehaved"}
	date := regexp.MustCompile(`\b20\d\d-\d\d-\d\d\b`)

	var text, md bytes.Buffer
	report(&text, config{}, h, res, failures)
	for _, want := range []string{"\n  local-ipam: " + lt.bin + " (go", "\n  host-local: " + hl.bin + " (go", "\n  temp dir: ", filepath.Join(root, "50k")} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if !date.MatchString(text.String()) {
		t.Errorf("text report without the date:\n%s", text.String())
	}

	report(&md, config{markdown: true}, h, res, failures)
	for _, want := range []string{"\n- local-ipam: local-ipam (this tree)\n", "\n- host-local: host-local v1.", "\n- machine: ", "<temp dir>/50k/local-ipam", "ERROR 50k: local-ipam (this tree) misbehaved"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown report lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), root) || strings.Contains(md.String(), filepath.Dir(lt.bin)) || date.MatchString(md.String()) {
		t.Errorf("Markdown report names a path of this machine or a date:\n%s", md.String())
	}
}
