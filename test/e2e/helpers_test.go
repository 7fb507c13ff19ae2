package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// Every namespace, link and network created by this package carries the test process id, so
// parallel runs do not collide and leftovers of a killed run can be recognised and swept.
var pid = os.Getpid()

const (
	nsPrefix       = "lipam-e2e-" // netns and network names: lipam-e2e-<pid>-<test>[-<role>]
	linkPrefix     = "e2e"        // root-ns links: e2e<pid><tag>, at most 15 characters
	netnsDir       = "/var/run/netns"
	libcniCacheDir = "/var/lib/cni/results" // libcni's default result cache (cnitool uses it)
)

var (
	staleNetnsRe = regexp.MustCompile(`^` + nsPrefix + `(\d+)-`)
	staleLinkRe  = regexp.MustCompile(`^` + linkPrefix + `(\d+)[a-z][a-z0-9]*$`)
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		sweepStale()
	}
	os.Exit(m.Run())
}

// sweepStale removes namespaces, links and libcni cache entries left behind by an earlier run
// of this package that was killed before its cleanups ran (SIGKILL, -timeout panic). Only
// objects named by this package whose owning process no longer exists are touched.
func sweepStale() {
	dead := func(re *regexp.Regexp, name string) bool {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		p, err := strconv.Atoi(m[1])
		if err != nil || p == pid {
			return false
		}
		// Gone, or a zombie nobody has reaped yet ("<pid> (<comm>) Z ...").
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		i := bytes.LastIndexByte(stat, ')')
		return err == nil && i >= 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z"))
	}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if dead(staleNetnsRe, e.Name()) {
				_ = exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "-j", "link", "show").Output(); err == nil {
		var links []struct {
			Name string `json:"ifname"`
		}
		if json.Unmarshal(out, &links) == nil {
			for _, l := range links {
				if dead(staleLinkRe, l.Name) {
					_ = exec.Command("ip", "link", "del", l.Name).Run()
				}
			}
		}
	}
	if entries, err := os.ReadDir(libcniCacheDir); err == nil {
		for _, e := range entries {
			if dead(staleNetnsRe, e.Name()) {
				_ = os.Remove(filepath.Join(libcniCacheDir, e.Name()))
			}
		}
	}
}

// env is what every test needs: where the binaries are and which IPAM type is under test.
type env struct {
	binDir string
	ipam   string
}

// setup skips when not root and fails when a tool or binary is missing.
func setup(t *testing.T) *env {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Skipf("e2e tests need root to create network namespaces and links (running as uid %d)", uid)
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "ping": "iputils-ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%q not found in PATH: install the Debian package %s (.ci/run does)", tool, pkg)
		}
	}
	e := &env{ipam: os.Getenv("E2E_IPAM")}
	if e.ipam == "" {
		e.ipam = "local-ipam"
	}
	for _, b := range []string{e.ipam, "bridge", "macvlan", "cnitool"} {
		cniexec.Bin(t, b) // fails the test saying how to build what is missing
	}
	e.binDir, _ = cniexec.BinDir() // Bin has found it
	return e
}

// run executes a command with a timeout and returns its stdout; the error carries stderr.
// A nil envv means the test process's environment.
func run(envv []string, name string, args ...string) (string, error) {
	return runStdin(envv, "", name, args...)
}

// runStdin is run with stdin.
func runStdin(envv []string, stdin, name string, args ...string) (string, error) {
	o, err := cniexec.Exec(context.Background(), name, cniexec.Options{Env: envv, Stdin: []byte(stdin), Args: args})
	if err != nil {
		return o.Stdout, err
	}
	if o.Exit != 0 {
		return o.Stdout, fmt.Errorf("%s %s: exit status %d\nstdout: %s\nstderr: %s",
			name, strings.Join(args, " "), o.Exit, o.Stdout, o.Stderr)
	}
	return o.Stdout, nil
}

