package podman

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// containers is how many containers each test runs at once.
const containers = 12

// scenario is one way a user puts local-ipam under podman.
type scenario struct {
	tag    string       // names the rig: lipam-podman-<pid>-<tag>
	subnet netip.Prefix // the network's only range
	// installAs is the name of the local-ipam binary in podman's CNI plugin directory.
	installAs string
	// generated: the network comes from `podman network create`; otherwise from a conflist
	// the test writes, naming installAs as the bridge's IPAM, with a dataDir in the rig.
	generated bool
	// overReference: the plugin directory holds the reference host-local first, and
	// `local-ipam install --as host-local` replaces it (keeping it as host-local.orig);
	// otherwise the binary is copied in by hand.
	overReference bool
}

// A conflist that names local-ipam: podman runs the plugin under its own name.
func TestConflistNamesLocalIPAM(t *testing.T) {
	runScenario(t, scenario{tag: "a", subnet: netip.MustParsePrefix("10.123.1.0/24"), installAs: "local-ipam"})
}

// A conflist written for host-local, unchanged, with local-ipam installed as host-local.
func TestInstalledAsHostLocal(t *testing.T) {
	runScenario(t, scenario{tag: "b", subnet: netip.MustParsePrefix("10.123.2.0/24"), installAs: "host-local", overReference: true})
}

// A network `podman network create` made (it writes host-local as the IPAM, with
// host-local's default dataDir), with local-ipam installed as host-local.
func TestNetworkCreateWithLocalIPAMAsHostLocal(t *testing.T) {
	runScenario(t, scenario{tag: "c", subnet: netip.MustParsePrefix("10.123.3.0/24"), installAs: "host-local", generated: true})
}

