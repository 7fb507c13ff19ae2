package config_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/config"
)

func TestPluginConf(t *testing.T) {
	single := `{"cniVersion":"1.0.0","name":"one","type":"bridge","ipam":{"type":"local-ipam","subnet":"10.1.0.0/24"}}`
	got, err := config.PluginConf([]byte(single))
	if err != nil || string(got) != single {
		t.Fatalf("PluginConf(a network config) = %s, %v; want it unchanged", got, err)
	}

	// The first plugin with an ipam section, with the list's name and version (a plugin's
	// own are overridden, as libcni does); its other keys kept.
	list := `{"cniVersion":"1.1.0","name":"mynet","plugins":[
		{"type":"tuning","sysctl":{"a":"1"}},
		{"type":"bridge","name":"other","cniVersion":"0.3.1","bridge":"br0","ipam":{"type":"local-ipam","subnet":"10.2.0.0/24","dataDir":"/d"}},
		{"type":"macvlan","ipam":{"type":"host-local","subnet":"10.3.0.0/24"}}]}`
	got, err = config.PluginConf([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("PluginConf(conflist) = %s: %v", got, err)
	}
	if m["name"] != "mynet" || m["cniVersion"] != "1.1.0" || m["type"] != "bridge" || m["bridge"] != "br0" {
		t.Errorf("PluginConf(conflist) = %s; want the bridge plugin named mynet, version 1.1.0", got)
	}
	c, err := config.Load(got, "")
	if err != nil {
		t.Fatalf("Load(PluginConf(conflist)): %v", err)
	}
	if c.Name != "mynet" || c.CNIVersion != "1.1.0" || c.DataDir != "/d" || c.Pool.Sets[0].String() != "10.2.0.1-10.2.0.254" {
		t.Errorf("Load(PluginConf(conflist)) = name %q, version %q, dataDir %q, sets %v", c.Name, c.CNIVersion, c.DataDir, c.Pool.Sets)
	}

	// A plugin whose ipam is null has none (a plugin reads it as absent), whatever the
	// key's case: the next one's is the network's.
	nullFirst := `{"cniVersion":"1.1.0","name":"nl","plugins":[{"type":"tuning","ipam":null},{"type":"bridge","IPAM":{"type":"local-ipam","subnet":"10.5.0.0/24"}}]}`
	if got, err := config.PluginConf([]byte(nullFirst)); err != nil || !strings.Contains(string(got), `"type":"bridge"`) {
		t.Errorf("PluginConf(a null ipam, then one) = %s, %v; want the bridge plugin", got, err)
	}

	for _, e := range []struct{ name, in, want string }{
		{"only a null ipam", `{"name":"x","plugins":[{"type":"bridge","ipam":null}]}`, "no plugin of the conflist has an ipam section"},
		{"no ipam section", `{"name":"x","plugins":[{"type":"bridge"},{"type":"portmap"}]}`, "no plugin of the conflist has an ipam section"},
		{"empty plugin list", `{"name":"x","plugins":[]}`, "no plugin of the conflist has an ipam section"},
		{"not JSON", `{"name":`, "unexpected end of JSON input"},
		{"a plugin that is not an object", `{"name":"x","plugins":[["ipam"]]}`, "cannot unmarshal array"},
		{"plugins not a list", `{"name":"x","plugins":{"ipam":{}}}`, "cannot unmarshal object"},
	} {
		if got, err := config.PluginConf([]byte(e.in)); err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("PluginConf(%s) = %s, %v; want an error with %q", e.name, got, err, e.want)
		}
	}
}