// mustRun runs a command and fails the test on error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// uniqueName returns lipam-e2e-<pid>-<parts...>: a netns or network name for this run.
func uniqueName(parts ...string) string {
	return nsPrefix + strconv.Itoa(pid) + "-" + strings.Join(parts, "-")
}

// linkName returns e2e<pid><tag> for a root-namespace link, within the kernel's 15 characters.
func linkName(t *testing.T, tag string) string {
	t.Helper()
	n := linkPrefix + strconv.Itoa(pid) + tag
	if len(n) > 15 {
		t.Fatalf("link name %q longer than 15 characters", n)
	}
	return n
}

// testOctet spreads the test subnets by process id so that concurrent runs do not share one.
func testOctet() int { return pid % 256 }

// addNetns creates a named network namespace, removed again when the test ends.
func addNetns(t *testing.T, name string) string {
	t.Helper()
	t.Cleanup(func() { delNetns(name) })
	mustRun(t, "ip", "netns", "add", name)
	mustRun(t, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
	return filepath.Join(netnsDir, name)
}

func delNetns(name string) {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// cleanupLink deletes a root-namespace link when the test ends, if it still exists.
func cleanupLink(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/class/net/" + name); err == nil {
			_ = exec.Command("ip", "link", "del", name).Run()
		}
	})
}

// preserveSysctls restores the given /proc/sys files when the test ends: bridge with
// isGateway turns on IPv4/IPv6 forwarding in the root namespace.
func preserveSysctls(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		old, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		t.Cleanup(func() {
			if cur, err := os.ReadFile(p); err == nil && !bytes.Equal(cur, old) {
				_ = os.WriteFile(p, old, 0o644)
			}
		})
	}
}

// cniNet is one network configuration list driven through cnitool.
type cniNet struct {
	t       *testing.T
	e       *env
	name    string
	confDir string
	dataDir string // the IPAM store root; records live in dataDir/name/<ip>
	conf    []byte // the conflist as written
}

// newNet writes conflist (its "name" is set here) to a fresh NETCONFPATH directory.
func newNet(t *testing.T, e *env, name string, conflist map[string]any) *cniNet {
	t.Helper()
	n := &cniNet{t: t, e: e, name: name, confDir: t.TempDir()}
	conflist["name"] = name
	for _, p := range conflist["plugins"].([]map[string]any) {
		if ipam, ok := p["ipam"].(map[string]any); ok {
			if d, ok := ipam["dataDir"].(string); ok {
				n.dataDir = d
			}
		}
	}
	b, err := json.MarshalIndent(conflist, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.confDir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	n.conf = b
	t.Logf("network %s:\n%s", name, b)
	// libcni caches every ADD result under /var/lib/cni/results; drop ours on the way out.
	t.Cleanup(func() {
		matches, _ := filepath.Glob(filepath.Join(libcniCacheDir, name+"-*"))
		for _, m := range matches {
			_ = os.Remove(m)
		}
	})
	return n
}

// bridgeList is a conflist whose first plugin is bridge on br, the gateway of its subnet
// without masquerading, with ipam as its IPAM section; more plugins follow it.
func bridgeList(version, br string, ipam map[string]any, more ...map[string]any) map[string]any {
	bridge := map[string]any{"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": false, "ipam": ipam}
	return map[string]any{"cniVersion": version, "plugins": append([]map[string]any{bridge}, more...)}
}

// attachPair attaches two new namespaces, <tag>-a and <tag>-b, to the network: each must
// get one address from each of subnets (assertAttached), none the other's. It returns
// the attachments and their addresses.
func (n *cniNet) attachPair(tag string, subnets ...netip.Prefix) (a, b *attachment, pa, pb []netip.Prefix) {
	t := n.t
	t.Helper()
	nsA, nsB := uniqueName(tag, "a"), uniqueName(tag, "b")
	addNetns(t, nsA)
	addNetns(t, nsB)
	a, b = n.add(nsA), n.add(nsB)
	pa, pb = assertAttached(t, a, subnets...), assertAttached(t, b, subnets...)
	for i := range pa {
		if pa[i] == pb[i] {
			t.Fatalf("both namespaces got %s", pa[i])
		}
	}
	return a, b, pa, pb
}

// checkAll runs CHECK of every attachment: each must pass.
func checkAll(t *testing.T, ats ...*attachment) {
	t.Helper()
	for _, at := range ats {
		if err := at.check(); err != nil {
			t.Fatalf("CHECK %s: %v", at.ns, err)
		}
	}
}

// delTwice DELs the attachment: the store records of released must be gone, and the
// namespace's eth0; then a second DEL must succeed too.
func (a *attachment) delTwice(t *testing.T, released ...netip.Addr) {
	t.Helper()
	if err := a.del(); err != nil {
		t.Fatalf("DEL %s: %v", a.ns, err)
	}
	for _, addr := range released {
		a.net.assertNoRecord(t, addr)
	}
	if linkExists(a.ns, "eth0") {
		t.Errorf("%s: eth0 still present after DEL", a.ns)
	}
	if err := a.del(); err != nil {
		t.Fatalf("second DEL %s: %v", a.ns, err)
	}
}

// cnitool runs `cnitool <verb> <net> <netnsPath>` with a hermetic environment.
func (n *cniNet) cnitool(verb, netnsPath string) (string, error) {
	envv := []string{"CNI_PATH=" + n.e.binDir, "NETCONFPATH=" + n.confDir}
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "CNI_PATH", "NETCONFPATH", "CNI_IFNAME", "CNI_ARGS", "CAP_ARGS", "CNI_CONTAINERID":
		default:
			envv = append(envv, kv)
		}
	}
	return run(envv, filepath.Join(n.e.binDir, "cnitool"), verb, n.name, netnsPath)
}