func runScenario(t *testing.T, sc scenario) {
	start := time.Now()
	r := newRig(t, sc.tag)
	if sc.overReference {
		r.installPlugin(cniexec.Bin(t, "host-local"), "host-local")
		o := cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, "install", "--dir", r.pluginDir(), "--as", sc.installAs)
		if !o.OK() || !strings.Contains(o.Stdout, "as "+filepath.Join(r.pluginDir(), "host-local.orig")) {
			t.Fatalf("local-ipam install --as %s over the reference host-local: %s", sc.installAs, o)
		}
	} else {
		r.installPlugin(cniexec.Bin(t, "local-ipam"), sc.installAs)
	}
	ours := filepath.Join(r.pluginDir(), sc.installAs)

	// Every host-local podman could run instead of ours: the reference one next to
	// local-ipam, the one install kept, and any in podman's built-in plugin directories.
	binDir, _ := cniexec.BinDir()
	foreign := []string{filepath.Join(binDir, "host-local"), filepath.Join(r.pluginDir(), "host-local.orig")}
	for _, d := range defaultPluginDirs {
		foreign = append(foreign, filepath.Join(d, "host-local"))
	}
	watch := watchOpens(t, append(foreign, ours)...)
	var others []string
	for _, f := range watch.watched() {
		if f != ours {
			others = append(others, f)
		}
	}

	dataDir := r.dataDir()
	if sc.generated {
		dataDir = cniDataDir
		if _, err := os.Stat(filepath.Join(dataDir, r.name)); !os.IsNotExist(err) {
			t.Fatalf("%s exists before the network does (%v)", filepath.Join(dataDir, r.name), err)
		}
		if _, err := r.podman(nil, "network", "create", "--subnet", sc.subnet.String(), r.name); err != nil {
			t.Fatal(err)
		}
		checkGenerated(t, filepath.Join(r.netconfDir(), r.name+".conflist"), sc.subnet)
	} else {
		conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": "lipam0",
      "isGateway": true,
      "ipam": {
        "type": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, r.name, sc.installAs, sc.subnet.String(), dataDir)
		if err := os.WriteFile(filepath.Join(r.netconfDir(), r.name+".conflist"), []byte(conflist), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	netDir := filepath.Join(dataDir, r.name)
	if out, err := r.podman(nil, "network", "ls", "--format", "{{.Name}}"); err != nil || !strings.Contains("\n"+out, "\n"+r.name+"\n") {
		t.Fatalf("podman does not list the network %s: %q %v", r.name, out, err)
	}

	names := make([]string, containers)
	for i := range names {
		names[i] = fmt.Sprintf("%s%02d", sc.tag, i+1)
	}
	t0 := time.Now()
	if errs := parallel(names, func(n string) error {
		_, err := r.podman(nil, "run", "--detach", "--name", n, "--network", r.name, image, "sleep", "3600")
		return err
	}); len(errs) > 0 {
		t.Fatalf("podman run: %v", errs)
	}
	tRun := time.Since(t0)
	before, pings1, ok := checkNetwork(t, r, sc, names, netDir, "after start")
	if !ok {
		t.FailNow()
	}
	if _, err := os.Stat(filepath.Join(netDir, ".local-ipam")); err != nil {
		t.Errorf("no .local-ipam index in %s (%v): a host-local, not local-ipam, served the ADDs", netDir, err)
	}
	checkExecs(t, watch, ours, "start")

	t0 = time.Now()
	if _, err := r.podman(nil, append([]string{"restart", "--time", "0"}, names...)...); err != nil {
		t.Fatal(err)
	}
	tRestart := time.Since(t0)
	after, pings2, ok := checkNetwork(t, r, sc, names, netDir, "after restart")
	if !ok {
		t.FailNow()
	}
	checkExecs(t, watch, ours, "restart")
	kept := 0
	for n, a := range before {
		if after[n] == a {
			kept++
		}
	}

	t0 = time.Now()
	if _, err := r.podman(nil, append([]string{"rm", "--force", "--time", "0"}, names...)...); err != nil {
		t.Fatal(err)
	}
	tRm := time.Since(t0)
	if out, err := r.podman(nil, "ps", "--all", "--quiet"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("containers left after podman rm -f: %q %v", out, err)
	}
	if recs, err := records(netDir); err != nil || len(recs) != 0 {
		t.Errorf("after podman rm -f, %s still holds records %v (%v)", netDir, recs, err)
	}
	if l, err := localIPAMList(t, dataDir, r.name); err != nil || len(l) != 0 {
		t.Errorf("after podman rm -f, local-ipam list shows %v (%v)", l, err)
	}

	checkExecs(t, watch, ours, "rm -f")
	if sc.overReference {
		o := cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, "uninstall", "--dir", r.pluginDir(), "--as", sc.installAs)
		if !o.OK() || !sameFile(filepath.Join(r.pluginDir(), "host-local"), cniexec.Bin(t, "host-local")) {
			t.Errorf("local-ipam uninstall --as %s did not put the reference host-local back: %s", sc.installAs, o)
		}
	}
	ipamType := sc.installAs
	if sc.generated {
		ipamType = "host-local, written by podman network create"
	}
	if sc.overReference {
		ipamType += ", local-ipam install over the reference host-local"
	}
	t.Logf("%d containers on %s (IPAM %q, local-ipam installed as %s, records in %s): run %v, restart %v, rm -f %v; %d pings answered; restart kept %d of %d addresses; other host-local binaries watched: %v; total %v",
		containers, sc.subnet, ipamType,
		sc.installAs, netDir, tRun.Round(time.Millisecond), tRestart.Round(time.Millisecond), tRm.Round(time.Millisecond),
		pings1+pings2, kept, containers, others, time.Since(start).Round(time.Millisecond))
}

// checkExecs fails the test unless, since the last call, podman ran ours and no other
// watched binary (a host-local that is not local-ipam).
func checkExecs(t *testing.T, w *execWatch, ours, phase string) {
	t.Helper()
	opens, err := w.opens()
	if err != nil {
		t.Fatal(err)
	}
	for f, n := range opens {
		if f != ours {
			t.Errorf("%s: podman ran %s (opened %d times at least): not every IPAM call went to local-ipam", phase, f, n)
		}
	}
	if opens[ours] == 0 {
		t.Errorf("%s: podman never ran %s", phase, ours)
	}
}

// checkGenerated asserts the premise of the third scenario: podman's generated conflist
// names host-local with no dataDir, so local-ipam serves it only when installed as
// host-local and keeps its records in host-local's default place.
func checkGenerated(t *testing.T, path string, subnet netip.Prefix) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
			IPAM *struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
				Ranges  [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, p := range conf.Plugins {
		if p.IPAM == nil {
			continue
		}
		if p.Type != "bridge" || p.IPAM.Type != "host-local" || p.IPAM.DataDir != "" ||
			len(p.IPAM.Ranges) != 1 || len(p.IPAM.Ranges[0]) != 1 || p.IPAM.Ranges[0][0].Subnet != subnet.String() {
			t.Fatalf("podman network create wrote an unexpected IPAM section (want bridge with host-local, default dataDir, %s):\n%s", subnet, data)
		}
		return
	}
	t.Fatalf("podman network create wrote no IPAM section:\n%s", data)
}

