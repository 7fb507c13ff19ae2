package main

// Invoking a plugin the way a container runtime does (libcni's invoke package): exec the
// binary (internal/cniexec) with the CNI_* environment and the network configuration on
// stdin; and checking what came back.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

const benchNetns = "/var/run/netns/bench"

// tool is one slot of the comparison: "local-ipam" or "host-local", and the binary run in it.
type tool struct {
	slot    string
	bin     string // absolute path
	typ     string // the binary's name, used as the config's ipam "type"
	baseEnv []string
	timeout time.Duration
}

func newTool(slot, bin string, timeout time.Duration) (*tool, error) {
	abs, err := cniexec.AbsExecutable(slot, bin)
	if err != nil {
		return nil, err
	}
	return &tool{slot: slot, bin: abs, typ: filepath.Base(abs), baseEnv: cniexec.PluginEnv(), timeout: timeout}, nil
}

// req is one plugin call.
type req struct {
	cmd   string // ADD, DEL, CHECK, VERSION
	id    string // container ID (empty for VERSION)
	stdin []byte
}

// outcome is what a call did.
type outcome struct {
	dur    time.Duration // exec to exit, wall clock
	code   int           // exit status; -1 when killed by a signal
	stdout []byte
	stderr []byte
	maxrss int64 // KiB, from rusage (with the middleman: the plugin's own)
}

// env is the environment libcni gives a plugin: the runtime's own, then CNI_COMMAND,
// CNI_CONTAINERID, CNI_NETNS, CNI_ARGS, CNI_IFNAME, CNI_PATH (all empty but the command and
// the path for VERSION, as libcni's GetVersionInfo does).
func (t *tool) env(r req) []string {
	netns, ifname := benchNetns, benchIfname
	if r.cmd == "VERSION" {
		netns, ifname = "", ""
	}
	return append(append([]string(nil), t.baseEnv...),
		"CNI_COMMAND="+r.cmd,
		"CNI_CONTAINERID="+r.id,
		"CNI_NETNS="+netns,
		"CNI_ARGS=",
		"CNI_IFNAME="+ifname,
		"CNI_PATH="+filepath.Dir(t.bin),
	)
}

// run execs the plugin once and times it. A non-zero exit is an outcome, not an error; an
// error means the process could not be run or was killed by the timeout.
func (t *tool) run(ctx context.Context, r req) (outcome, error) {
	o, err := cniexec.Exec(ctx, t.bin, cniexec.Options{Env: t.env(r), Stdin: r.stdin, Timeout: t.timeout})
	return outcomeOf(o), err
}

// runRSS runs the plugin through the rss middleman (see package internal/cniexec) and
// returns its outcome with a clean maxrss, and the middleman's own peak RSS.
func (t *tool) runRSS(ctx context.Context, helper *cniexec.Middleman, r req) (outcome, int64, error) {
	o, err := cniexec.Exec(ctx, t.bin, cniexec.Options{Env: t.env(r), Stdin: r.stdin, Timeout: t.timeout, RSS: helper})
	if err != nil {
		return outcomeOf(o), 0, fmt.Errorf("%s: %w", t.slot, err)
	}
	return outcomeOf(o), o.RSSFloor, nil
}

func outcomeOf(o cniexec.Out) outcome {
	return outcome{dur: o.Took, code: o.Exit, stdout: []byte(o.Stdout), stderr: []byte(o.Stderr), maxrss: o.MaxRSS}
}

// netConf is the network configuration a runtime passes: a bridge network whose ipam section
// names the plugin actually run. prevResult is added for CHECK.
func netConf(net, ipamType, subnet, dataDir string, prevResult json.RawMessage) []byte {
	type ipam struct {
		Type    string `json:"type"`
		Subnet  string `json:"subnet"`
		DataDir string `json:"dataDir"`
	}
	type conf struct {
		CNIVersion string          `json:"cniVersion"`
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		IPAM       ipam            `json:"ipam"`
		PrevResult json.RawMessage `json:"prevResult,omitempty"`
	}
	b, err := json.Marshal(conf{"1.0.0", net, "bridge", ipam{ipamType, subnet, dataDir}, prevResult})
	if err != nil {
		panic(err) // only fixed types and strings
	}
	return b
}

