// Package etcdtest starts real etcd servers on loopback for tests and benchmarks: an
// embedded one in this process (quick), or a cluster of separate member processes that
// can be killed with SIGKILL and restarted on the same data directory. Servers log to a
// file in their directory, shown only when a test fails.
package etcdtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// MemberConfig is the configuration of one test member: loopback URLs, data in
// dir/data, logs in dir/etcd.log, no fsync (a test cluster survives kill -9 of a
// process, which leaves the page cache alone; it need not survive a power loss), quick
// elections.
func MemberConfig(name, dir, clientURL, peerURL, initialCluster string) (*embed.Config, error) {
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, err
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = filepath.Join(dir, "data")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = "local-ipam-test"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "info"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	return cfg, nil
}

// freePorts returns n ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartEmbeddedServer starts a one-member etcd in this process with its data and log in
// dir, and returns its client endpoints and a function that stops it. For programs (a
// benchmark); tests use StartEmbedded. Unlike the tests' servers it fsyncs, as a
// production member does: what a benchmark measures includes etcd's durable writes.
func StartEmbeddedServer(dir string) (endpoints []string, stop func(), err error) {
	return startEmbeddedRetry(dir, true)
}

func startEmbeddedRetry(dir string, fsync bool) (endpoints []string, stop func(), err error) {
	for attempt := 0; ; attempt++ {
		endpoints, stop, err = startEmbedded(dir, fsync)
		// A port taken between choosing it and binding it: choose again.
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return endpoints, stop, err
		}
	}
}

func startEmbedded(dir string, fsync bool) ([]string, func(), error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cfg, err := MemberConfig("m0", dir, client, peer, "m0="+peer)
	if err != nil {
		return nil, nil, err
	}
	cfg.UnsafeNoFsync = !fsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start embedded etcd (log: %s): %w", filepath.Join(dir, "etcd.log"), err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd failed (log: %s): %w", filepath.Join(dir, "etcd.log"), err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd not ready after 60s (log: %s)", filepath.Join(dir, "etcd.log"))
	}
	var once sync.Once
	return []string{client}, func() { once.Do(e.Close) }, nil
}

// StartEmbedded starts a one-member etcd in this process for the test, stopped when the
// test ends; its log is printed if the test failed.
func StartEmbedded(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	eps, stop, err := startEmbeddedRetry(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("etcd log (%s):\n%s", filepath.Join(dir, "etcd.log"), tail(filepath.Join(dir, "etcd.log"), 60))
		}
	})
	return eps
}

func tail(file string, lines int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// MemberPackage is the main package of the member process.
const MemberPackage = "github.com/local-ipam/local-ipam/internal/etcdtest/etcd-member"

// MemberBinary builds the member process once per process (the build cache makes it a
// link after the first time) and returns its path.
func MemberBinary() (string, error) { return memberBinary() }

var memberBinary = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("local-ipam-etcdtest-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// Built under a name of our own, then renamed into place: test processes building
	// at once do not clash, and one running the old binary keeps its inode.
	bin := filepath.Join(dir, "etcd-member")
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	if err := cniexec.GoBuild(tmp, MemberPackage, ""); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return bin, nil
})

// Cluster is n etcd members, each a process of its own on loopback.
type Cluster struct {
	dir     string
	bin     string
	initial string
	members []*member
	fsync   bool // members fsync, as in production (benchmarks); tests run without
}

type member struct {
	name, dir, client, peer string
	mu                      sync.Mutex
	cmd                     *exec.Cmd
	stdin                   io.WriteCloser // the member exits when it closes: when we die
	ready, exited           chan struct{}
}

// NewCluster starts an n-member cluster with its data and logs under dir and waits until
// every member is ready. Close kills it.
func NewCluster(dir string, n int) (*Cluster, error) {
	return newClusterRetry(dir, n, false)
}

// NewClusterFsync is NewCluster with members that fsync their writes, as production
// members do: for benchmarks.
func NewClusterFsync(dir string, n int) (*Cluster, error) {
	return newClusterRetry(dir, n, true)
}

