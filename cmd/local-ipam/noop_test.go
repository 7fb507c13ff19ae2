package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	ipam "github.com/local-ipam/local-ipam/internal/plugin"
)

// helpCommands are the operator's commands the help text describes ("  local-ipam NAME ..."
// lines): a command added to the help is tested without a change here.
func helpCommands(t *testing.T) []string {
	var cmds []string
	for _, m := range regexp.MustCompile(`(?m)^\s+local-ipam (\S+)`).FindAllStringSubmatch(ipam.UsageText, -1) {
		if !slices.Contains(cmds, m[1]) {
			cmds = append(cmds, m[1])
		}
	}
	if len(cmds) < 5 {
		t.Fatalf("the help text names only the commands %v", cmds)
	}
	return cmds
}

// TestEveryCommandRefusesMistypes: every command of the help text, and the aliases, in
// both binaries, refuses an unknown flag and an extra argument with exit 2, one line
// naming it, and the usage; nothing on stdout.
func TestEveryCommandRefusesMistypes(t *testing.T) {
	t.Parallel()
	cmds := append(helpCommands(t), "--help", "-h", "--version")
	for _, bin := range []string{"local-ipam", "local-ipam-etcd"} {
		path := cniexec.Bin(t, bin)
		for _, cmd := range cmds {
			for _, c := range []struct {
				args []string
				msg  string
			}{
				{[]string{cmd, "--no-such-flag"}, "unknown flag --no-such-flag"},
				{[]string{cmd, "-no-such-flag=1"}, "unknown flag --no-such-flag"},
				{[]string{cmd, "extra-arg"}, `unexpected argument "extra-arg"`},
				{[]string{cmd, "--", "extra-arg"}, `unexpected argument "extra-arg"`},
			} {
				o := cniexec.Run(t, path, nil, nil, c.args...)
				first, rest, _ := strings.Cut(o.Stderr, "\n")
				if o.Exit != 2 || o.Stdout != "" || !strings.HasPrefix(first, "local-ipam: ") || !strings.Contains(first, c.msg) || strings.TrimLeft(rest, "\n") != ipam.UsageText {
					t.Errorf("%s %v: want exit 2, nothing on stdout, a line with %q and the usage on stderr; got exit %d, stdout %q, stderr %q...", bin, c.args, c.msg, o.Exit, o.Stdout, first)
				}
			}
		}
	}
	// -h after a command asks for the usage.
	for _, cmd := range helpCommands(t) {
		if o := operator(t, cmd, "-h"); o.Exit != 0 || o.Stdout != ipam.UsageText || o.Stderr != "" {
			t.Errorf("local-ipam %s -h: want exit 0 and the usage on stdout, got %s", cmd, o)
		}
	}
	if o := operator(t, "list", "--conf="); o.Exit != 2 || !strings.Contains(o.Stderr, "list: --conf needs a file (or - for stdin)") {
		t.Errorf("list --conf=: want exit 2 naming --conf, got %s", o)
	}
}

