package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestMain lets the test binary act as the rss middleman, as the benchmark binary does.
func TestMain(m *testing.M) {
	cniexec.ServeMiddleman()
	os.Exit(m.Run())
}

// built is the tool for the binary named slot (local-ipam, host-local) in
// LOCAL_IPAM_BIN_DIR as `make test` sets it, or the repository's bin/; the test fails,
// saying how to build it, without it.
func built(t *testing.T, slot string) *tool {
	t.Helper()
	tl, err := newTool(slot, cniexec.Bin(t, slot), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

func TestRunRSS(t *testing.T) {
	hl := built(t, "host-local")
	helper := cniexec.SelfMiddleman()
	r := req{cmd: "VERSION", stdin: versionStdin}
	o, floor, err := hl.runRSS(context.Background(), helper, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectVersion(hl, r, o); err != nil {
		t.Fatal(err)
	}
	if o.maxrss < 1000 || o.maxrss > 100_000 || floor <= 0 {
		t.Fatalf("maxrss %d KiB, floor %d KiB", o.maxrss, floor)
	}
	// A failing call's status comes through.
	r = req{cmd: "ADD", id: "x", stdin: []byte("not json")}
	o, _, err = hl.runRSS(context.Background(), helper, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := expectFailure(hl, r, o); err != nil {
		t.Fatal(err)
	}
}

func TestRunRejectsMissingBinary(t *testing.T) {
	if _, err := newTool("local-ipam", "/nonexistent/local-ipam", 0); err == nil {
		t.Fatal("missing binary accepted")
	}
}
