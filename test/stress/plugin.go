package main

// Calling a plugin as a container runtime does: exec the binary (internal/cniexec) with the
// CNI_* environment and the network config on stdin. A call may be killed with SIGKILL after
// a delay, run as another uid, or run through the RSS middleman (rss.go) to measure its peak
// memory.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

const (
	slotLocal = "local-ipam"
	slotHost  = "host-local"
	netnsPath = "/var/run/netns/stress"
	// defaultTimeout bounds every call of the load, crash and fault scenarios: a call that
	// does not answer within it has hung. local-ipam answers "try again later" (code 11)
	// after waiting 60 s for the network's lock; calls here normally take milliseconds.
	defaultTimeout = 90 * time.Second
)

// plugin is one slot of the comparison and the binary run in it.
type plugin struct {
	slot    string // slotLocal or slotHost
	bin     string // absolute path
	typ     string // the binary's name: the config's ipam "type"
	baseEnv []string
}

func newPlugin(slot, bin string) (*plugin, error) {
	abs, err := cniexec.AbsExecutable(slot, bin)
	if err != nil {
		return nil, err
	}
	return &plugin{slot: slot, bin: abs, typ: filepath.Base(abs), baseEnv: cniexec.PluginEnv()}, nil
}

// call is one plugin invocation.
type call struct {
	cmd    string // CNI_COMMAND
	id     string // CNI_CONTAINERID
	ifname string // CNI_IFNAME (default eth0)
	stdin  []byte
	args   string // CNI_ARGS
	// editEnv, when set, edits the CNI_* variables (hostile input: missing or odd ones).
	editEnv func(map[string]string)
	uid     int           // > 0: run as this uid and gid
	timeout time.Duration // default defaultTimeout
	// killAfter >= 0 with kill: SIGKILL that long after exec (crash scenarios).
	kill      bool
	killAfter time.Duration
	rss       bool // measure peak RSS through the middleman
}

// outcome is what a call did.
type outcome struct {
	exit     int            // exit status; -1 when killed by a signal
	signal   syscall.Signal // the signal that killed it
	stdout   []byte
	stderr   []byte
	dur      time.Duration // exec to exit (measured by the middleman, with rss)
	timedOut bool          // killed by the harness after c.timeout: the call hung
	maxrss   int64         // KiB (with rss)
	rssFloor int64         // KiB: the middleman's own peak, the floor of maxrss
	limit    time.Duration // the timeout it ran under
}

