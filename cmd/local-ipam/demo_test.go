package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestDemoColour: `make demo` (scripts/demo.sh) prints escape codes only to a terminal,
// and not even there when NO_COLOR is set.
func TestDemoColour(t *testing.T) {
	t.Parallel()
	bin := cniexec.Bin(t, "local-ipam")
	run := func(tty bool, env ...string) string {
		t.Helper()
		cmd := exec.Command("bash", "../../scripts/demo.sh", bin)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		done := make(chan struct{})
		if tty {
			master, slave := openPTY(t)
			cmd.Stdout, cmd.Stderr = slave, slave
			go func() {
				defer close(done)
				_, _ = io.Copy(&out, master) // ends with EIO once the terminal's last user exits
			}()
			defer master.Close()
			defer slave.Close()
			err := cmd.Start()
			slave.Close()
			if err == nil {
				err = cmd.Wait()
			}
			if err != nil {
				t.Fatalf("demo on a terminal %v: %v\n%s", env, err, out.String())
			}
			<-done
			return out.String()
		}
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("demo piped %v: %v\n%s", env, err, out.String())
		}
		return out.String()
	}
	for _, c := range []struct {
		tty    bool
		env    []string
		colour bool
	}{
		{false, nil, false},
		{false, []string{"NO_COLOR=1"}, false},
		{true, nil, true},
		{true, []string{"NO_COLOR=1"}, false},
	} {
		out := run(c.tty, c.env...)
		if !strings.Contains(out, "$ local-ipam usage --conf demo.conf") {
			t.Errorf("demo (terminal %v, %v) does not show its commands:\n%s", c.tty, c.env, out)
		}
		if got := strings.Contains(out, "\033["); got != c.colour {
			t.Errorf("demo (terminal %v, %v): escape codes %v, want %v:\n%q", c.tty, c.env, got, c.colour, out)
		}
	}
}

// openPTY opens a pseudo-terminal: the master end to read, the terminal to write to.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		m.Close()
		t.Fatalf("pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("pseudo-terminal: %v", err)
	}
	return m, s
}
