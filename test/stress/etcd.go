package main

// Networks kept in etcd (local-ipam only: host-local has no such store). The suite starts
// one embedded etcd member (etcdtest.StartEmbeddedServer: loopback, fsync on) when the
// first etcd scenario runs, and stops it at the end; each scenario keeps its network under
// a prefix of its own. The attachments are spread over a few "machines": each machine's
// calls carry its own store node, all of them draw from the one pool. The reservations
// are read from the outside as an operator does, with `local-ipam list --conf FILE
// --json`, and checked by the same code as the disk store's records (reservations,
// store.go), plus one check of its own: each reservation is tagged with the node of the
// machine whose ADD made it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

// etcdCallTimeout is the store's "timeout" in the scenarios' configs: the bound on one
// call's etcd work. Above the default 5 s: the member shares the CPUs with 32 plugin
// processes (and, in `go test -race`, runs race-instrumented in the test binary).
const etcdCallTimeout = "20s"

// etcdServer is the member the etcd scenarios share.
type etcdServer struct {
	dir  string
	once sync.Once
	eps  []string
	stop func()
	err  error
	took time.Duration
}

func newEtcdServer(dir string) *etcdServer { return &etcdServer{dir: dir} }

// endpoints starts the member at the first call.
func (e *etcdServer) endpoints() ([]string, error) {
	e.once.Do(func() {
		t0 := time.Now()
		if e.err = os.MkdirAll(e.dir, 0o700); e.err != nil {
			return
		}
		e.eps, e.stop, e.err = etcdtest.StartEmbeddedServer(e.dir)
		e.took = time.Since(t0)
	})
	return e.eps, e.err
}

// close stops the member, if it was started.
func (e *etcdServer) close() {
	e.once.Do(func() { e.err = errors.New("etcd server closed") })
	if e.stop != nil {
		e.stop()
	}
}

// etcdStore reads a network's reservations with `local-ipam list --conf FILE --json`.
type etcdStore struct {
	bin  string   // local-ipam (it hands the command to local-ipam-etcd)
	env  []string // the harness's environment, without CNI_*
	conf string   // the network's config file
	name string   // the network's name
	desc string   // "etcd <endpoint> <prefix>/<name>", for messages
}

// listEntry is one entry of `local-ipam list --json`.
type listEntry struct {
	Network     string    `json:"network"`
	Address     string    `json:"address"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	Node        string    `json:"node"`
	Created     time.Time `json:"created"`
}

func (e *etcdStore) read(x *job) []entry {
	o, err := cniexec.Exec(x, e.bin, cniexec.Options{Args: []string{"list", "--conf", e.conf, "--json"}, Env: e.env, Timeout: 60 * time.Second})
	if err == nil && !o.OK() {
		err = fmt.Errorf("exit status %d", o.Exit)
	}
	if err != nil {
		panic(fmt.Errorf("local-ipam list --conf %s --json: %v (stderr %s)", e.conf, err, quoteClip(bytes.TrimSpace([]byte(o.Stderr)), 300)))
	}
	var l []listEntry
	if err := json.Unmarshal([]byte(o.Stdout), &l); err != nil {
		panic(fmt.Errorf("local-ipam list --conf %s --json: not a JSON list of entries (%v): %s", e.conf, err, quoteClip([]byte(o.Stdout), 300)))
	}
	out := make([]entry, 0, len(l))
	for _, le := range l {
		if le.Network != e.name {
			x.violate("local-ipam list --conf %s lists %s of network %q, not %q", e.conf, le.Address, le.Network, e.name)
		}
		content := []byte(le.ContainerID + "\r\n" + le.IfName)
		en := entry{name: le.Address, content: content, size: int64(len(content)), node: le.Node}
		if a, err := netip.ParseAddr(le.Address); err == nil {
			en.addr = a
		} else {
			x.violate("local-ipam list --conf %s lists the address %q: %v", e.conf, le.Address, err)
			continue
		}
		out = append(out, en)
	}
	return out
}

func (e *etcdStore) where(name string) string { return name + " (" + e.desc + ")" }

// etcdNetwork keeps n in the suite's etcd member, under a prefix of the scenario's own,
// used by machines node-0 ... node-<machines-1>.
func (x *job) etcdNetwork(n network, machines int) (network, error) {
	if x.etcd == nil {
		return n, errors.New("no etcd server given to the scenario")
	}
	eps, err := x.etcd.endpoints()
	if err != nil {
		return n, fmt.Errorf("embedded etcd in %s: %w", x.etcd.dir, err)
	}
	prefix := "/local-ipam-stress/" + x.name
	for i := range machines {
		n.nodes = append(n.nodes, fmt.Sprintf("node-%d", i))
	}
	n.ipam = cniexec.Merge(n.ipam, map[string]any{"store": map[string]any{"type": "etcd", "endpoints": eps, "prefix": prefix, "node": n.nodes[0], "timeout": etcdCallTimeout}})
	conf := filepath.Join(x.dir, n.name+".conf")
	if err := os.WriteFile(conf, x.conf(n, nil), 0o644); err != nil {
		return n, err
	}
	n.etcd = &etcdStore{bin: x.p.bin, env: x.p.baseEnv, conf: conf, name: n.name,
		desc: fmt.Sprintf("etcd %s/%s", prefix, n.name)}
	x.logf("network %s in etcd %v under %s (member started in %v)", n.name, eps, prefix, x.etcd.took.Round(time.Millisecond))
	return n, nil
}
