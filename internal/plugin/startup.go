package plugin

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The start-up shortcuts of a CNI call. A call is a process that lives for one call, so
// what a long-lived program pays once (growing the stack, the first reflection over a
// type, registering files with the poller) is paid by every call; docs/PERFORMANCE.md
// ("What the design choices cost and save") has what each saves. The other two of the
// same kind live with what they replace: the hand-written result and error encoder
// (result.go, printError) and the map-based config decoder (pkg/config/decode.go).

// growStack grows the main goroutine's stack to its working size in one step, while the
// stack is still shallow. Otherwise encoding/json's reflection (skel decodes the config
// into its structs) grows it several times, deep in the call chain, where each copy walks
// every frame.
//
//go:noinline
func growStack() {
	var pad [96 << 10]byte
	stackSink(pad[:])
}

//go:noinline
func stackSink(b []byte) { _ = b[len(b)-1] }

// captureStdin reads the config before skel does and hands skel an identical stdin, so
// that an error found by skel itself can still be answered in the config's cniVersion.
// It returns the config, and the process's own stdin, which the caller keeps reachable
// until the call is done: once unreferenced, its *os.File's finalizer would close
// descriptor 0 at some garbage collection, and the next file opened (the hand-off's
// memfd, say) would become descriptor 0 by surprise.
func captureStdin() (config []byte, realStdin *os.File) {
	if os.Getenv("CNI_COMMAND") == "" {
		return nil, nil
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, nil // skel reads the same stdin and reports the failure
	}
	// A plain blocking pipe (os.Pipe would register both ends with the poller: more
	// system calls on every CNI call). Up to the pipe's 64 KiB it is written right here.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return data, nil
	}
	r, w := os.NewFile(uintptr(p[0]), "stdin"), os.NewFile(uintptr(p[1]), "stdin-w")
	write := func() {
		_, _ = w.Write(data)
		w.Close()
	}
	if len(data) < 60<<10 {
		write()
	} else {
		go write()
	}
	realStdin = os.Stdin
	os.Stdin = r
	return data, realStdin
}
