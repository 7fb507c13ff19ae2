package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	ipam "github.com/local-ipam/local-ipam/internal/plugin"
)

// The installed binary at work: run as host-local it is local-ipam, and a runtime that
// starts it while it is being replaced runs a whole binary, the old or the new.

// TestRunAsHostLocal runs one script of calls (every CNI verb, errors, the operator's
// commands) through local-ipam installed under its own name and through the same install
// as host-local, each on a data dir of the same path: the outputs must be the same bytes
// (timestamps aside), and so must the data dirs (the index state's record of its
// directory's inode and timestamps aside).
func TestRunAsHostLocal(t *testing.T) {
	t.Parallel()
	b := buildDir(t, false)
	dir := t.TempDir()
	cniexec.CopyExecutable(t, cniexec.Bin(t, "host-local"), filepath.Join(dir, "host-local"))
	if o := install(t, b, "install", "--dir", dir, "--as", "host-local"); o.Exit != 0 {
		t.Fatalf("install --as host-local: %s", o)
	}
	work := t.TempDir()
	dataDir := filepath.Join(work, "data")
	confFile := filepath.Join(work, "net.conflist")

	netIPAM := map[string]any{"type": "host-local", "dataDir": dataDir, "subnet": "10.91.0.0/29", "routes": []map[string]string{{"dst": "0.0.0.0/0"}}}
	conf := cniexec.NetConf("1.1.0", "names", netIPAM)
	writeIn(t, work, "net.conflist", `{"cniVersion":"1.1.0","name":"names","plugins":[{"type":"bridge","ipam":`+string(cniexec.Conf(netIPAM))+`}]}`)
	timeRe := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

	// Each call's outcome, timestamps blanked; and the messages, the help aside.
	var messages []string
	script := func(bin string) []string {
		var outs []string
		record := func(what string, o cniexec.Out) {
			outs = append(outs, what+": "+timeRe.ReplaceAllString(o.String(), "TIME"))
			messages = append(messages, strings.ReplaceAll(o.Stdout+o.Stderr, ipam.UsageText, ""))
		}
		cni := func(c cniexec.Call) cniexec.Out {
			o := cniexec.CNI(t, bin, c)
			record(c.Cmd+" "+c.ID, o)
			return o
		}
		op := func(args ...string) {
			record(fmt.Sprint(args), cniexec.Run(t, bin, nil, nil, args...))
		}
		add := func(id string, env ...string) cniexec.Out {
			return cni(cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: conf, Env: env})
		}
		cni(cniexec.Call{Cmd: "VERSION", Conf: []byte(`{"cniVersion":"1.1.0"}`)})
		first := add("c1")
		add("c1") // a second ADD of the attachment
		add("c2", "CNI_ARGS=IP=10.91.0.5")
		add("c3", "CNI_ARGS=IP=10.91.0.5") // taken
		for _, id := range []string{"c3", "c4", "c5", "c6"} {
			add(id) // the last one finds the pool full
		}
		cni(cniexec.Call{Cmd: "CHECK", ID: "c1", IfName: "eth0", Conf: cniexec.NetConf("1.1.0", "names", netIPAM, map[string]any{"prevResult": rawJSON(first.Stdout)})})
		cni(cniexec.Call{Cmd: "DEL", ID: "c2", IfName: "eth0", Conf: conf})
		// A plugin of type host-local in a list, after one that produced a result: host-local
		// allocates there, and so does local-ipam, whatever name it runs under.
		cni(cniexec.Call{Cmd: "ADD", ID: "c7", IfName: "eth0", Conf: cniexec.Conf(map[string]any{
			"cniVersion": "1.1.0", "name": "names", "type": "host-local", "ipam": netIPAM, "prevResult": rawJSON(first.Stdout)})})
		cni(cniexec.Call{Cmd: "GC", Conf: cniexec.NetConf("1.1.0", "names", netIPAM, map[string]any{validAttachments: attachments("c1/eth0", "c3/eth0", "c4/eth0")})})
		cni(cniexec.Call{Cmd: "STATUS", Conf: conf})
		cni(cniexec.Call{Cmd: "ADD", ID: "bad", IfName: "eth0", Conf: []byte("not json")})
		cni(cniexec.Call{Cmd: "ADD", IfName: "eth0", Conf: conf}) // no container ID
		cni(cniexec.Call{Cmd: "FOO", ID: "x", IfName: "eth0", Conf: conf})
		op()
		op("version")
		op("help")
		op("list", "--data-dir", dataDir)
		op("list", "--data-dir", dataDir, "--json")
		op("usage", "--conf", confFile, "--json")
		op("release", "--network", "names", "--container", "c3", "--data-dir", dataDir)
		op("list", "--conf", confFile)
		op("frobnicate")
		op("install", "--bogus")
		return outs
	}
	viaSelf := script(filepath.Join(dir, "local-ipam"))
	if err := os.Rename(dataDir, dataDir+".local-ipam"); err != nil {
		t.Fatal(err)
	}
	messages = nil
	viaHostLocal := script(filepath.Join(dir, "host-local"))
	for i := range viaSelf {
		if viaSelf[i] != viaHostLocal[i] {
			t.Errorf("call %d:\nas local-ipam: %s\nas host-local: %s", i, viaSelf[i], viaHostLocal[i])
		}
	}
	if d := diffMaps(treeFiles(t, dataDir), treeFiles(t, dataDir+".local-ipam")); d != "" {
		t.Errorf("data dirs differ (as host-local, against as local-ipam): %s", d)
	}

	// Without local-ipam-etcd beside it, an etcd network's call fails, saying so alike.
	if err := os.Remove(filepath.Join(dir, "local-ipam-etcd")); err != nil {
		t.Fatal(err)
	}
	etcdConf := cniexec.NetConf("1.1.0", "names", map[string]any{"type": "host-local", "subnet": "10.91.1.0/24", "store": map[string]any{"type": "etcd", "endpoints": []string{"http://127.0.0.1:1"}}})
	var etcdOuts []cniexec.Out
	for _, name := range []string{"local-ipam", "host-local"} {
		o := cniexec.CNI(t, filepath.Join(dir, name), cniexec.Call{Cmd: "ADD", ID: "c1", IfName: "eth0", Conf: etcdConf})
		wantError(t, o, 50)
		etcdOuts = append(etcdOuts, o)
	}
	messages = append(messages, etcdOuts[1].Stdout+etcdOuts[1].Stderr)
	if etcdOuts[0].String() != etcdOuts[1].String() || !strings.Contains(etcdOuts[0].Stdout, "local-ipam-etcd") {
		t.Errorf("etcd network without local-ipam-etcd:\nas local-ipam: %s\nas host-local: %s", etcdOuts[0], etcdOuts[1])
	}
	for _, m := range messages {
		if strings.Contains(m, "host-local") {
			t.Errorf("run as host-local, it names host-local: %s", m)
		}
	}
	if !t.Failed() {
		t.Logf("%d calls and commands through each name, same outputs and same data dirs", len(viaSelf)+1)
	}
}

