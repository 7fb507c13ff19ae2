package cniexec

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// ConfForm is one way an operator hands a config to a command's --conf.
type ConfForm struct {
	Name string
	// Run runs the binary at bin with args followed by --conf and the form's argument,
	// the config conf reaching it as the form says.
	Run func(t testing.TB, bin string, conf []byte, args ...string) Out
}

// ConfForms are the ways --conf takes a config: a file, stdin as - (both spellings), a
// pipe as /dev/stdin, a process substitution (/dev/fd/N) and a named pipe. Every form but
// the file can be read only once.
var ConfForms = []ConfForm{
	{"file", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		p := filepath.Join(t.TempDir(), "net.conf")
		if err := os.WriteFile(p, conf, 0o644); err != nil {
			t.Fatal(err)
		}
		return Run(t, bin, nil, nil, append(args, "--conf", p)...)
	}},
	{"stdin as -", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		return Run(t, bin, nil, conf, append(args, "--conf", "-")...)
	}},
	{"stdin as --conf=-", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		return Run(t, bin, nil, conf, append(args, "--conf=-")...)
	}},
	{"pipe as /dev/stdin", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		return Run(t, bin, nil, conf, append(args, "--conf", "/dev/stdin")...)
	}},
	{"process substitution", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		// bash -c '"$0" "$@" --conf <(printf %s "$CONF")' bin args...
		return Run(t, "bash", []string{"CONF=" + string(conf)}, nil,
			append([]string{"-c", `"$0" "$@" --conf <(printf %s "$CONF")`, bin}, args...)...)
	}},
	{"named pipe", func(t testing.TB, bin string, conf []byte, args ...string) Out {
		t.Helper()
		fifo := filepath.Join(t.TempDir(), "net.conf")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Blocks until the binary opens the pipe for reading (or the unblocking open
			// below does, when it never does).
			if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
				_, _ = f.Write(conf)
				f.Close()
			}
		}()
		o := Run(t, bin, nil, nil, append(args, "--conf", fifo)...)
		if f, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		<-done
		return o
	}},
}
