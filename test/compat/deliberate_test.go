package compat

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestDeliberateDifferences documents where local-ipam intentionally departs from host-local.
// These assert local-ipam's behaviour; against host-local they are skipped.
//
// Checked and found NOT to be a difference: a gateway outside its subnet is rejected by
// host-local v1.10.0 too ("gateway ... not in network"), so it is in TestDifferential
// (invalid-gateway-outside-subnet, invalid-gateway-other-family).
func TestDeliberateDifferences(t *testing.T) {
	b := needBins(t)
	if b.pluginIsHostLocal {
		t.Skip("documents a deliberate difference from host-local")
	}

	type env struct {
		dataDir, netDir string
	}
	newEnv := func(t *testing.T) env {
		d := t.TempDir()
		return env{d, filepath.Join(d, netName)}
	}
	call := func(t *testing.T, e env, o op, tmpl string) cniexec.Out {
		t.Helper()
		r := &seqRunner{t: t, tmpl: tmpl}
		s := newSide("plugin", e.dataDir, always(b.plugin))
		return cniexec.CNI(t, b.plugin, r.invocation(s, o))
	}
	wantAddrs := func(t *testing.T, o cniexec.Out, want ...string) {
		t.Helper()
		if !o.OK() {
			t.Fatalf("ADD failed: %s", o)
		}
		got, err := addresses(o.Stdout)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ADD gave %v, want %v", got, want)
		}
	}

	// CONVENTIONS.md: when a runtime passes an equivalent key in args (args.cni.ips) and in
	// CNI_ARGS (IP=), a plugin that understands args must ignore the CNI_ARGS field.
	// host-local merges both into one request list; with two different addresses in one
	// range set it reserves one of them (map order) and then fails the ADD.
	t.Run("args.cni.ips-takes-precedence-over-CNI_ARGS-IP", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		conf := cfg("1.0.0", `{"subnet": "10.120.0.0/24"}`)
		o := call(t, e, addOK("pr-1").reqArgs("10.120.0.50").cniArgs("IP=10.120.0.60"), conf)
		wantAddrs(t, o, "10.120.0.50/24")
		recs := records(t, e.netDir)
		if want := map[string]string{"10.120.0.50": "pr-1\r\neth0"}; !reflect.DeepEqual(recs, want) {
			t.Fatalf("records %q, want %q", recs, want)
		}
		// The CNI_ARGS address is still free for someone else.
		wantAddrs(t, call(t, e, addOK("pr-2").cniArgs("IP=10.120.0.60"), conf), "10.120.0.60/24")
		// CNI_ARGS alone still works, and with IgnoreUnknown.
		wantAddrs(t, call(t, e, addOK("pr-3").cniArgs("IgnoreUnknown=1;IP=10.120.0.61"), conf), "10.120.0.61/24")
		// args.cni.ips in a dual-stack config, CNI_ARGS ignored even if it names the other family.
		dual := cfg("1.0.0", `{"ranges": [[{"subnet": "10.121.0.0/24"}], [{"subnet": "fd00:121::/120"}]]}`)
		wantAddrs(t, call(t, e, addOK("pr-4").reqArgs("10.121.0.9").cniArgs("IP=10.121.0.10"), dual),
			"10.121.0.9/24", "fd00:121::2/120")
	})

	// host-local creates a record with O_EXCL and then writes it; a crash in between leaves an
	// empty file that host-local skips forever (plugins #498). local-ipam treats an empty
	// record file as a free address.
	t.Run("empty-record-file-is-free", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		conf := cfg("1.0.0", `{"subnet": "10.122.0.0/24"}`)
		writeFile(t, e.netDir, "10.122.0.2", "")
		wantAddrs(t, call(t, e, addOK("em-1"), conf), "10.122.0.2/24") // host-local: 10.122.0.3
		content, err := os.ReadFile(filepath.Join(e.netDir, "10.122.0.2"))
		if err != nil || string(content) != "em-1\r\neth0" {
			t.Fatalf("record 10.122.0.2 = %q (%v), want %q", content, err, "em-1\r\neth0")
		}
		// An empty file further along the walk is taken in turn too.
		writeFile(t, e.netDir, "10.122.0.3", "")
		wantAddrs(t, call(t, e, addOK("em-2"), conf), "10.122.0.3/24")
		// ... and as a requested address (host-local: "not available").
		writeFile(t, e.netDir, "10.122.0.77", "")
		wantAddrs(t, call(t, e, addOK("em-3").cniArgs("IP=10.122.0.77"), conf), "10.122.0.77/24")
	})

	// FIELD-NOTES §2: STATUS exits 0 when an ADD could be served and fails with code 50 when
	// every range set is exhausted. host-local v1.10.0 has no STATUS and always exits 0.
	t.Run("status-reports-exhaustion", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		conf := cfg("1.1.0", `{"subnet": "10.123.0.0/30"}`) // one usable address
		st := op{Cmd: "STATUS"}
		if o := call(t, e, st, conf); !o.OK() {
			t.Fatalf("STATUS on an empty network: %s", o)
		}
		wantAddrs(t, call(t, e, addOK("st-1"), conf), "10.123.0.2/30")
		o := call(t, e, st, conf)
		if err := checkCNIError(o); err != nil {
			t.Fatalf("STATUS on a full network: %v", err)
		}
		if c := errorCode(o); c != 50 {
			t.Errorf("STATUS on a full network: code %d, want 50: %s", c, o)
		}
		if o := call(t, e, del("st-1"), conf); !o.OK() {
			t.Fatalf("DEL: %s", o)
		}
		if o := call(t, e, st, conf); !o.OK() {
			t.Fatalf("STATUS after a DEL: %s", o)
		}
	})

	// host-local's rollback of a failed ADD releases every record of (id, ifname), including
	// those of an earlier, successful ADD (here one made with a v6-only config). local-ipam
	// rolls back only what the failed ADD itself reserved.
	t.Run("failed-add-rolls-back-only-its-own-addresses", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		dual := cfg("1.0.0", `{"ranges": [[{"subnet": "10.124.0.0/24"}], [{"subnet": "fd00:124::/120"}]]}`)
		v6only := cfg("1.0.0", `{"ranges": [[{"subnet": "fd00:124::/120"}]]}`)
		wantAddrs(t, call(t, e, addOK("rb-1"), v6only), "fd00:124::2/120")
		o := call(t, e, addFail("rb-1"), dual) // v4 reserved, then the v6 set refuses the duplicate
		if c := errorCode(o); c != 103 {
			t.Fatalf("second ADD: code %d, want 103 (duplicate allocation): %s", c, o)
		}
		recs := records(t, e.netDir)
		if want := map[string]string{"fd00:124::2": "rb-1\r\neth0"}; !reflect.DeepEqual(recs, want) {
			t.Fatalf("records %q, want %q (host-local: none)", recs, want)
		}
		if o := call(t, e, check("rb-1"), v6only); !o.OK() {
			t.Fatalf("CHECK of the first ADD: %s", o)
		}
	})

	// host-local's CHECK passes when any record names the container, whatever the config
	// and prevResult say. local-ipam's compares prevResult with the store (code 105).
	t.Run("check-really-checks", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		conf := cfg("1.0.0", `{"subnet": "10.125.0.0/24"}`)
		wantAddrs(t, call(t, e, addOK("ck-1"), conf), "10.125.0.2/24")
		wantAddrs(t, call(t, e, addOK("ck-2"), conf), "10.125.0.3/24")
		if o := call(t, e, check("ck-1"), conf); !o.OK() {
			t.Fatalf("CHECK with the true prevResult: %s", o)
		}
		tampered := `{"cniVersion":"1.0.0","ips":[{"address":"10.125.0.3/24","gateway":"10.125.0.1"}]}`
		o := call(t, e, check("ck-1").prev(tampered), conf)
		if c := errorCode(o); c != 105 {
			t.Fatalf("CHECK with another container's address in prevResult: code %d, want 105: %s", c, o)
		}
		os.Remove(filepath.Join(e.netDir, "10.125.0.2"))
		if c := errorCode(call(t, e, check("ck-1"), conf)); c != 105 {
			t.Fatalf("CHECK after its record was removed: code %d, want 105", c)
		}
	})
}
