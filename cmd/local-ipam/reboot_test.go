package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// TestFreeOnReboot simulates a reboot by changing the boot ID that local-ipam reads from
// LOCAL_IPAM_BOOT_ID_FILE.
func TestFreeOnReboot(t *testing.T) {
	t.Parallel()

	// run: three ADDs in boot A, then two ADDs in boot B; returns the addresses given and
	// the records after each step.
	type step struct {
		got     string
		records []string
	}
	run := func(t *testing.T, n *netw) []step {
		bootFile := filepath.Join(t.TempDir(), "boot_id")
		setBoot := func(id string) {
			if err := os.WriteFile(bootFile, []byte(id+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		env := "LOCAL_IPAM_BOOT_ID_FILE=" + bootFile
		var steps []step
		add := func(id string) {
			got := strings.Join(n.add(t, id, "eth0", env).Addrs(), " ")
			var recs []string
			for _, e := range listJSON(t, "--data-dir", n.dataDir) {
				recs = append(recs, e.ContainerID+"="+e.Address)
			}
			steps = append(steps, step{got, recs})
		}
		setBoot("aaaaaaaa-0000-4000-8000-000000000001")
		add("a1")
		add("a2")
		add("a3")
		setBoot("bbbbbbbb-0000-4000-8000-000000000002")
		add("b1")
		add("b2")
		return steps
	}

	t.Run("freeOnReboot: the first call after a reboot frees every earlier record, once", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "rb", map[string]any{"subnet": "10.40.0.0/24", "freeOnReboot": true})
		s := run(t, n)
		if got := s[2].records; strings.Join(got, " ") != "a1=10.40.0.2 a2=10.40.0.3 a3=10.40.0.4" {
			t.Fatalf("records in boot A: %v", got)
		}
		// b1: a1..a3 are freed; the cursor (.4) is kept, so b1 gets .5, not .2.
		if s[3].got != "10.40.0.5/24" {
			t.Errorf("first ADD after the reboot got %s, want 10.40.0.5/24 (the cursor continues)", s[3].got)
		}
		if got := s[3].records; strings.Join(got, " ") != "b1=10.40.0.5" {
			t.Errorf("records after the first call of boot B: %v, want only b1=10.40.0.5", got)
		}
		for _, a := range []string{"10.40.0.2", "10.40.0.3", "10.40.0.4"} {
			if pathExists(filepath.Join(n.dir(), a)) {
				t.Errorf("record %s of boot A still exists after the reboot", a)
			}
		}
		if got := mustRead(t, filepath.Join(n.dir(), "last_reserved_ip.0")); got != "10.40.0.6" {
			t.Errorf("last_reserved_ip.0 = %q, want 10.40.0.6", got)
		}
		// b2, still in boot B: nothing more is freed.
		if s[4].got != "10.40.0.6/24" || strings.Join(s[4].records, " ") != "b1=10.40.0.5 b2=10.40.0.6" {
			t.Errorf("second ADD of boot B: got %s, records %v; want 10.40.0.6/24 and b1, b2 kept", s[4].got, s[4].records)
		}
	})

	t.Run("freeOnReboot: a DEL, CHECK or STATUS after the reboot frees too", func(t *testing.T) {
		t.Parallel()
		for _, verb := range []string{"DEL", "CHECK", "STATUS", "GC"} {
			n := newNet(t, "1.1.0", "rbverb", map[string]any{"subnet": "10.41.0.0/24", "freeOnReboot": true})
			bootFile := filepath.Join(t.TempDir(), "boot_id")
			env := "LOCAL_IPAM_BOOT_ID_FILE=" + bootFile
			writeIn(t, filepath.Dir(bootFile), "boot_id", "boot-a\n")
			r := n.add(t, "a", "eth0", env)
			n.add(t, "b", "eth0", env)
			writeIn(t, filepath.Dir(bootFile), "boot_id", "boot-b\n")
			extra := map[string]any{}
			switch verb {
			case "CHECK":
				extra["prevResult"] = r.Raw
			case "GC":
				extra["cni.dev/valid-attachments"] = attachments("a/eth0", "b/eth0")
			}
			o := plugin(t, cniexec.Call{Cmd: verb, ID: "zzz", IfName: "eth0", Env: []string{env}, Conf: n.conf(t, extra)})
			if verb == "CHECK" {
				wantError(t, o, 105) // a's address was freed by the reboot
			} else {
				wantOK(t, o, verb+" after the reboot")
			}
			if got := recordFiles(t, n.dir()); len(got) != 0 {
				t.Errorf("%s as the first call after the reboot left records of boot A: %v", verb, got)
			}
		}
	})

	t.Run("freeOnReboot: the operator's commands free nothing, whatever the boot ID", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "rbop", map[string]any{"subnet": "10.42.0.0/24", "freeOnReboot": true})
		dir := t.TempDir()
		env := []string{"LOCAL_IPAM_BOOT_ID_FILE=" + filepath.Join(dir, "boot_id")}
		writeIn(t, dir, "boot_id", "boot-a\n")
		n.add(t, "c1", "eth0", env...)
		n.add(t, "c2", "eth0", env...)
		// Another boot ID: this machine rebooted (no CNI call yet), or the commands run on
		// another machine sharing the data dir.
		writeIn(t, dir, "boot_id", "boot-b\n")
		conf := n.confFile(t)
		bin := cniexec.Bin(t, "local-ipam")
		records := func() string {
			var recs []string
			for _, e := range listJSON(t, "--data-dir", n.dataDir) {
				recs = append(recs, e.ContainerID+"="+e.Address)
			}
			return strings.Join(recs, " ")
		}
		for _, args := range [][]string{
			{"list", "--conf", conf}, {"list", "--data-dir", n.dataDir}, {"list", "--conf", conf, "--json"},
			{"usage", "--conf", conf}, {"usage", "--conf", conf, "--json"},
			{"release", "--conf", conf, "--container", "nobody"},
			{"release", "--network", n.name, "--data-dir", n.dataDir, "--container", "nobody", "--ifname", "eth0"},
		} {
			// A release of nothing fails, saying so.
			o := cniexec.Run(t, bin, env, nil, args...)
			if want := args[0] != "release"; o.OK() != want || (!want && !strings.Contains(o.Stderr, "nothing reserved for container nobody")) {
				t.Fatalf("%v: %s", args, o)
			}
			if got := records(); got != "c1=10.42.0.2 c2=10.42.0.3" {
				t.Fatalf("after %v: records %s, want c1 and c2", args, got)
			}
		}
		// release frees exactly what it names.
		o := cniexec.Run(t, bin, env, nil, "release", "--conf", conf, "--container", "c2")
		if o.Exit != 0 || o.Stdout != "released 10.42.0.3 (container c2, ifname eth0)\n" {
			t.Fatalf("release c2: %s", o)
		}
		if got := records(); got != "c1=10.42.0.2" {
			t.Fatalf("after release c2: records %s, want c1", got)
		}
		// The boot recorded is still boot A: a call of boot A frees nothing.
		writeIn(t, dir, "boot_id", "boot-a\n")
		n.add(t, "c3", "eth0", env...)
		if got := records(); got != "c1=10.42.0.2 c3=10.42.0.4" {
			t.Errorf("after an ADD of boot A: records %s, want c1 and c3", got)
		}
	})

	t.Run("without freeOnReboot a reboot frees nothing", func(t *testing.T) {
		t.Parallel()
		n := newNet(t, "1.1.0", "rbno", map[string]any{"subnet": "10.40.0.0/24"})
		s := run(t, n)
		if s[3].got != "10.40.0.5/24" || s[4].got != "10.40.0.6/24" {
			t.Errorf("ADDs after the reboot got %s, %s; want 10.40.0.5/24, 10.40.0.6/24", s[3].got, s[4].got)
		}
		if got := strings.Join(s[4].records, " "); got != "a1=10.40.0.2 a2=10.40.0.3 a3=10.40.0.4 b1=10.40.0.5 b2=10.40.0.6" {
			t.Errorf("records after the reboot: %s, want all five", got)
		}
	})
}
