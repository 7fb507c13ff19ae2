package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/internal/metricstest"
)

// TestUsageConfDir: `local-ipam usage --conf-dir` over a directory of disk and etcd
// networks (local-ipam hands the command to local-ipam-etcd, which counts both), one of
// them on an etcd nobody answers.
func TestUsageConfDir(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	dir := t.TempDir()
	write := func(name string, b []byte) { writeFile(t, filepath.Join(dir, name), b) }
	cluster := newDualStack("cluster", eps, "10.60.0.0/29", "fd00:60::/64")
	for i := range 4 {
		wantOK(t, add(t, cluster, "a", fmt.Sprint("c", i)), "ADD")
	}
	write("10-cluster.conf", cluster.conf(t, "a", nil))
	local := cniexec.NetConf("1.1.0", "local", map[string]any{"type": "host-local", "subnet": "10.61.0.0/24", "dataDir": t.TempDir()})
	for i := range 2 {
		wantOK(t, plugin(t, cniexec.Call{Cmd: "ADD", ID: fmt.Sprint("d", i), IfName: "eth0", Conf: local}), "disk ADD")
	}
	write("20-local.conf", local)
	down := newEtcdNet("down", []string{closedPort(t)}, map[string]any{"subnet": "10.62.0.0/24"})
	down.timeout = time.Second
	write("30-down.conf", down.conf(t, "a", nil))
	write("40-other.conf", []byte(`{"cniVersion":"1.1.0","name":"other","type":"macvlan","ipam":{"type":"static"}}`))

	o := operator(t, "usage", "--conf-dir", dir, "--format", "prometheus")
	wantOK(t, o, "usage --conf-dir --format prometheus")
	metricstest.Check(t, o.Stdout)
	samples := metricstest.Parse(t, o.Stdout)
	got := map[string]float64{}
	for _, s := range samples {
		got[s.Series()] = s.Value
	}
	set := func(network, set, ranges, family string) string {
		return fmt.Sprintf(`{family=%q,network=%q,range_set=%q,ranges=%q}`, family, network, set, ranges)
	}
	for series, want := range map[string]float64{
		"local_ipam_range_set_size" + set("cluster", "0", "10.60.0.1-10.60.0.6", "ipv4"):                         5,
		"local_ipam_range_set_in_use" + set("cluster", "0", "10.60.0.1-10.60.0.6", "ipv4"):                       4,
		"local_ipam_range_set_free" + set("cluster", "0", "10.60.0.1-10.60.0.6", "ipv4"):                         1,
		"local_ipam_range_set_in_use" + set("cluster", "1", "fd00:60::1-fd00:60::ffff:ffff:ffff:ffff", "ipv6"):   4,
		"local_ipam_range_set_size" + set("cluster", "1", "fd00:60::1-fd00:60::ffff:ffff:ffff:ffff", "ipv6"):     1 << 64,
		"local_ipam_range_set_in_use" + set("local", "0", "10.61.0.1-10.61.0.254", "ipv4"):                       2,
		"local_ipam_range_set_free" + set("local", "0", "10.61.0.1-10.61.0.254", "ipv4"):                         251,
		`local_ipam_network_ready{network="cluster"}`:                                                            1,
		`local_ipam_network_ready{network="local"}`:                                                              1,
		fmt.Sprintf(`local_ipam_network_unreadable{file=%q,network="down"}`, filepath.Join(dir, "30-down.conf")): 1,
		`local_ipam_usage_errors{}`: 1,
	} {
		if g, ok := got[series]; !ok || g != want {
			t.Errorf("%s = %v (present %v), want %v", series, g, ok, want)
		}
	}
	if len(metricstest.Find(samples, "local_ipam_network_ready", map[string]string{"network": "other"})) != 0 ||
		len(metricstest.Find(samples, "local_ipam_network_ready", map[string]string{"network": "down"})) != 0 {
		t.Errorf("a network that is not local-ipam's, or unreadable, has a ready gauge:\n%s", o.Stdout)
	}
	if !strings.Contains(o.Stderr, "30-down.conf") {
		t.Errorf("stderr does not name the unreachable network: %q", o.Stderr)
	}

	// One etcd network by --conf.
	o = operator(t, "usage", "--conf", filepath.Join(dir, "10-cluster.conf"), "--format", "prometheus")
	wantOK(t, o, "usage --conf --format prometheus")
	metricstest.Check(t, o.Stdout)
	if in := metricstest.Find(metricstest.Parse(t, o.Stdout), "local_ipam_range_set_in_use", map[string]string{"network": "cluster", "family": "ipv4"}); len(in) != 1 || in[0].Value != 4 {
		t.Errorf("usage --conf of the etcd network: in use %v\n%s", in, o.Stdout)
	}

	// The table: both stores; the unreachable one named, exit 1.
	o = operator(t, "usage", "--conf-dir", dir)
	if o.Exit != 1 || !strings.Contains(o.Stdout, "network cluster (etcd "+eps[0]) || !strings.Contains(o.Stdout, "network local (") ||
		!strings.Contains(o.Stderr, "30-down.conf") {
		t.Errorf("usage --conf-dir: %s", o)
	}

	// local-ipam without local-ipam-etcd: the disk network is counted, the etcd ones are
	// errors that say what to install.
	o = cniexec.Run(t, cniexec.Alone(t, "local-ipam"), nil, nil, "usage", "--conf-dir", dir)
	if o.Exit != 1 || !strings.Contains(o.Stdout, "network local (") || strings.Contains(o.Stdout, "network cluster") ||
		!strings.Contains(o.Stderr, "2 network(s)") || !strings.Contains(o.Stderr, "local-ipam-etcd") {
		t.Errorf("usage --conf-dir without local-ipam-etcd: %s", o)
	}
}
