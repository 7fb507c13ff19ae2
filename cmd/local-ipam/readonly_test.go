package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// list and usage only look: they read the records without the network's lock (a call in
// progress, or host-local, never makes them wait) and write nothing, not even the index
// of a directory only host-local has used, nor the directory of a network that has none.
func TestOperatorReadsTakeNoLock(t *testing.T) {
	t.Parallel()
	n := newNet(t, "1.1.0", "ro", map[string]any{"subnet": "10.75.0.0/24"})
	if err := os.MkdirAll(n.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	writeIn(t, n.dir(), "10.75.0.7", recKey("ctr", "eth0")) // written by host-local
	writeIn(t, n.dir(), "lock", "")
	conf := n.confFile(t)
	// The lock, held as host-local (or a call of local-ipam) holds it: flock on the lock
	// file, from this process.
	fd, err := unix.Open(filepath.Join(n.dir(), "lock"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	before, beforeNet := dirFiles(t, n.dataDir), dirFiles(t, n.dir())

	bin := cniexec.Bin(t, "local-ipam")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--data-dir", n.dataDir}, "10.75.0.7"},
		{[]string{"list", "--data-dir", n.dataDir, "--network", "ro", "--json"}, `"10.75.0.7"`},
		{[]string{"list", "--conf", conf}, "10.75.0.7"},
		{[]string{"list", "--data-dir", n.dataDir, "--network", "typo"}, `no network "typo"`},
		{[]string{"usage", "--conf", conf}, "0 253 1 0 252 0.4% 10.75.0.1-10.75.0.254"},
		{[]string{"usage", "--conf", conf, "--json"}, `"inUse": 1`},
	} {
		// A command that waited for the lock would be killed here, long before its
		// own 60 s wait ended.
		o, err := cniexec.Exec(context.Background(), bin, cniexec.Options{Args: c.args, Timeout: 20 * time.Second})
		want, out := 0, o.Stdout
		if c.args[len(c.args)-1] == "typo" {
			want, out = 1, o.Stderr // a network the data dir does not hold
		}
		if err != nil || o.Exit != want || !strings.Contains(strings.Join(strings.Fields(out), " "), c.want) {
			t.Errorf("%v while the lock is held: %v, %s; want exit %d and %q", c.args, err, o, want, c.want)
		}
	}
	if d := diffMaps(dirFiles(t, n.dataDir), before); d != "" {
		t.Errorf("list and usage changed the data dir: %s", d)
	}
	if d := diffMaps(dirFiles(t, n.dir()), beforeNet); d != "" {
		t.Errorf("list and usage changed the network's directory: %s", d)
	}
}
