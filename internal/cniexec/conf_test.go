package cniexec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// NetConf: the bridge network's keys, the ipam section, and extra keys replacing them;
// the maps given are left as they were.
func TestNetConf(t *testing.T) {
	ipam := map[string]any{"type": "local-ipam", "subnet": "10.0.0.0/24"}
	extra := map[string]any{"prevResult": map[string]any{"cniVersion": "1.1.0"}, "name": "other"}
	got := string(NetConf("1.1.0", "net", Merge(ipam, map[string]any{"subnet": "10.1.0.0/24"}), extra))
	want := `{"cniVersion":"1.1.0","ipam":{"subnet":"10.1.0.0/24","type":"local-ipam"},"name":"other","prevResult":{"cniVersion":"1.1.0"},"type":"bridge"}`
	if got != want {
		t.Errorf("NetConf = %s\nwant       %s", got, want)
	}
	if ipam["subnet"] != "10.0.0.0/24" || len(ipam) != 2 || len(extra) != 2 {
		t.Errorf("the maps given were changed: %v %v", ipam, extra)
	}
	if got := string(Conf(map[string]any{"a": 1})); got != `{"a":1}` {
		t.Errorf("Conf without extra keys = %s", got)
	}
}

func TestAbsExecutable(t *testing.T) {
	dir := t.TempDir()
	exe, plain := filepath.Join(dir, "exe"), filepath.Join(dir, "plain")
	for p, mode := range map[string]os.FileMode{exe: 0o755, plain: 0o644} {
		if err := os.WriteFile(p, nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	if got, err := AbsExecutable("x", "exe"); err != nil || got != exe {
		t.Errorf("AbsExecutable(exe) = %q, %v; want %q", got, err, exe)
	}
	for _, p := range []string{"plain", "missing", "."} {
		if _, err := AbsExecutable("the role", p); err == nil || !strings.HasPrefix(err.Error(), "the role binary: ") {
			t.Errorf("AbsExecutable(%s): %v, want an error naming the role", p, err)
		}
	}
}

func TestPluginEnv(t *testing.T) {
	t.Setenv("CNI_COMMAND", "ADD")
	t.Setenv(MiddlemanEnv, "1")
	t.Setenv("LOCAL_IPAM_BOOT_ID_FILE", "/x")
	t.Setenv("KEPT", "yes")
	env := PluginEnv()
	if !slices.Contains(env, "KEPT=yes") {
		t.Errorf("KEPT=yes missing from %v", env)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "CNI_") || strings.HasPrefix(kv, MiddlemanEnv) || strings.HasPrefix(kv, "LOCAL_IPAM_BOOT_ID_FILE") {
			t.Errorf("%s reaches the plugin", kv)
		}
	}
}