// attachment is what podman inspect says of one container on the network.
type attachment struct {
	ID, Name string
	Addr     netip.Prefix
	MAC      string
	Gateway  string
}

var (
	inetRe = regexp.MustCompile(`\binet (\S+)`)
	viaRe  = regexp.MustCompile(`^default via (\S+)`)
	pingRe = regexp.MustCompile(`^ping (\S+) (ok|fail)$`)
)

// checkNetwork asserts, for the running containers, that podman inspect gives each one
// address of the subnet, all distinct; that each container's eth0 holds exactly that address
// and MAC address, and its default route goes via inspect's gateway; that every container answers every other's ping; and that the network's
// records, on disk and through local-ipam list, are exactly these attachments. It returns
// the addresses by container name and the number of pings answered.
func checkNetwork(t *testing.T, r *rig, sc scenario, names []string, netDir, when string) (addrs map[string]netip.Addr, answered int, ok bool) {
	t.Helper()
	failed := false
	errorf := func(format string, args ...any) {
		t.Helper()
		failed = true
		t.Errorf(format, args...)
	}
	atts := inspect(t, r, names)
	byAddr := map[netip.Addr]string{}
	addrs = map[string]netip.Addr{}
	for _, a := range atts {
		if a.Addr.Bits() != sc.subnet.Bits() || !sc.subnet.Contains(a.Addr.Addr()) || a.Addr.Addr() == sc.subnet.Addr().Next() {
			errorf("%s: podman inspect gives %s the address %s: not a host address of %s", when, a.Name, a.Addr, sc.subnet)
		}
		if other, dup := byAddr[a.Addr.Addr()]; dup {
			errorf("%s: %s and %s both have %s", when, a.Name, other, a.Addr.Addr())
		}
		byAddr[a.Addr.Addr()] = a.Name
		addrs[a.Name] = a.Addr.Addr()
	}
	if failed {
		return addrs, 0, false
	}

	// In each container: its eth0 as it sees it, then a ping to every other container.
	const script = `ip -o -4 addr show dev eth0; echo "mac $(cat /sys/class/net/eth0/address)"; ip -4 route show default
for a in "$@"; do if ping -c 1 -w 3 "$a" >/dev/null 2>&1; then echo "ping $a ok"; else echo "ping $a fail"; fi; done`
	var sent int
	var counted = make(chan [2]int, len(atts))
	errs := parallel(names, func(n string) error {
		var self attachment
		var peers []string
		for _, a := range atts {
			if a.Name == n {
				self = a
			} else {
				peers = append(peers, a.Addr.Addr().String())
			}
		}
		out, err := r.podman(nil, append([]string{"exec", n, "sh", "-c", script, "sh"}, peers...)...)
		if err != nil {
			return err
		}
		var inets, gws []string
		mac := ""
		ok, fail := 0, []string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			line = strings.TrimSpace(line)
			if m := inetRe.FindStringSubmatch(line); m != nil {
				inets = append(inets, m[1])
			} else if m := pingRe.FindStringSubmatch(line); m != nil {
				if m[2] == "ok" {
					ok++
				} else {
					fail = append(fail, m[1])
				}
			} else if m := viaRe.FindStringSubmatch(line); m != nil {
				gws = append(gws, m[1])
			} else if v, has := strings.CutPrefix(line, "mac "); has {
				mac = v
			}
		}
		counted <- [2]int{ok, len(peers)}
		var problems []string
		if len(inets) != 1 || inets[0] != self.Addr.String() {
			problems = append(problems, fmt.Sprintf("eth0 has IPv4 %v, podman inspect says %s", inets, self.Addr))
		}
		if !strings.EqualFold(mac, self.MAC) {
			problems = append(problems, fmt.Sprintf("eth0 has MAC %q, podman inspect says %q", mac, self.MAC))
		}
		if len(gws) != 1 || gws[0] != self.Gateway {
			problems = append(problems, fmt.Sprintf("default routes via %v, podman inspect says gateway %q", gws, self.Gateway))
		}
		if ok+len(fail) != len(peers) {
			problems = append(problems, fmt.Sprintf("%d ping results for %d peers:\n%s", ok+len(fail), len(peers), out))
		}
		if len(fail) > 0 {
			problems = append(problems, fmt.Sprintf("no answer from %v", fail))
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return nil
	})
	close(counted)
	for c := range counted {
		answered += c[0]
		sent += c[1]
	}
	for _, err := range errs {
		errorf("%s: %v", when, err)
	}
	if sent != len(atts)*(len(atts)-1) {
		errorf("%s: %d pings sent, want %d", when, sent, len(atts)*(len(atts)-1))
	}

	// The data dir: one record per container, named by its address, owned by its ID and eth0.
	recs, err := records(netDir)
	if err != nil {
		errorf("%s: %v", when, err)
	}
	want := map[netip.Addr]string{}
	for _, a := range atts {
		want[a.Addr.Addr()] = a.ID + "\r\neth0"
	}
	if !sameMap(recs, want) {
		errorf("%s: records in %s:\n%v\nwant (from podman inspect):\n%v", when, netDir, recs, want)
	}
	list, err := localIPAMList(t, filepath.Dir(netDir), filepath.Base(netDir))
	if err != nil {
		errorf("%s: %v", when, err)
	}
	if !sameMap(list, want) {
		errorf("%s: local-ipam list:\n%v\nwant (from podman inspect):\n%v", when, list, want)
	}
	return addrs, answered, !failed
}

