package metrics

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/local-ipam/local-ipam/internal/metricstest"
	"github.com/local-ipam/local-ipam/internal/usage"
)

func TestWrite(t *testing.T) {
	var rep usage.Report
	// Counts as local-ipam's JSON has them: numbers, and strings above 2^53.
	err := json.Unmarshal([]byte(`{
		"networks": [{"network": "n", "ready": false, "notReady": "full", "rangeSets": [
			{"set": 0, "ranges": "10.0.0.1-10.0.0.2", "family": "ipv4", "size": 1, "inUse": 1, "excluded": 0, "free": 0},
			{"set": 1, "ranges": "fd00::1-fd00::ffff:ffff:ffff:ffff", "family": "ipv6",
			 "size": "18446744073709551614", "inUse": 1, "excluded": "9007199254740993", "free": "18437736874454810620"}]}],
		"errors": [{"file": "/etc/cni/net.d/x.conf", "error": "broken"}]}`), &rep)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Write(&out, rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range metricstest.Parse(t, out.String()) {
		got[s.Series()] = s.Value
	}
	v6 := `{family="ipv6",network="n",range_set="1",ranges="fd00::1-fd00::ffff:ffff:ffff:ffff"}`
	for series, want := range map[string]float64{
		`local_ipam_network_ready{network="n"}`:                                                           0,
		`local_ipam_range_set_in_use{family="ipv4",network="n",range_set="0",ranges="10.0.0.1-10.0.0.2"}`: 1,
		"local_ipam_range_set_size" + v6:                                                                  math.Exp2(64),        // 2^64-2, nearest float64
		"local_ipam_range_set_excluded" + v6:                                                              math.Exp2(53),        // 2^53+1, nearest float64 (ties to even)
		"local_ipam_range_set_free" + v6:                                                                  18437736874454810620, // rounded the same way
		`local_ipam_network_unreadable{file="/etc/cni/net.d/x.conf",network=""}`:                          1,
		`local_ipam_usage_errors{}`:                                                                       1,
	} {
		if g, ok := got[series]; !ok || g != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", series, g, ok, want, out.String())
		}
	}
	if len(got) != 11 {
		t.Errorf("%d series, want 11:\n%s", len(got), out.String())
	}
}