// containerID is the ID cnitool (v1.3) derives from the netns path; it ignores CNI_CONTAINERID.
func containerID(netnsPath string) string {
	abs, err := filepath.Abs(netnsPath)
	if err != nil {
		panic(err)
	}
	s := sha512.Sum512([]byte(abs))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// attachment is one container (netns) attached to a network, with eth0 as ifname.
type attachment struct {
	net    *cniNet
	ns     string // netns name
	path   string // /var/run/netns/<ns>
	id     string // container ID as cnitool computes it
	ifname string
	result cniResult
}

// cniResult is the subset of a CNI result (0.4.0 – 1.1.0) the tests look at.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"ips"`
	Routes []cniRoute `json:"routes"`
}

type cniRoute struct {
	Dst string `json:"dst"`
	GW  string `json:"gw"`
}

// prefixes returns the result's addresses as prefixes (address plus subnet length).
func (r cniResult) prefixes(t *testing.T) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			t.Fatalf("result address %q: %v", ip.Address, err)
		}
		ps = append(ps, p)
	}
	return ps
}

// add runs cnitool add for the netns, registering a best-effort DEL for cleanup first so a
// test that fails halfway still releases what it got.
func (n *cniNet) add(ns string) *attachment {
	t := n.t
	t.Helper()
	a := &attachment{net: n, ns: ns, path: filepath.Join(netnsDir, ns), ifname: "eth0"}
	a.id = containerID(a.path)
	t.Cleanup(func() { _, _ = n.cnitool("del", a.path) })
	out, err := n.cnitool("add", a.path)
	if err != nil {
		t.Fatalf("ADD %s: %v", ns, err)
	}
	if err := json.Unmarshal([]byte(out), &a.result); err != nil {
		t.Fatalf("ADD %s: result is not JSON: %v\n%s", ns, err, out)
	}
	t.Logf("ADD %s (container %s): %s", ns, a.id, strings.Join(strings.Fields(out), " "))
	return a
}

func (a *attachment) check() error {
	_, err := a.net.cnitool("check", a.path)
	return err
}

func (a *attachment) del() error {
	_, err := a.net.cnitool("del", a.path)
	return err
}

// recordPath is the host-local store file for an address of this network.
func (n *cniNet) recordPath(addr netip.Addr) string {
	return filepath.Join(n.dataDir, n.name, addr.String())
}

