package etcd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// A network config that names no prefix nor timeout, and a direct caller that leaves
// them empty, get the same ones (pkg/config's, the one definition): the same keys.
func TestDefaultsAreTheConfigs(t *testing.T) {
	network := newNetwork()
	eps, _ := json.Marshal(shared)
	c, err := config.Load([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"ipam":{"type":"local-ipam",
		"subnet":"10.9.0.0/24","store":{"type":"etcd","endpoints":%s,"node":"n"}}}`, network, eps)), "")
	if err != nil {
		t.Fatal(err)
	}
	direct := withDefaults(Config{Endpoints: shared, Node: "n"})
	if direct.Prefix != c.Store.Prefix || direct.Timeout != c.Store.Timeout {
		t.Errorf("direct caller's defaults: prefix %q, timeout %v; the config's: %q, %v", direct.Prefix, direct.Timeout, c.Store.Prefix, c.Store.Timeout)
	}
	s := mustOpen(t, Config{Endpoints: shared, Node: "n"}, network)
	if ok, err := s.Reserve(netip.MustParseAddr("10.9.0.5"), store.Owner{ID: "c", IfName: "eth0"}); !ok || err != nil {
		t.Fatalf("Reserve: %v, %v", ok, err)
	}
	if n := countKeys(t, etcdtest.Client(t, shared), c.Store.Prefix+"/"+network+"/"); n == 0 {
		t.Errorf("a direct caller's reservation is not under the config's prefix %s", c.Store.Prefix)
	}
}