// treeFiles is every file under root (relative path -> mode and content); in the index
// state, the bytes that record the directory's own inode and timestamps, and the checksum
// over them, are blanked.
func treeFiles(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		content := ""
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if d.Name() == "state" && len(b) == 64 {
				b = bytes.Clone(b)
				copy(b[16:56], make([]byte, 40))
				copy(b[60:64], make([]byte, 4))
			}
			content = string(b)
		}
		out[rel] = fi.Mode().String() + " " + content
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// variant is a build of local-ipam of its own version, with local-ipam-etcd beside it.
func variant(t *testing.T, version string) string {
	t.Helper()
	dir := openTempDir(t, "local-ipam-"+version+"-")
	o, err := cniexec.Exec(context.Background(), "go", cniexec.Options{
		Args:    []string{"build", "-trimpath", "-ldflags", "-s -w -X main.buildVersion=" + version, "-o", filepath.Join(dir, "local-ipam"), "."},
		Env:     append(os.Environ(), "CGO_ENABLED=0"),
		Timeout: 5 * time.Minute,
	})
	if err != nil || o.Exit != 0 {
		t.Fatalf("go build of local-ipam %s: %v %s", version, err, o)
	}
	cniexec.CopyExecutable(t, cniexec.Bin(t, "local-ipam-etcd"), filepath.Join(dir, "local-ipam-etcd"))
	return dir
}