// TestNoSilentNoOps: a command that would find nothing because of a mistyped name or path
// says so and fails, rather than print an empty answer with exit 0.
func TestNoSilentNoOps(t *testing.T) {
	t.Parallel()
	n := newNet(t, "1.1.0", "mynet", map[string]any{"ranges": []any{
		[]any{map[string]any{"subnet": "10.75.0.0/24"}},
		[]any{map[string]any{"subnet": "fd00:75::/120"}},
	}})
	n.add(t, "ctr", "eth0")
	other := &netw{version: "1.1.0", name: "other", dataDir: n.dataDir, ipam: n.ipam}
	other.add(t, "x", "eth0")
	fails := func(want string, args ...string) {
		t.Helper()
		if o := operator(t, args...); o.Exit != 1 || o.Stdout != "" || o.Stderr != "local-ipam: "+want+"\n" {
			t.Errorf("local-ipam %v: want exit 1 and %q, got %s", args, want, o)
		}
	}

	// A network the data dir does not hold: the error names those it does.
	fails(`no network "nosuch" in `+n.dataDir+"; the networks there: mynet, other", "list", "--data-dir", n.dataDir, "--network", "nosuch")
	fails(`no network "nosuch" in `+n.dataDir+"; the networks there: mynet, other", "release", "--data-dir", n.dataDir, "--network", "nosuch", "--container", "ctr")
	// A name that is no network's ("..", the data dir's parent; "."): refused, as CNI calls
	// refuse it, rather than listed as an empty network.
	fails(`invalid network name ".."`, "list", "--data-dir", n.dataDir, "--network", "..")
	fails(`invalid network name "."`, "list", "--data-dir", n.dataDir, "--network", ".")
	fails(`invalid network name "mynet/.."`, "list", "--data-dir", n.dataDir, "--network", "mynet/..")
	empty := t.TempDir()
	fails(`no network "mynet" in `+empty+", which holds no network", "list", "--data-dir", empty, "--network", "mynet")

	// The network's own directory given as the data dir: a hint to use its parent.
	hint := n.dir() + " looks like a network's own directory (it holds a lock file and address records), not a data dir: use its parent, --data-dir " + n.dataDir + " (and --network mynet)"
	fails(hint, "list", "--data-dir", n.dir())
	fails(hint, "list", "--data-dir", n.dir()+"/", "--json")
	fails(hint, "release", "--data-dir", n.dir(), "--network", "mynet", "--container", "ctr")
	// ... also once every address was released (the lock and last_reserved_ip.N stay).
	n.del(t, "ctr", "eth0")
	fails(hint, "list", "--data-dir", n.dir())
	if _, err := os.Stat(filepath.Join(n.dir(), "mynet")); err == nil {
		t.Errorf("a refused command created %s", filepath.Join(n.dir(), "mynet"))
	}

	// release output is in address order, IPv4 first, every time.
	for i := range 6 {
		n.add(t, "ctr", "eth0")
		n.add(t, "ctr", "net1")
		o := operator(t, "release", "--data-dir", n.dataDir, "--network", "mynet", "--container", "ctr")
		lines := strings.Split(strings.TrimSpace(o.Stdout), "\n")
		var addrs []string
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 1 {
				addrs = append(addrs, f[1])
			}
		}
		sorted := slices.Clone(addrs)
		slices.SortFunc(sorted, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
		if o.Exit != 0 || len(addrs) != 4 || !slices.Equal(addrs, sorted) {
			t.Fatalf("release %d: want 4 addresses in address order, got %s", i, o)
		}
	}
}

// TestEmptyOrIgnoredFlags: a flag given with an empty value (a shell variable that was not
// set) or one that --conf overrides is refused with exit 2, rather than widen what the
// command does: `release --ifname ""` would release every interface of a live container,
// whose addresses could then be handed out a second time.
func TestEmptyOrIgnoredFlags(t *testing.T) {
	t.Parallel()
	n := newNet(t, "1.1.0", "mynet", map[string]any{"ranges": []any{[]any{map[string]any{"subnet": "10.76.0.0/24"}}}})
	n.add(t, "ctr", "eth0")
	n.add(t, "ctr", "net1")
	conf := filepath.Join(t.TempDir(), "mynet.conf")
	if err := os.WriteFile(conf, n.conf(t, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"release", "--data-dir", n.dataDir, "--network", "mynet", "--container", "ctr", "--ifname", ""}, "release: --ifname needs a value"},
		{[]string{"release", "--conf", conf, "--container", "ctr", "--ifname="}, "release: --ifname needs a value"},
		{[]string{"release", "--data-dir", n.dataDir, "--network", "mynet", "--container", ""}, "release: --container needs a value"},
		{[]string{"list", "--data-dir", n.dataDir, "--network="}, "list: --network needs a value"},
		{[]string{"list", "--data-dir", "", "--network", "mynet"}, "list: --data-dir needs a value"},
		{[]string{"list", "--conf", conf, "--network", "other"}, "list: --conf names the network and its data dir: leave out --network"},
		{[]string{"release", "--conf", conf, "--data-dir", n.dataDir, "--container", "ctr"}, "release: --conf names the network and its data dir: leave out --data-dir"},
		{[]string{"install", "--dir="}, "install: --dir needs a value"},
	} {
		o := operator(t, c.args...)
		first, _, _ := strings.Cut(o.Stderr, "\n")
		if o.Exit != 2 || o.Stdout != "" || first != "local-ipam: "+c.msg {
			t.Errorf("local-ipam %q: want exit 2 and %q, got %s", c.args, c.msg, o)
		}
	}
	n.wantRecords(t, map[string]string{"10.76.0.2": recKey("ctr", "eth0"), "10.76.0.3": recKey("ctr", "net1")}, "after the refused commands")
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
