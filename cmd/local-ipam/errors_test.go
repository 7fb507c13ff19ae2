package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestErrorJSON: bad input is answered with one CNI error object on stdout (cniVersion,
// code, msg, details), exit 1, and no crash.
func TestErrorJSON(t *testing.T) {
	t.Parallel()
	good := func(dataDir string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"errs","ipam":{"type":"local-ipam","subnet":"10.60.0.0/24","dataDir":%q}}`, dataDir)
	}
	cases := []struct {
		name    string
		conf    func(dataDir string) string
		id      string
		ifname  string
		args    string
		cmd     string
		code    uint
		version string // expected cniVersion of the error object
		msg     string // expected in msg
	}{
		{name: "invalid JSON", conf: func(string) string { return `{"cniVersion":"1.0.0", "name": ` }, code: 6, version: "1.1.0"},
		{name: "not JSON at all", conf: func(string) string { return "banana" }, code: 6, version: "1.1.0"},
		{name: "missing ipam", conf: func(string) string { return `{"cniVersion":"1.0.0","name":"errs","type":"bridge"}` }, code: 7, version: "1.0.0", msg: "ipam"},
		{name: "subnet with host bits", conf: func(d string) string {
			return fmt.Sprintf(`{"cniVersion":"0.4.0","name":"errs","ipam":{"type":"local-ipam","subnet":"10.60.0.1/24","dataDir":%q}}`, d)
		}, code: 7, version: "0.4.0", msg: "10.60.0.0"},
		{name: "no ranges at all", conf: func(d string) string {
			return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"errs","ipam":{"type":"local-ipam","dataDir":%q}}`, d)
		}, code: 7, version: "1.0.0"},
		{name: "ipam of the wrong JSON type", conf: func(string) string { return `{"cniVersion":"1.0.0","name":"errs","ipam":[1,2]}` }, code: 7, version: "1.0.0"},
		{name: "unknown CNI_ARGS key", conf: good, args: "FOO=bar", code: 4, version: "1.0.0", msg: "FOO"},
		{name: "malformed CNI_ARGS", conf: good, args: "IP", code: 4, version: "1.0.0"},
		{name: "CNI_ARGS IP that is not an address", conf: good, args: "IP=10.60.0.x", code: 4, version: "1.0.0"},
		{name: "missing CNI_CONTAINERID", conf: good, id: "-", code: 4, version: "1.0.0", msg: "CNI_CONTAINERID"},
		{name: "missing CNI_IFNAME", conf: good, ifname: "-", code: 4, version: "1.0.0", msg: "CNI_IFNAME"},
		{name: "unknown CNI_COMMAND", conf: good, cmd: "FROB", code: 4, version: "1.0.0"},
		{name: "unsupported cniVersion", conf: func(d string) string {
			return fmt.Sprintf(`{"cniVersion":"9.9.9","name":"errs","ipam":{"type":"local-ipam","subnet":"10.60.0.0/24","dataDir":%q}}`, d)
		}, code: 1, version: "9.9.9"},
		{name: "GC with a 1.0.0 config", conf: good, cmd: "GC", code: 1, version: "1.0.0", msg: "GC"},
		{name: "STATUS with a 1.0.0 config", conf: good, cmd: "STATUS", code: 1, version: "1.0.0", msg: "STATUS"},
		{name: "invalid network name", conf: func(d string) string {
			return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"../etc","ipam":{"type":"local-ipam","subnet":"10.60.0.0/24","dataDir":%q}}`, d)
		}, code: 7, version: "1.0.0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			cl := cniexec.Call{Cmd: "ADD", ID: "ctr", IfName: "eth0", Args: c.args, Conf: []byte(c.conf(dataDir))}
			if c.cmd != "" {
				cl.Cmd = c.cmd
			}
			if c.id == "-" {
				cl.ID = ""
			}
			if c.ifname == "-" {
				cl.IfName = ""
			}
			o := plugin(t, cl)
			e := wantError(t, o, c.code)
			if e.CNIVersion != c.version {
				t.Errorf("error cniVersion = %q, want %q: %s", e.CNIVersion, c.version, o)
			}
			if c.msg != "" && !strings.Contains(e.Msg+e.Details, c.msg) {
				t.Errorf("error message does not mention %q: %s", c.msg, o)
			}
			if strings.TrimSpace(o.Stderr) != "" {
				t.Logf("stderr: %s", o.Stderr)
			}
			if got := recordFiles(t, dataDir); len(got) != 0 {
				t.Errorf("a refused ADD wrote into the data dir: %v", got)
			}
		})
	}
}