var versionStdin = []byte(`{"cniVersion":"1.0.0"}`)

// callError describes a call that did not do what it should.
func callError(t *tool, r req, o outcome, format string, args ...any) error {
	return fmt.Errorf("%s %s %s: %s (exit %d, stdout %q, stderr %q)",
		t.slot, r.cmd, shortID(r.id), fmt.Sprintf(format, args...), o.code, clip(o.stdout), clip(o.stderr))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

// expectVersion: exit 0 and a version result that supports 1.0.0.
func expectVersion(t *tool, r req, o outcome) error {
	if o.code != 0 {
		return callError(t, r, o, "VERSION failed")
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(o.stdout, &v); err != nil {
		return callError(t, r, o, "VERSION output is not JSON: %v", err)
	}
	for _, s := range v.SupportedVersions {
		if s == "1.0.0" {
			return nil
		}
	}
	return callError(t, r, o, "VERSION does not list 1.0.0")
}

// expectSilentOK: exit 0 and nothing on stdout (DEL, CHECK).
func expectSilentOK(t *tool, r req, o outcome) error {
	if o.code != 0 {
		return callError(t, r, o, "expected success")
	}
	if len(bytes.TrimSpace(o.stdout)) != 0 {
		return callError(t, r, o, "expected no output")
	}
	return nil
}

// expectAdd: exit 0, a 1.0.0 result with exactly one address, want in rng's subnet with its
// prefix length, and the gateway. want == 0 accepts any address of the range (the parallel
// scenario). Returns the address.
func expectAdd(t *tool, r req, o outcome, rng v4range, want uint32) (uint32, error) {
	if o.code != 0 {
		return 0, callError(t, r, o, "ADD failed")
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(o.stdout, &res); err != nil {
		return 0, callError(t, r, o, "ADD output is not JSON: %v", err)
	}
	if res.CNIVersion != "1.0.0" {
		return 0, callError(t, r, o, "result cniVersion %q, want 1.0.0", res.CNIVersion)
	}
	if len(res.IPs) != 1 {
		return 0, callError(t, r, o, "%d addresses in the result, want 1", len(res.IPs))
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil || !p.Addr().Is4() || p.Bits() != rng.subnet.Bits() {
		return 0, callError(t, r, o, "address %q is not an IPv4 address/%d", res.IPs[0].Address, rng.subnet.Bits())
	}
	got := u32(p.Addr())
	if !rng.contains(got) || got == rng.gw {
		return 0, callError(t, r, o, "address %s outside the range or the gateway", p.Addr())
	}
	if want != 0 && got != want {
		return 0, callError(t, r, o, "got %s, host-local's round-robin order gives %s", p.Addr(), addr4(want))
	}
	if gw, err := netip.ParseAddr(res.IPs[0].Gateway); err != nil || u32(gw) != rng.gw {
		return 0, callError(t, r, o, "gateway %q, want %s", res.IPs[0].Gateway, addr4(rng.gw))
	}
	return got, nil
}

// expectFailure: non-zero exit and a CNI error object (non-zero code, a message) on stdout.
func expectFailure(t *tool, r req, o outcome) (cniexec.CNIError, error) {
	var e cniexec.CNIError
	if o.code == 0 {
		return e, callError(t, r, o, "expected failure, got success")
	}
	if err := json.Unmarshal(o.stdout, &e); err != nil {
		return e, callError(t, r, o, "error output is not JSON: %v", err)
	}
	if e.Code == 0 || e.Msg == "" {
		return e, callError(t, r, o, "error object without code or msg")
	}
	return e, nil
}
