package cniexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseError(t *testing.T) {
	for _, c := range []struct {
		name, stdout string
		keys         string
		err          string // "" = valid
	}{
		{"full", `{"cniVersion":"1.1.0","code":7,"msg":"bad","details":"d"}`, "cniVersion,code,details,msg", ""},
		{"skel without cniVersion", `{"code":7,"msg":"bad","details":""}`, "code,details,msg", ""},
		{"empty cniVersion", `{"cniVersion":"","code":7,"msg":"bad"}`, "cniVersion,code,msg", "empty cniVersion"},
		{"no code", `{"cniVersion":"1.1.0","msg":"bad"}`, "cniVersion,msg", "non-zero code"},
		{"code 0", `{"code":0,"msg":"bad"}`, "code,msg", "non-zero code"},
		{"no msg", `{"code":7}`, "code", "without msg"},
		{"code not a number", `{"code":"7","msg":"bad"}`, "code,msg", "not a CNI error object"},
		{"two values", `{"code":7,"msg":"a"}{"code":7,"msg":"b"}`, "", "more than one JSON value"},
		{"not JSON", `IP: 10.0.0.2`, "", "not a JSON object"},
		{"empty", ``, "", "not a JSON object"},
		{"array", `[{"code":7,"msg":"a"}]`, "", "not a JSON object"},
	} {
		e, keys, err := ParseError(c.stdout)
		if got := strings.Join(keys, ","); got != c.keys {
			t.Errorf("%s: keys %q, want %q", c.name, got, c.keys)
		}
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		case c.err == "" && (e.Code != 7 || e.Msg != "bad"):
			t.Errorf("%s: parsed %+v", c.name, e)
		}
	}
}

func TestResult(t *testing.T) {
	for _, c := range []struct {
		stdout string
		want   []string
	}{
		{`{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"},{"address":"fd00::2/64"}]}`, []string{"10.0.0.2/24", "fd00::2/64"}},
		{`{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"},"ip6":{"ip":"fd00::2/64"}}`, []string{"10.0.0.2/24", "fd00::2/64"}},
		{`{"cniVersion":"1.1.0"}`, nil},
	} {
		r, err := ParseResult(c.stdout)
		if err != nil || !reflect.DeepEqual(r.Addrs(), c.want) || string(r.Raw) != c.stdout {
			t.Errorf("ParseResult(%s) = %+v, %v; want addresses %v", c.stdout, r, err, c.want)
		}
		if got := (Out{Stdout: c.stdout}).Addrs(t); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Out.Addrs(%s) = %v, want %v", c.stdout, got, c.want)
		}
	}
	if _, err := ParseResult("not json"); err == nil {
		t.Error("ParseResult accepted a non-JSON output")
	}
}

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCNIExec(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := script(t, "env | grep '^CNI_' | sort; cat >&2; exit 3\n")
	o, err := CNIExec(p, Call{Cmd: "ADD", ID: "c", IfName: "eth0", Args: "IP=10.0.0.9", Env: []string{"CNI_X=1"}, Conf: []byte("conf")})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{"CNI_ARGS=IP=10.0.0.9", "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0",
		"CNI_NETNS=" + FakeNetns, "CNI_PATH=" + filepath.Dir(p), "CNI_X=1"}, "\n") + "\n"
	if o.Exit != 3 || o.Stdout != want || o.Stderr != "conf" || o.OK() {
		t.Errorf("got %s, want exit 3, stdout %q, stderr %q", o, want, "conf")
	}
	o, err = CNIExec(p, Call{Cmd: "DEL", Netns: "-", Path: "-"})
	if err != nil || o.Stdout != "CNI_COMMAND=DEL\n" {
		t.Errorf("with nothing but CNI_COMMAND: %s, %v", o, err)
	}
	o, err = CNIExec(p, Call{Cmd: "DEL", Netns: "/x", Path: "/y"})
	if err != nil || o.Stdout != "CNI_COMMAND=DEL\nCNI_NETNS=/x\nCNI_PATH=/y\n" {
		t.Errorf("with CNI_NETNS and CNI_PATH given: %s, %v", o, err)
	}
}