func newClusterRetry(dir string, n int, fsync bool) (*Cluster, error) {
	bin, err := MemberBinary()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		c, err := newCluster(dir, bin, n, attempt, fsync)
		if err == nil || attempt == 3 {
			return c, err
		}
	}
}

func newCluster(dir, bin string, n, attempt int, fsync bool) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: filepath.Join(dir, fmt.Sprintf("cluster%d", attempt)), bin: bin, fsync: fsync}
	var initial []string
	for i := range n {
		m := &member{
			name:   fmt.Sprintf("m%d", i),
			client: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		m.dir = filepath.Join(c.dir, m.name)
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return nil, err
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	c.initial = strings.Join(initial, ",")
	for i := range c.members {
		if err := c.Start(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range c.members {
		if err := c.WaitReady(i, 60*time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// StartCluster starts an n-member cluster of processes for the test, killed when the test
// ends; the members' logs are printed if the test failed.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := NewCluster(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Log(c.Logs(40))
		}
	})
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return eps
}

// Start starts member i's process (on its data directory, which it keeps across
// restarts) without waiting for it to be ready.
func (c *Cluster) Start(i int) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("member %d is running", i)
	}
	args := []string{"-name", m.name, "-dir", m.dir, "-client", m.client, "-peer", m.peer, "-initial-cluster", c.initial}
	if c.fsync {
		args = append(args, "-fsync")
	}
	cmd := exec.Command(c.bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// Held open while we live: if this process dies without killing its members (a
	// panic, a test binary killed), the pipe closes and they exit instead of lingering.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	errf, err := os.OpenFile(filepath.Join(m.dir, "stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stderr = errf
	if err := cmd.Start(); err != nil {
		errf.Close()
		return err
	}
	errf.Close()
	ready, exited := make(chan struct{}), make(chan struct{})
	m.cmd, m.stdin, m.ready, m.exited = cmd, stdin, ready, exited
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	return nil
}

// WaitReady waits until member i serves clients (which needs a quorum of the cluster).
func (c *Cluster) WaitReady(i int, timeout time.Duration) error {
	m := c.members[i]
	m.mu.Lock()
	ready, exited := m.ready, m.exited
	m.mu.Unlock()
	if ready == nil {
		return fmt.Errorf("member %d is not running", i)
	}
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("member %d exited before it was ready:\n%s", i, c.memberLog(m, 20))
	case <-time.After(timeout):
		return fmt.Errorf("member %d not ready after %s:\n%s", i, timeout, c.memberLog(m, 20))
	}
}

// Kill kills member i with SIGKILL and waits for it to be gone.
func (c *Cluster) Kill(i int) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return nil
	}
	err := m.cmd.Process.Signal(syscall.SIGKILL)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-m.exited
	m.stdin.Close()
	m.cmd, m.stdin, m.ready, m.exited = nil, nil, nil, nil
	return nil
}

// Restart starts member i again on its data directory and waits until it is ready.
func (c *Cluster) Restart(i int) error {
	if err := c.Start(i); err != nil {
		return err
	}
	return c.WaitReady(i, 60*time.Second)
}

// Close kills every member.
func (c *Cluster) Close() {
	for i := range c.members {
		_ = c.Kill(i)
	}
}

// Logs returns the last lines of every member's log.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, m := range c.members {
		b.WriteString(c.memberLog(m, lines))
	}
	return b.String()
}

func (c *Cluster) memberLog(m *member, lines int) string {
	return fmt.Sprintf("--- %s (%s):\n%s\n--- %s stderr:\n%s\n", m.name, filepath.Join(m.dir, "etcd.log"),
		tail(filepath.Join(m.dir, "etcd.log"), lines), m.name, tail(filepath.Join(m.dir, "stderr"), lines))
}

// Client is a plain etcd client of eps, closed when the test ends: to look at the keys
// or change them behind the store's back.
func Client(t testing.TB, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Put writes value at key straight into etcd, as damage or an earlier version would
// have left it; it fails the test if etcd does not take it within 10 s.
func Put(t testing.TB, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatal(err)
	}
}
