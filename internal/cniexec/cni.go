package cniexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CNIError is the spec's error object.
type CNIError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// Error parses stdout as a CNI error; ok is false when the call did not fail with one
// (a non-zero exit with anything else on stdout is never ok).
func (o Out) Error() (CNIError, bool) {
	var e CNIError
	if o.Exit == 0 || json.Unmarshal([]byte(o.Stdout), &e) != nil || e.Code == 0 || e.CNIVersion == "" {
		return e, false
	}
	return e, true
}

// ParseError checks that stdout is exactly one JSON object, the spec's error object with
// a non-zero code and a msg. cniVersion, which skel (and so host-local) leaves out, is
// checked only where present. It returns the object (as far as it decoded, also with an
// error) and its keys, sorted, for callers that want an exact set.
func ParseError(stdout string) (e CNIError, keys []string, err error) {
	dec := json.NewDecoder(strings.NewReader(stdout))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return e, nil, fmt.Errorf("stdout of a failed call is not a JSON object (%v)", err)
	}
	if dec.More() {
		return e, nil, errors.New("stdout of a failed call holds more than one JSON value")
	}
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		return e, keys, fmt.Errorf("stdout of a failed call is not a CNI error object (%v)", err)
	}
	if _, has := raw["cniVersion"]; has && e.CNIVersion == "" {
		return e, keys, errors.New("CNI error with an empty cniVersion")
	}
	if e.Code == 0 {
		return e, keys, errors.New("CNI error without a non-zero code")
	}
	if e.Msg == "" {
		return e, keys, errors.New("CNI error without msg")
	}
	return e, keys, nil
}

// Call is one CNI invocation.
type Call struct {
	Cmd    string   // CNI_COMMAND
	ID     string   // CNI_CONTAINERID ("" leaves it unset)
	IfName string   // CNI_IFNAME ("" leaves it unset)
	Args   string   // CNI_ARGS
	Netns  string   // CNI_NETNS ("" is FakeNetns, "-" leaves it unset)
	Path   string   // CNI_PATH ("" is the plugin's directory, "-" leaves it unset)
	Env    []string // more variables
	Conf   []byte   // stdin
	UID    int      // > 0: run as this uid and gid (the caller must be root), e.g. Nobody
	// Kill sends SIGKILL KillAfter after the start, as Options.Kill does (a crash at that
	// instant).
	Kill      bool
	KillAfter time.Duration
}

// Nobody is the uid and gid of the unprivileged user nobody, as a runtime that drops its
// privileges runs a plugin.
const Nobody = 65534

// FakeNetns is the CNI_NETNS of a Call that names none: a path that does not exist. An
// IPAM plugin only passes it through, and skel accepts a path it cannot open (it only
// refuses the plugin's own namespace).
const FakeNetns = "/var/run/netns/local-ipam-exec-test"

// CNIExec is CNI without a testing.TB, safe to call from any goroutine: it runs the
// plugin at path as a runtime does, with only the CNI variables of c (and PATH).
func CNIExec(path string, c Call) (Out, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Cmd}
	switch c.Netns {
	case "-":
	case "":
		env = append(env, "CNI_NETNS="+FakeNetns)
	default:
		env = append(env, "CNI_NETNS="+c.Netns)
	}
	switch c.Path {
	case "-":
	case "":
		env = append(env, "CNI_PATH="+filepath.Dir(path))
	default:
		env = append(env, "CNI_PATH="+c.Path)
	}
	if c.ID != "" {
		env = append(env, "CNI_CONTAINERID="+c.ID)
	}
	if c.IfName != "" {
		env = append(env, "CNI_IFNAME="+c.IfName)
	}
	if c.Args != "" {
		env = append(env, "CNI_ARGS="+c.Args)
	}
	opts := Options{Env: append(env, c.Env...), Stdin: c.Conf, Kill: c.Kill, KillAfter: c.KillAfter}
	if c.UID > 0 {
		opts.Cred = &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.UID)}
	}
	return Exec(context.Background(), path, opts)
}

// CNI executes the plugin at path as a runtime does (CNI_PATH: the plugin's directory);
// it fails the test when the plugin cannot be run or does not finish.
func CNI(t testing.TB, path string, c Call) Out {
	t.Helper()
	o, err := CNIExec(path, c)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// IPConfig is one address of a result.
type IPConfig struct {
	Address string `json:"address"`
	Gateway string `json:"gateway"`
}

// Result is the part of an ADD result the tests look at.
type Result struct {
	Raw        json.RawMessage `json:"-"` // the whole result, as printed
	CNIVersion string          `json:"cniVersion"`
	IPs        []IPConfig      `json:"ips"`
	IP4        *LegacyIP       `json:"ip4"` // results before 0.3.0
	IP6        *LegacyIP       `json:"ip6"`
}

// LegacyIP is the ip4 or ip6 object of a result before 0.3.0.
type LegacyIP struct {
	IP      string `json:"ip"`
	Gateway string `json:"gateway"`
}

// ParseResult parses stdout as an ADD result of any version.
func ParseResult(stdout string) (Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		return r, fmt.Errorf("result is not JSON: %v: %q", err, stdout)
	}
	r.Raw = json.RawMessage(stdout)
	return r, nil
}

// Addrs lists the result's addresses (CIDR notation), those of ip4 and ip6 last.
func (r Result) Addrs() []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address)
	}
	if r.IP4 != nil {
		out = append(out, r.IP4.IP)
	}
	if r.IP6 != nil {
		out = append(out, r.IP6.IP)
	}
	return out
}

// Result parses an ADD's result; it fails the test unless the call succeeded with one.
func (o Out) Result(t testing.TB) Result {
	t.Helper()
	r, err := ParseResult(o.Stdout)
	if o.Exit != 0 || err != nil {
		t.Fatalf("not a result: %s", o)
	}
	return r
}

// Addrs parses an ADD's result and returns its addresses (CIDR notation).
func (o Out) Addrs(t testing.TB) []string {
	t.Helper()
	return o.Result(t).Addrs()
}