// inspect reads the containers' attachments to the rig's network from podman inspect, and
// fails the test unless each container runs and is attached to that network only.
func inspect(t *testing.T, r *rig, names []string) []attachment {
	t.Helper()
	out, err := r.podman(nil, append([]string{"inspect", "--type", "container", "--format", "json"}, names...)...)
	if err != nil {
		t.Fatal(err)
	}
	var got []struct {
		ID    string `json:"Id"`
		Name  string
		State struct{ Running bool }
		// Networks by name.
		NetworkSettings struct {
			Networks map[string]struct {
				IPAddress   string
				IPPrefixLen int
				MacAddress  string
				Gateway     string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("podman inspect: %v\n%s", err, out)
	}
	if len(got) != len(names) {
		t.Fatalf("podman inspect gives %d containers, want %d", len(got), len(names))
	}
	var atts []attachment
	for _, c := range got {
		n, ok := c.NetworkSettings.Networks[r.name]
		if !c.State.Running || !ok || len(c.NetworkSettings.Networks) != 1 {
			t.Fatalf("podman inspect %s: running %v, networks %v; want running on %s only", c.Name, c.State.Running, c.NetworkSettings.Networks, r.name)
		}
		addr, err := netip.ParseAddr(n.IPAddress)
		if err != nil {
			t.Fatalf("podman inspect %s: address %q: %v", c.Name, n.IPAddress, err)
		}
		atts = append(atts, attachment{ID: c.ID, Name: c.Name, Addr: netip.PrefixFrom(addr, n.IPPrefixLen), MAC: n.MacAddress, Gateway: n.Gateway})
	}
	return atts
}

// records reads a network directory of host-local's format: owner ("<id>\r\n<ifname>") by
// address, for every file named by an address. A missing directory holds none.
func records(netDir string) (map[netip.Addr]string, error) {
	entries, err := os.ReadDir(netDir)
	if os.IsNotExist(err) {
		return map[netip.Addr]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	recs := map[netip.Addr]string{}
	for _, e := range entries {
		addr, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(netDir, e.Name()))
		if err != nil {
			return nil, err
		}
		recs[addr] = string(data)
	}
	return recs, nil
}

// localIPAMList is `local-ipam list --json` of one network: owner ("<id>\r\n<ifname>") by
// address.
func localIPAMList(t *testing.T, dataDir, network string) (map[netip.Addr]string, error) {
	o := cniexec.Run(t, cniexec.Bin(t, "local-ipam"), nil, nil, "list", "--data-dir", dataDir, "--network", network, "--json")
	if !o.OK() {
		return nil, fmt.Errorf("local-ipam list: %s", o)
	}
	var l []struct {
		Network, Address, ContainerID, IfName string
	}
	if err := json.Unmarshal([]byte(o.Stdout), &l); err != nil {
		return nil, fmt.Errorf("local-ipam list: %v: %s", err, o.Stdout)
	}
	m := map[netip.Addr]string{}
	for _, e := range l {
		addr, err := netip.ParseAddr(e.Address)
		if err != nil || e.Network != network {
			return nil, fmt.Errorf("local-ipam list: entry %+v", e)
		}
		m[addr] = e.ContainerID + "\r\n" + e.IfName
	}
	return m, nil
}

// sameFile tells whether two files hold the same bytes.
func sameFile(a, b string) bool {
	da, errA := os.ReadFile(a)
	db, errB := os.ReadFile(b)
	return errA == nil && errB == nil && string(da) == string(db)
}

func sameMap(a, b map[netip.Addr]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