// assertRecord checks the store file for addr exists and names this attachment.
func (a *attachment) assertRecord(t *testing.T, addr netip.Addr) {
	t.Helper()
	b, err := os.ReadFile(a.net.recordPath(addr))
	if err != nil {
		t.Fatalf("store record for %s: %v", addr, err)
	}
	if want := a.id + "\r\n" + a.ifname; string(b) != want {
		t.Fatalf("store record %s = %q, want %q", a.net.recordPath(addr), b, want)
	}
}

// assertNoRecord checks the store file for addr is gone.
func (n *cniNet) assertNoRecord(t *testing.T, addr netip.Addr) {
	t.Helper()
	if _, err := os.Stat(n.recordPath(addr)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("store record for %s still present after DEL (stat: %v)", addr, err)
	}
}

// ipAddr is one address `ip -j addr show` lists.
type ipAddr struct {
	Addr      netip.Addr `json:"local"`
	PrefixLen int        `json:"prefixlen"`
	Scope     string     `json:"scope"`
	Tentative bool       `json:"tentative"`
	DADFailed bool       `json:"dadfailed"`
}

// ipAddrs runs `ip args...` (an `ip -j addr show`, maybe through `ip netns exec`) and
// returns every address of every link it lists.
func ipAddrs(t *testing.T, args ...string) []ipAddr {
	t.Helper()
	out := mustRun(t, "ip", args...)
	var links []struct {
		AddrInfo []ipAddr `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var all []ipAddr
	for _, l := range links {
		all = append(all, l.AddrInfo...)
	}
	return all
}

// nsAddrs lists the global addresses configured on ifname inside the netns.
func nsAddrs(t *testing.T, ns, ifname string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, a := range ipAddrs(t, "netns", "exec", ns, "ip", "-j", "addr", "show", "dev", ifname) {
		if a.Scope == "global" {
			ps = append(ps, netip.PrefixFrom(a.Addr, a.PrefixLen))
		}
	}
	return ps
}

// linkExists reports whether ifname exists inside the netns.
func linkExists(ns, ifname string) bool {
	return exec.Command("ip", "netns", "exec", ns, "ip", "link", "show", "dev", ifname).Run() == nil
}

// nsDefaultGateway returns the gateway of the default route of the given family in the netns.
func nsDefaultGateway(t *testing.T, ns string, v6 bool) string {
	t.Helper()
	fam := "-4"
	if v6 {
		fam = "-6"
	}
	out := mustRun(t, "ip", "netns", "exec", ns, "ip", fam, "-j", "route", "show", "default")
	var routes []struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatalf("ip -j route in %s: %v\n%s", ns, err, out)
	}
	if len(routes) == 0 {
		return ""
	}
	return routes[0].Gateway
}

// ping sends single echo requests from the netns to dst until one is answered or the
// deadline passes (the first may wait for ARP/ND, an IPv6 gateway for the end of its DAD).
func ping(t *testing.T, ns string, dst netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	args := []string{"netns", "exec", ns, "ping", "-n", "-c1", "-W2"}
	if dst.Is6() {
		args = append(args, "-6")
	}
	args = append(args, dst.String())
	for {
		out, err := run(nil, "ip", args...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping %s from %s failed: %v\n%s", dst, ns, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pickFamily returns the result prefix of the wanted family, failing if there is none.
func pickFamily(t *testing.T, ps []netip.Prefix, v6 bool) netip.Prefix {
	t.Helper()
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			return p
		}
	}
	t.Fatalf("no %s address in %v", map[bool]string{false: "IPv4", true: "IPv6"}[v6], ps)
	return netip.Prefix{}
}

// waitDAD waits until addr on the root-namespace link has finished duplicate address
// detection (is no longer tentative), so it answers pings.
func waitDAD(t *testing.T, link string, addr netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	for {
		all := ipAddrs(t, "-6", "-j", "addr", "show", "dev", link)
		for _, a := range all {
			if a.Addr != addr {
				continue
			}
			if a.DADFailed {
				t.Fatalf("%s on %s: duplicate address detection failed", addr, link)
			}
			if !a.Tentative {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s still tentative or absent after 8s: %+v", addr, link, all)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pluginConf returns plugin i of the conflist as libcni hands it to that plugin: with the
// list's name and cniVersion (and nothing else injected).
func (n *cniNet) pluginConf(i int) []byte {
	n.t.Helper()
	var list struct {
		Name       string                       `json:"name"`
		CNIVersion string                       `json:"cniVersion"`
		Plugins    []map[string]json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(n.conf, &list); err != nil || i >= len(list.Plugins) {
		n.t.Fatalf("conflist of %s: plugin %d: %v", n.name, i, err)
	}
	p := list.Plugins[i]
	p["name"], _ = json.Marshal(list.Name)
	p["cniVersion"], _ = json.Marshal(list.CNIVersion)
	b, err := json.Marshal(p)
	if err != nil {
		n.t.Fatal(err)
	}
	return b
}

// execPlugin runs binary (from the bin dir) with verb, the given container ID (ifname eth0) and
// stdin, as libcni or a delegating main plugin would.
func (n *cniNet) execPlugin(binary, verb, containerID string, stdin []byte) cniexec.Out {
	n.t.Helper()
	return cniexec.CNI(n.t, filepath.Join(n.e.binDir, binary), cniexec.Call{
		Cmd: verb, ID: containerID, IfName: "eth0", Conf: stdin,
		// Needed by skel for ADD; an IPAM plugin never enters it.
		Netns: filepath.Join(netnsDir, uniqueName("no-such-netns")),
	})
}

// ipamExec runs the IPAM plugin under test directly with the first plugin's config, exactly
// as that main plugin (bridge) delegates to it: same config, store and network name, but a
// container no runtime cache knows about.
func (n *cniNet) ipamExec(verb, containerID string) cniexec.Out {
	n.t.Helper()
	return n.execPlugin(n.e.ipam, verb, containerID, n.pluginConf(0))
}

// ipamAdd is ipamExec ADD that must succeed; it returns the one address allocated and
// registers a DEL for cleanup.
func (n *cniNet) ipamAdd(containerID string) netip.Addr {
	t := n.t
	t.Helper()
	t.Cleanup(func() { n.ipamExec("DEL", containerID) })
	o := n.ipamExec("ADD", containerID)
	if o.Exit != 0 {
		t.Fatalf("IPAM ADD %s: %s", containerID, o)
	}
	addrs := o.Addrs(t)
	if len(addrs) != 1 {
		t.Fatalf("IPAM ADD %s: %d addresses %v, want 1", containerID, len(addrs), addrs)
	}
	p, err := netip.ParsePrefix(addrs[0])
	if err != nil {
		t.Fatalf("IPAM ADD %s: result address %q: %v", containerID, addrs[0], err)
	}
	return p.Addr()
}

// records returns the network's store records: address → owner line ("<id>\r\n<ifname>").
func (n *cniNet) records() map[netip.Addr]string {
	n.t.Helper()
	dir := filepath.Join(n.dataDir, n.name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		n.t.Fatalf("store of %s: %v", n.name, err)
	}
	recs := map[netip.Addr]string{}
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			n.t.Fatalf("store record %s: %v", e.Name(), err)
		}
		recs[a] = string(b)
	}
	return recs
}

// owner is the content of a store record for a container's eth0.
func owner(containerID string) string { return containerID + "\r\n" + "eth0" }

// cniErrorObject parses the spec's error object a failing plugin printed on stdout.
func cniErrorObject(t *testing.T, o cniexec.Out) (code uint, msg string) {
	t.Helper()
	if o.Exit == 0 {
		t.Fatalf("want a failure with a CNI error object, got %s", o)
	}
	e, _, err := cniexec.ParseError(o.Stdout)
	if err != nil {
		t.Fatalf("plugin stdout is not a CNI error object (%v): %s", err, o)
	}
	return e.Code, e.Msg
}
