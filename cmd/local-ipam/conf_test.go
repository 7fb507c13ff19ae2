package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestConfForms: list, usage and release take --conf as a file, stdin (-), /dev/stdin, a
// process substitution or a named pipe, and read it once, for a disk network (the etcd
// network's forms, which go through the hand-off, are in cmd/local-ipam-etcd).
func TestConfForms(t *testing.T) {
	t.Parallel()
	bin := cniexec.Bin(t, "local-ipam")
	for i, form := range cniexec.ConfForms {
		t.Run(form.Name, func(t *testing.T) {
			t.Parallel()
			n := newNet(t, "1.1.0", "forms", map[string]any{"subnet": fmt.Sprintf("10.80.%d.0/24", i)})
			n.add(t, "keep", "eth0")
			gone := strings.TrimSuffix(n.add(t, "gone", "eth0").Addrs()[0], "/24")
			conf := n.conf(t, nil)

			o := form.Run(t, bin, conf, "list", "--json")
			var l []listed
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &l) != nil || len(l) != 2 || l[0].Network != "forms" {
				t.Errorf("list: want the 2 entries of network forms, got %s", o)
			}
			o = form.Run(t, bin, conf, "usage", "--json")
			var u usageJSON
			if o.Exit != 0 || json.Unmarshal([]byte(o.Stdout), &u) != nil || u.Network != "forms" || len(u.RangeSets) != 1 || u.RangeSets[0].InUse != 2 {
				t.Errorf("usage: want network forms with 2 in use, got %s", o)
			}
			o = form.Run(t, bin, conf, "release", "--container", "gone")
			if want := "released " + gone + " (container gone, ifname eth0)\n"; o.Exit != 0 || o.Stdout != want {
				t.Errorf("release: want %q, got %s", want, o)
			}
		})
	}
}

// TestConfNeverEnds: a --conf that never ends (/dev/zero, a typo for another device) or is
// far too long is an error naming it, not a hang that grows until the machine runs out of
// memory; for stdin too. In --conf-dir a FIFO named like a config is reported, not read
// (it would block the whole report), and the other networks are counted.
func TestConfNeverEnds(t *testing.T) {
	t.Parallel()
	bin := cniexec.Bin(t, "local-ipam")
	run := func(stdin []byte, args ...string) cniexec.Out {
		t.Helper()
		o, err := cniexec.Exec(context.Background(), bin, cniexec.Options{Args: args, Stdin: stdin, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatalf("%v: %v (%s)", args, err, o)
		}
		return o
	}
	for _, cmd := range [][]string{{"list"}, {"usage"}, {"release", "--container", "x"}, {"lint"}} {
		o := run(nil, append(cmd, "--conf", "/dev/zero")...)
		if o.Exit != 1 || !strings.Contains(o.Stderr, "/dev/zero: longer than 16 MiB: not a network config") {
			t.Errorf("%s --conf /dev/zero: want exit 1 naming it, got %s", cmd[0], o)
		}
	}
	big := append([]byte(`{"cniVersion":"1.1.0","name":"n","pad":"`), bytes.Repeat([]byte("x"), 17<<20)...)
	if o := run(big, "list", "--conf", "-"); o.Exit != 1 || !strings.Contains(o.Stderr, "stdin: longer than 16 MiB") {
		t.Errorf("list --conf - of 17 MiB: want exit 1, got %s", o)
	}

	dir := t.TempDir()
	n := newNet(t, "1.1.0", "counted", map[string]any{"subnet": "10.81.0.0/24"})
	writeIn(t, dir, "10-counted.conf", string(n.conf(t, nil)))
	if err := unix.Mkfifo(filepath.Join(dir, "20-fifo.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := run(nil, "usage", "--conf-dir", dir)
	if o.Exit != 1 || !strings.Contains(o.Stdout, "network counted ") || !strings.Contains(o.Stderr, "20-fifo.conf") || !strings.Contains(o.Stderr, "not a regular file") {
		t.Errorf("usage --conf-dir with a FIFO: want the network counted, the FIFO named, exit 1; got %s", o)
	}
}
