package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/machine"
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

	var text, md bytes.Buffer
	report(&text, config{}, h, res, failures)
	for _, want := range []string{"\n  local-ipam: " + lt.bin + " (go", "\n  host-local: " + hl.bin + " (go", "\n  temp dir: ", filepath.Join(root, "50k")} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if machine.Particular(text.String()) == "" {
		t.Errorf("text report without the date:\n%s", text.String())
	}

	report(&md, config{markdown: true}, h, res, failures)
	for _, want := range []string{"\n- local-ipam: local-ipam (this tree)\n", "\n- host-local: host-local v1.", "\n- machine: ", "<temp dir>/50k/local-ipam", "ERROR 50k: local-ipam (this tree) misbehaved"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown report lacks %q:\n%s", want, md.String())
		}
	}
	if p := machine.Particular(md.String(), root, filepath.Dir(lt.bin)); p != "" {
		t.Errorf("Markdown report names %q, a path of this machine or a date:\n%s", p, md.String())
	}
}