func TestExecTimeout(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	// The script's child holds stdout: the timeout must kill the whole process group, or
	// the output would not close for 10 s.
	p := script(t, "sleep 10; echo late\n")
	t0 := time.Now()
	o, err := Exec(context.Background(), p, Options{Timeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not finish") || !errors.Is(err, context.DeadlineExceeded) || !o.TimedOut {
		t.Errorf("a hanging binary: %s, %v", o, err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("a call with a 200ms timeout took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if o, err := Exec(ctx, p, Options{}); err == nil || !errors.Is(err, context.Canceled) || !o.TimedOut {
		t.Errorf("a hanging binary whose context ended: %s, %v", o, err)
	}
	if _, err := Exec(context.Background(), filepath.Join(t.TempDir(), "none"), Options{}); err == nil {
		t.Error("a missing binary ran")
	}
}

// Arguments, exactly the environment given, and stdin reach the binary.
func TestExecOptions(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := script(t, `echo "$# $1 $2 ${X-unset} ${HOME-unset}"; cat; exit 4`+"\n")
	o, err := Exec(context.Background(), p, Options{Args: []string{"a", "b c"}, Env: []string{"X=1"}, Stdin: []byte("in")})
	if err != nil || o.Exit != 4 || o.Stdout != "2 a b c 1 unset\nin" || o.Signal != 0 || o.TimedOut {
		t.Errorf("got %s, %v", o, err)
	}
}

// Kill (of Options and of a Call): SIGKILL after the delay is an outcome (the signal),
// not an error.
func TestExecKill(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := script(t, "exec sleep 10\n")
	o, err := Exec(context.Background(), p, Options{Kill: true, KillAfter: 50 * time.Millisecond})
	if err != nil || o.Signal != syscall.SIGKILL || o.Exit != -1 || o.TimedOut || o.Took > 5*time.Second {
		t.Errorf("killed after 50ms: %s, signal %v, took %v, %v", o, o.Signal, o.Took, err)
	}
	o, err = CNIExec(p, Call{Cmd: "ADD", Kill: true, KillAfter: 50 * time.Millisecond})
	if err != nil || o.Signal != syscall.SIGKILL || o.Took > 5*time.Second {
		t.Errorf("a Call killed after 50ms: %s, signal %v, took %v, %v", o, o.Signal, o.Took, err)
	}
}

// Cred (and a Call's UID) runs the binary as another uid and gid.
func TestExecCred(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setuid)")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := script(t, "id -u; id -g\n")
	for _, d := range []string{filepath.Dir(p), filepath.Dir(filepath.Dir(p))} { // t.TempDir's two levels
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o, err := Exec(context.Background(), p, Options{Cred: &syscall.Credential{Uid: 65534, Gid: 65534}})
	if err != nil || o.Stdout != "65534\n65534\n" {
		t.Errorf("as uid 65534: %s, %v", o, err)
	}
	o, err = CNIExec(p, Call{Cmd: "ADD", UID: Nobody})
	if err != nil || o.Stdout != "65534\n65534\n" {
		t.Errorf("a Call as nobody: %s, %v", o, err)
	}
}

// Through the middleman: the measured binary's exit status, arguments, environment and
// stdin come through, and its peak RSS is its own, not the harness's.
func TestExecRSS(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	ballast := make([]byte, 64<<20) // the harness's peak: must not show
	for i := range ballast {
		ballast[i] = 1
	}
	m := SelfMiddleman() // this test binary (TestMain)
	p := script(t, `echo "$1 ${X-unset} ${`+MiddlemanEnv+`-unset}"; cat; exit 5`+"\n")
	o, err := Exec(context.Background(), p, Options{Args: []string{"a"}, Env: []string{"X=1"}, Stdin: []byte("in"), RSS: m})
	if err != nil || o.Exit != 5 || o.Stdout != "a 1 unset\nin" {
		t.Fatalf("through the middleman: %s, %v", o, err)
	}
	if o.MaxRSS <= 0 || o.MaxRSS > 32<<10 || o.RSSFloor <= 0 || o.Took <= 0 {
		t.Errorf("peak RSS %d KiB (floor %d KiB), took %v", o.MaxRSS, o.RSSFloor, o.Took)
	}
	o, err = Exec(context.Background(), script(t, "kill -9 $$\n"), Options{RSS: m})
	if err != nil || o.Signal != syscall.SIGKILL || o.Exit != -1 {
		t.Errorf("killed under the middleman: %s, signal %v, %v", o, o.Signal, err)
	}
	if _, err := Exec(context.Background(), p, Options{RSS: &Middleman{Path: "/bin/true"}}); err == nil {
		t.Error("a middleman that reports nothing: no error")
	}
	_ = ballast[len(ballast)-1]
}

func TestMain(m *testing.M) {
	ServeMiddleman()
	os.Exit(m.Run())
}
