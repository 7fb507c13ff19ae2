package machine

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

func TestDescribe(t *testing.T) {
	d := Describe()
	re := regexp.MustCompile(fmt.Sprintf(`^%d CPUs \([^)]+\), kernel \S+, %s$`, runtime.NumCPU(), regexp.QuoteMeta(runtime.Version())))
	if !re.MatchString(d) {
		t.Fatalf("Describe() = %q, want %s", d, re)
	}
	if strings.Contains(d, "kernel unknown") {
		t.Errorf("Describe() = %q: no kernel release", d)
	}
}

func TestMount(t *testing.T) {
	if typ, src, mp := Mount("/proc/self"); typ != "proc" || mp != "/proc" || src == "unknown" {
		t.Errorf("Mount(/proc/self) = %s, %s, %s; want proc mounted on /proc", typ, src, mp)
	}
	dir := t.TempDir()
	typ, _, mp := Mount(dir)
	if typ == "unknown" || !strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/") {
		t.Errorf("Mount(%s) = type %s on %s", dir, typ, mp)
	}
	// A relative path is the same place.
	t.Chdir(dir)
	if typ2, _, mp2 := Mount("."); typ2 != typ || mp2 != mp {
		t.Errorf("Mount(.) = %s on %s, want %s on %s", typ2, mp2, typ, mp)
	}
}

// Binary names a binary by what it is: the plugin of this tree, the reference host-local
// at the version go.mod pins, anything else by its file name; never by a path.
func TestBinary(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/containernetworking/plugins (v\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod does not require github.com/containernetworking/plugins")
	}
	pinned := string(m[1])
	for _, c := range []struct{ bin, want string }{
		{cniexec.Bin(t, "local-ipam"), "local-ipam (this tree)"},
		{cniexec.Bin(t, "local-ipam-etcd"), "local-ipam-etcd (this tree)"},
		{cniexec.Bin(t, "host-local"), "host-local " + pinned},
	} {
		if got := Binary(c.bin); got != c.want {
			t.Errorf("Binary(%s) = %q, want %q", c.bin, got, c.want)
		}
	}
	sh := filepath.Join(t.TempDir(), "plugin.sh")
	if err := os.WriteFile(sh, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Binary(sh); got != "plugin.sh (not a Go binary)" {
		t.Errorf("Binary of a script = %q", got)
	}
	if got := Version(cniexec.Bin(t, "host-local")); !strings.HasSuffix(got, "github.com/containernetworking/plugins "+pinned) || !strings.HasPrefix(got, "go1.") {
		t.Errorf("Version(host-local) = %q", got)
	}
}

func TestParticular(t *testing.T) {
	// Two directories of this run stand for a scratch dir and a binaries dir.
	scratch, bin := t.TempDir(), filepath.Join(t.TempDir(), "bin")
	for _, c := range []struct {
		report string
		paths  []string
		want   string
	}{
		{"- machine: 2 CPUs\n- scratch: a temporary directory on ext4\n", []string{scratch, bin}, ""},
		{"<temp dir>/50k/local-ipam", []string{scratch}, ""},
		{"stores in " + scratch + "/50k", []string{bin, scratch}, scratch},
		{"run on 2026-01-31 at noon", nil, "2026-01-31"},
		{"local-ipam v1.2026-01-310", nil, ""},
	} {
		if got := Particular(c.report, c.paths...); got != c.want {
			t.Errorf("Particular(%q, %q) = %q, want %q", c.report, c.paths, got, c.want)
		}
	}
}
