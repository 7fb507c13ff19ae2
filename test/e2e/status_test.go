package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// statusNet writes a cniVersion 1.1.0 bridge network whose ipam type is ipamType.
func statusNet(t *testing.T, e *env, tag, ipamType string) *cniNet {
	t.Helper()
	return newNet(t, e, uniqueName(tag), map[string]any{
		"cniVersion": "1.1.0",
		"plugins": []map[string]any{{
			"type":      "bridge",
			"bridge":    linkName(t, tag), // never created: STATUS touches no link
			"isGateway": true,
			"ipam": map[string]any{
				"type":    ipamType,
				"subnet":  fmt.Sprintf("10.253.%d.0/24", testOctet()),
				"dataDir": t.TempDir(),
			},
		}},
	})
}

// TestStatus runs `cnitool status` (CNI 1.1 STATUS) through the bridge plugin, which forwards
// STATUS to its IPAM plugin. A fresh, empty pool must report ready (exit 0). host-local v1.10
// has no STATUS handler, so skel accepts it and it passes trivially; the lead will extend this
// with the unavailable cases (exhausted pool, unusable store: error code 50).
func TestStatus(t *testing.T) {
	e := setup(t)
	n := statusNet(t, e, "st", e.ipam)
	// cnitool wants a netns argument for every verb; STATUS does not use it.
	if out, err := n.cnitool("status", filepath.Join(netnsDir, uniqueName("st", "unused"))); err != nil {
		t.Fatalf("STATUS with %s: %v\n%s", e.ipam, err, out)
	}

	// The bridge really asks its IPAM: an IPAM type that does not exist makes STATUS fail.
	bad := statusNet(t, e, "stx", "no-such-ipam-plugin")
	if _, err := bad.cnitool("status", filepath.Join(netnsDir, uniqueName("stx", "unused"))); err == nil {
		t.Fatal("STATUS passed with a missing IPAM plugin: bridge did not forward STATUS")
	}
}

// TestVersion runs the IPAM plugin's VERSION verb (cnitool has no version command) and checks it
// supports the versions the other tests use, up to 1.1.0.
func TestVersion(t *testing.T) {
	e := setup(t)
	envv := []string{"CNI_COMMAND=VERSION", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := runStdin(envv, `{"cniVersion":"1.1.0"}`, filepath.Join(e.binDir, e.ipam))
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	var vi struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(out), &vi); err != nil {
		t.Fatalf("VERSION output is not JSON: %v\n%s", err, out)
	}
	t.Logf("%s VERSION: %s", e.ipam, strings.TrimSpace(out))
	if vi.CNIVersion == "" {
		t.Errorf("VERSION output lacks cniVersion: %s", out)
	}
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(vi.SupportedVersions, v) {
			t.Errorf("supportedVersions %v lacks %s", vi.SupportedVersions, v)
		}
	}
}