// TestInstallDuringCalls: workers run ADD, the operator's version and DEL through
// DIR/host-local and DIR/local-ipam, as runtimes and operators do, while two builds of
// different versions are installed over each other 50 times (--as host-local). Every call
// must succeed (no "text file busy", no "exec format error", no crash of a partial binary),
// and each name must have run each build.
func TestInstallDuringCalls(t *testing.T) {
	t.Parallel()
	const installs, workers = 50, 4
	builds := []string{variant(t, "install-test-a"), variant(t, "install-test-b")}
	dir := t.TempDir()
	cniexec.CopyExecutable(t, cniexec.Bin(t, "host-local"), filepath.Join(dir, "host-local"))
	if o := install(t, builds[0], "install", "--dir", dir, "--as", "host-local"); o.Exit != 0 {
		t.Fatalf("install: %s", o)
	}
	n := newNet(t, "1.1.0", "during", map[string]any{"type": "host-local", "subnet": "10.92.0.0/24"})
	conf := n.conf(t, nil)

	var (
		stop, installing      atomic.Bool
		calls, duringInstalls atomic.Int64
		mu                    sync.Mutex
		failures              []string
		ran                   = map[string]int{} // "<name> <version>" -> version calls
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	// call runs one call and counts it; ok is false (and the failure recorded) unless it
	// exited 0.
	call := func(what, bin string, f func() (cniexec.Out, error)) (cniexec.Out, bool) {
		during := installing.Load()
		o, err := f()
		calls.Add(1)
		if during || installing.Load() {
			duringInstalls.Add(1)
		}
		if err != nil || o.Exit != 0 {
			fail("%s through %s: %v %s", what, bin, err, o)
			return o, false
		}
		return o, true
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				name := []string{"host-local", "local-ipam"}[(i+w)%2]
				bin := filepath.Join(dir, name)
				id := fmt.Sprintf("w%d-%d", w, i)
				o, ok := call("ADD "+id, name, func() (cniexec.Out, error) {
					return cniexec.CNIExec(bin, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: conf})
				})
				if ok {
					if r, err := cniexec.ParseResult(o.Stdout); err != nil || len(r.IPs) != 1 {
						fail("ADD %s through %s: not a result with one address: %s", id, name, o)
					}
				}
				o, ok = call("version", name, func() (cniexec.Out, error) {
					return cniexec.Exec(context.Background(), bin, cniexec.Options{Args: []string{"version"}})
				})
				if ok {
					v, _, _ := strings.Cut(o.Stdout, "\n")
					mu.Lock()
					ran[name+" "+v]++
					mu.Unlock()
				}
				if o, ok := call("DEL "+id, name, func() (cniexec.Out, error) {
					return cniexec.CNIExec(bin, cniexec.Call{Cmd: "DEL", ID: id, IfName: "eth0", Conf: conf})
				}); ok && o.Stdout != "" {
					fail("DEL %s through %s printed %q", id, name, o.Stdout)
				}
			}
		}()
	}
	start := time.Now()
	for k := 1; k <= installs; k++ {
		// Let the workers run the build in place before the next replaces it.
		for before := calls.Load(); calls.Load() < before+workers && time.Since(start) < 5*time.Minute; {
			time.Sleep(5 * time.Millisecond)
		}
		installing.Store(true)
		o := install(t, builds[k%2], "install", "--dir", dir, "--as", "host-local")
		installing.Store(false)
		if o.Exit != 0 || o.Stderr != "" {
			fail("install %d: %s", k, o)
		}
	}
	took := time.Since(start)
	stop.Store(true)
	wg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	for _, name := range []string{"host-local", "local-ipam"} {
		for _, v := range []string{"install-test-a", "install-test-b"} {
			if ran[name+" local-ipam "+v] == 0 {
				t.Errorf("%s never ran the build %s: %v", name, v, ran)
			}
		}
	}
	wantPluginDir(t, dir, map[string]string{
		"host-local.orig": cniexec.Bin(t, "host-local"), "host-local": filepath.Join(builds[0], "local-ipam"),
		"local-ipam": filepath.Join(builds[0], "local-ipam"), "local-ipam-etcd": filepath.Join(builds[0], "local-ipam-etcd"),
	}, "after the installs")
	n.wantRecords(t, map[string]string{}, "after every DEL")
	t.Logf("%d installs in %v; %d calls (ADD, version, DEL) by %d workers, %d of them during an install, all succeeded; builds run by name: %v",
		installs, took.Round(time.Millisecond), calls.Load(), workers, duringInstalls.Load(), ran)
}