func (o outcome) ok() bool         { return o.exit == 0 && !o.timedOut }
func (o outcome) killedByUs() bool { return o.signal == syscall.SIGKILL && !o.timedOut }
func (o outcome) String() string   { return describe(o) }
func (p *plugin) isLocal() bool    { return p.slot == slotLocal }
func (p *plugin) env(c call) []string {
	vars := map[string]string{
		"CNI_COMMAND":     c.cmd,
		"CNI_CONTAINERID": c.id,
		"CNI_NETNS":       netnsPath,
		"CNI_ARGS":        c.args,
		"CNI_IFNAME":      c.ifname,
		"CNI_PATH":        filepath.Dir(p.bin),
	}
	if c.ifname == "" {
		vars["CNI_IFNAME"] = "eth0"
	}
	if c.cmd == "VERSION" {
		vars["CNI_NETNS"], vars["CNI_IFNAME"], vars["CNI_CONTAINERID"] = "", "", ""
	}
	if c.editEnv != nil {
		c.editEnv(vars)
	}
	env := append([]string(nil), p.baseEnv...)
	if _, ok := vars[clearEnv]; ok {
		env = []string{}
		delete(vars, clearEnv)
	}
	for _, k := range sortedKeys(vars) {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// clearEnv, set by call.editEnv, runs the plugin without the harness's environment.
const clearEnv = "\x00clear"

// run execs the plugin once (internal/cniexec). The error is the harness's: the binary
// could not be started. A non-zero exit, a kill or a hang is an outcome.
func (p *plugin) run(ctx context.Context, c call) (outcome, error) {
	timeout := c.timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	opts := cniexec.Options{Env: p.env(c), Stdin: c.stdin, Timeout: timeout, Kill: c.kill, KillAfter: c.killAfter}
	if c.uid > 0 {
		opts.Cred = &syscall.Credential{Uid: uint32(c.uid), Gid: uint32(c.uid)}
	}
	if c.rss {
		opts.RSS = rssHelper
	}
	r, err := cniexec.Exec(ctx, p.bin, opts)
	o := outcome{exit: r.Exit, signal: r.Signal, stdout: []byte(r.Stdout), stderr: []byte(r.Stderr), dur: r.Took,
		timedOut: r.TimedOut, maxrss: r.MaxRSS, rssFloor: r.RSSFloor, limit: r.Limit}
	if err != nil && !r.TimedOut {
		return o, err
	}
	return o, nil
}

// call runs c against the job's plugin, counting it. A harness error (the binary cannot be
// started) panics: runOne turns it into the scenario's error.
func (x *job) call(c call) outcome {
	x.res.ops.Add(1)
	o, err := x.p.run(x, c)
	if err != nil {
		if x.Err() != nil {
			panic(fmt.Errorf("interrupted: %w", x.Err()))
		}
		panic(err)
	}
	return o
}

// --- config -------------------------------------------------------------------------

// network is one network config of a scenario: its name, data dir and ipam section
// (without type and dataDir, which are filled in per plugin).
type network struct {
	name    string
	dataDir string
	ipam    map[string]any
	// A network kept in etcd (etcd.go): its reservations, read with local-ipam's list, and
	// the machines (store nodes) whose runtimes call the plugin.
	etcd  *etcdStore
	nodes []string
}

// records is where the network's reservations are read: its directory, or etcd.
func (n network) records() reservations {
	if n.etcd != nil {
		return n.etcd
	}
	return diskStore(n.dir())
}

// machine is the node of the i-th attachment of a round-robin spread over the network's
// machines ("" for a disk network).
func (n network) machine(i int) string {
	if len(n.nodes) == 0 {
		return ""
	}
	return n.nodes[i%len(n.nodes)]
}

// on is the network as configured on machine node: its store's node set to it. A disk
// network, or node "", is the same everywhere.
func (n network) on(node string) network {
	st, ok := n.ipam["store"].(map[string]any)
	if !ok || node == "" {
		return n
	}
	n.ipam = cniexec.Merge(n.ipam, map[string]any{"store": cniexec.Merge(st, map[string]any{"node": node})})
	return n
}

// conf is the network config a runtime passes: a bridge network whose ipam section names
// the plugin under test. prev (the ADD result) is added as prevResult for CHECK.
func (x *job) conf(n network, prev []byte) []byte {
	top := map[string]any{"bridge": "cni-stress"}
	if len(prev) > 0 {
		top["prevResult"] = json.RawMessage(prev)
	}
	return cniexec.NetConf("1.1.0", n.name, cniexec.Merge(map[string]any{"type": x.p.typ, "dataDir": n.dataDir}, n.ipam), top)
}

func (n network) dir() string { return filepath.Join(n.dataDir, n.name) }

// --- results and errors ---------------------------------------------------------------

// parseError checks that o is a failure answered as the spec says: non-zero exit and a
// CNI error object with a code and a message on stdout. It returns why not.
func parseError(o outcome) (cniexec.CNIError, string) {
	var e cniexec.CNIError
	switch {
	case o.timedOut:
		return e, fmt.Sprintf("no answer within %v (killed by the harness)", o.limit)
	case o.signal != 0:
		return e, "died of signal " + o.signal.String()
	case o.exit == 0:
		return e, "exit status 0"
	case looksLikePanic(o.stderr):
		return e, "Go panic: " + clip(o.stderr, 200)
	}
	dec := json.NewDecoder(bytes.NewReader(o.stdout))
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Sprintf("stdout is not a CNI error object (%v)", err)
	}
	if e.Code == 0 || e.Msg == "" {
		return e, "error object without a code or a message"
	}
	return e, ""
}

func looksLikePanic(stderr []byte) bool {
	return bytes.Contains(stderr, []byte("panic:")) || bytes.Contains(stderr, []byte("goroutine ")) ||
		bytes.Contains(stderr, []byte("fatal error:"))
}

// addResult is the part of an ADD result we check.
type addResult struct {
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"ips"`
}

// parseAdd reads the addresses of a successful ADD.
func parseAdd(o outcome) ([]netip.Addr, error) {
	if !o.ok() {
		return nil, fmt.Errorf("not a success: %s", describe(o))
	}
	var r addResult
	if err := json.Unmarshal(o.stdout, &r); err != nil {
		return nil, fmt.Errorf("result is not JSON: %v: %s", err, quoteClip(o.stdout, 200))
	}
	var out []netip.Addr
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return nil, fmt.Errorf("result address %q: %v", ip.Address, err)
		}
		out = append(out, p.Addr())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("result holds no address: %s", quoteClip(o.stdout, 200))
	}
	return out, nil
}

var rangeRE = regexp.MustCompile(`failed to allocate for range (\d+)`)

// exhaustedSet tells a "no free address" failure, and in which range set, for either
// plugin: local-ipam's code 100, host-local's code 999 with its message.
func exhaustedSet(p *plugin, e cniexec.CNIError) (int, bool) {
	if p.isLocal() && e.Code != 100 {
		return 0, false
	}
	if !p.isLocal() && !strings.Contains(e.Msg, "no IP addresses available") {
		return 0, false
	}
	if m := rangeRE.FindStringSubmatch(e.Msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, true
	}
	return 0, true
}

// isDuplicate tells the refusal of a second ADD for one attachment.
func isDuplicate(p *plugin, e cniexec.CNIError) bool {
	if p.isLocal() {
		return e.Code == 103
	}
	return strings.Contains(e.Msg, "duplicate allocation is not allowed")
}

func describe(o outcome) string {
	var s string
	switch {
	case o.timedOut:
		s = fmt.Sprintf("no answer within %v (killed by the harness)", o.limit)
	case o.signal != 0:
		s = "killed by " + o.signal.String()
	default:
		s = fmt.Sprintf("exit %d", o.exit)
	}
	if out := bytes.TrimSpace(o.stdout); len(out) > 0 {
		s += ", stdout " + quoteClip(out, 240)
	}
	if errs := bytes.TrimSpace(o.stderr); len(errs) > 0 {
		s += ", stderr " + quoteClip(errs, 240)
	}
	return s
}

// clip shortens b to n bytes for a message, with control characters and invalid UTF-8
// escaped (error messages may quote a hostile input).
func clip(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "..."
	}
	return printable(s)
}

func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < 0x20 && r != '\n' && r != '\t', r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// errSummary is "code N: msg" of a failed call, or how it failed otherwise.
func errSummary(o outcome) string {
	e, bad := parseError(o)
	if bad != "" {
		if o.ok() {
			return "success"
		}
		return bad
	}
	return fmt.Sprintf("code %d (%s)", e.Code, clip([]byte(e.Msg), 120))
}

// quoteClip is b, shortened to n bytes, as a Go string literal.
func quoteClip(b []byte, n int) string {
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}
