package config_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	hl "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// misspellings returns every string one transposition, deletion, insertion or
// substitution (of a lower-case letter) away from k.
func misspellings(k string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if s != "" && s != k && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for i := 0; i+1 < len(k); i++ {
		b := []byte(k)
		b[i], b[i+1] = b[i+1], b[i]
		add(string(b))
	}
	for i := range k {
		add(k[:i] + k[i+1:])
	}
	for c := 'a'; c <= 'z'; c++ {
		for i := 0; i <= len(k); i++ {
			add(k[:i] + string(c) + k[i:])
		}
		for i := range k {
			add(k[:i] + string(c) + k[i+1:])
		}
	}
	return out
}

// scopes are where local-ipam checks keys in CNI calls: a misspelled key there is warned
// about, with its JSON path.
var scopes = []struct {
	name string
	keys []string
	// conf puts key (with a value of the right shape) into an otherwise valid config; path
	// is where it then is.
	conf func(key string) (conf, path string)
}{
	{"ipam", config.IPAMKeys, func(k string) (string, string) {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24",%q:1}}`, k), "ipam." + k
	}},
	{"range", config.RangeKeys, func(k string) (string, string) {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24",%q:1}]]}}`, k), "ipam.ranges[1][0]." + k
	}},
	{"runtime range", config.RangeKeys, func(k string) (string, string) {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"10.2.0.0/24",%q:1}]]}}`, k), "runtimeConfig.ipRanges[0][0]." + k
	}},
	{"store", config.StoreKeys, func(k string) (string, string) {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","store":{"type":"disk",%q:1}}}`, k), "ipam.store." + k
	}},
}

// TestMisspelledKeys: every misspelling of every key local-ipam reads in ipam, a range or
// the store is reported by a CNI call's Load as exactly one typo, with its path and the key
// meant; lint reports it too. A misspelling that is itself a key of the scope is not one.
func TestMisspelledKeys(t *testing.T) {
	for _, sc := range scopes {
		for _, k := range sc.keys {
			n := 0
			for _, m := range misspellings(k) {
				if isKnown(sc.keys, m) {
					continue
				}
				n++
				if got := config.Suggest(sc.keys, m); got != k {
					t.Errorf("%s: Suggest(%q) = %q, want %q", sc.name, m, got, k)
					continue
				}
				conf, path := sc.conf(m)
				c, err := config.Load([]byte(conf), "")
				if err != nil {
					t.Errorf("%s: a misspelled key made Load fail: %v\n%s", sc.name, err, conf)
					continue
				}
				want := config.Finding{Path: path, Severity: config.SeverityError, Message: fmt.Sprintf("unknown key %q, did you mean %q?", m, k)}
				if len(c.Typos) != 1 || c.Typos[0] != want {
					t.Errorf("%s: typos of %q = %v, want [%v]", sc.name, m, c.Typos, want)
				}
				if f := config.Examine([]byte(conf)); !containsFinding(f, want) {
					t.Errorf("%s: Examine of %q = %v, want %v among them", sc.name, m, f, want)
				}
			}
			if n < 3*len(k) {
				t.Errorf("%s: only %d misspellings of %q tested", sc.name, n, k)
			}
		}
	}
	// The keys of the other scopes lint checks, through Suggest alone. A conflist's
	// "cniVersion" and "cniVersions" are one edit apart: a misspelling one edit from both
	// may be taken for either.
	for _, ks := range [][]string{config.TopKeys, config.ListKeys, config.RouteKeys, config.RuntimeConfigKeys, config.ArgsCNIKeys} {
		for _, k := range ks {
			for _, m := range misspellings(k) {
				if isKnown(ks, m) {
					continue
				}
				if got := config.Suggest(ks, m); got != k && (got == "" || !slices.Contains(misspellings(got), m)) {
					t.Errorf("Suggest(%v, %q) = %q, want %q", ks, m, got, k)
				}
			}
		}
	}
}

func isKnown(keys []string, k string) bool {
	for _, x := range keys {
		if strings.EqualFold(x, k) {
			return true
		}
	}
	return false
}

func containsFinding(fs []config.Finding, f config.Finding) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}

// TestKnownKeysAreNotTypos: keys as written, in another case (the decoder matches keys
// case-insensitively, as encoding/json does), and far from every key are no typos.
func TestKnownKeysAreNotTypos(t *testing.T) {
	conf := `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"local-ipam","SUBNET":"10.1.0.0/24","Exclude":["10.1.0.9"],
		"freeonreboot":true,"whereabouts_setting":1,"ranges":[[{"subnet":"10.2.0.0/24","RangeStart":"10.2.0.5","comment":"x"}]],
		"store":{"type":"disk"}}}`
	c, err := config.Load([]byte(conf), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Typos) != 0 {
		t.Errorf("typos %v, want none", c.Typos)
	}
	if !c.FreeOnReboot || len(c.Pool.Sets) != 2 {
		t.Errorf("keys in other cases were not read: %+v", c)
	}
}

// otherPluginKeys are fields of the plugins a runtime chains with an IPAM plugin (the
// pinned plugins module's bridge, macvlan, ipvlan, ptp, vlan, host-device, portmap, tuning,
// firewall, bandwidth, sbr, vrf), as they sit beside local-ipam's keys in a plugin's
// config, plus the capabilities runtimes put in runtimeConfig. TestOtherPluginsKeys adds
// every json tag of their config structs, read from the module's source.
var otherPluginKeys = []string{
	"bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "ipMasqBackend", "mtu",
	"hairpinMode", "promiscMode", "vlan", "vlanTrunk", "preserveDefaultVlan", "macspoofchk",
	"enabledad", "disableContainerInterface", "portIsolation", "master", "mode", "mac",
	"linkInContainer", "vlanId", "device", "hwaddr", "kernelpath", "pciBusID", "snat",
	"markMasqBit", "externalSetMarkChain", "conditionsV4", "conditionsV6", "masqAll", "backend",
	"sysctl", "promisc", "allmulti", "txQLen", "dataDir", "iptablesAdminChainName",
	"firewalldZone", "ingressPolicy", "ingressRate", "ingressBurst", "egressRate", "egressBurst",
	"unshapedSubnets", "shapedSubnets", "vrfname", "table", "capabilities", "dns",
}

var runtimeCapabilities = []string{"portMappings", "bandwidth", "mac", "ips", "ipRanges", "dns",
	"aliases", "infinibandGUID", "deviceID", "cgroupPath", "io.kubernetes.cri.pod-annotations"}

// pluginSourceKeys reads the json tags of the structs of the plugins' main packages.
func pluginSourceKeys(t *testing.T) []string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/containernetworking/plugins").Output()
	if err != nil {
		t.Skipf("cannot locate the plugins module: %v", err)
	}
	root := strings.TrimSpace(string(out))
	var keys []string
	for _, dir := range []string{"main/bridge", "main/macvlan", "main/ipvlan", "main/ptp", "main/vlan",
		"main/host-device", "meta/portmap", "meta/tuning", "meta/firewall", "meta/bandwidth", "meta/sbr", "meta/vrf"} {
		files, _ := filepath.Glob(filepath.Join(root, "plugins", dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				st, ok := n.(*ast.StructType)
				if !ok {
					return true
				}
				for _, fld := range st.Fields.List {
					if fld.Tag == nil {
						continue
					}
					tag, _ := strconv.Unquote(fld.Tag.Value)
					name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
					if name != "" && name != "-" {
						keys = append(keys, name)
					}
				}
				return true
			})
		}
	}
	if len(keys) < 40 {
		t.Fatalf("read only %d json tags from the plugins' sources in %s", len(keys), root)
	}
	return keys
}

// TestOtherPluginsKeys: other plugins' fields beside local-ipam's, where they sit in a
// plugin's config, in a conflist and in runtimeConfig, are neither warned about by a CNI
// call nor reported by lint.
func TestOtherPluginsKeys(t *testing.T) {
	keys := append(append([]string(nil), otherPluginKeys...), pluginSourceKeys(t)...)
	for _, k := range keys {
		if s := config.Suggest(config.TopKeys, k); s != "" {
			t.Errorf("another plugin's field %q is taken for a misspelling of %q", k, s)
		}
	}
	plug := map[string]any{"type": "bridge", "ipam": map[string]any{"type": "local-ipam", "subnet": "10.1.0.0/24"}}
	for i, k := range keys {
		if !isKnown(config.TopKeys, k) {
			plug[k] = i
		}
	}
	rc := map[string]any{}
	for i, k := range runtimeCapabilities {
		rc[k] = i
	}
	rc["ips"], rc["ipRanges"] = []string{"10.1.0.7"}, nil
	plug["runtimeConfig"] = rc
	plug["args"] = map[string]any{"cni": map[string]any{"labels": []any{}, "mac": "x"}, "k8s": map[string]any{}}
	conf := map[string]any{"cniVersion": "1.0.0", "name": "n"}
	for k, v := range plug {
		conf[k] = v
	}
	raw, _ := json.Marshal(conf)
	c, err := config.Load(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Typos) != 0 {
		t.Errorf("CNI call typos %v, want none", c.Typos)
	}
	if f := config.Examine(raw); len(f) != 0 {
		t.Errorf("lint of a config with other plugins' fields: %v, want nothing", f)
	}
	delete(plug, "runtimeConfig")
	list, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "n", "disableCheck": true, "plugins": []any{
		plug, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		map[string]any{"type": "tuning", "sysctl": map[string]string{}, "mtu": 1400}, map[string]any{"type": "firewall", "backend": "iptables"},
	}})
	if f := config.Examine(list); len(f) != 0 {
		t.Errorf("lint of a conflist with other plugins' fields: %v, want nothing", f)
	}
}

// TestHostLocalKeysKnown: every JSON key of host-local's config types, read by reflection
// from the pinned plugins module, is a key local-ipam knows, in its place.
func TestHostLocalKeysKnown(t *testing.T) {
	var net hl.Net
	nt := reflect.TypeOf(net)
	for _, c := range []struct {
		where string
		typ   reflect.Type
		known []string
	}{
		{"top level", nt, config.TopKeys},
		{"ipam", reflect.TypeOf(hl.IPAMConfig{}), config.IPAMKeys},
		{"range", reflect.TypeOf(hl.Range{}), config.RangeKeys},
		{"runtimeConfig", fieldType(t, nt, "RuntimeConfig"), config.RuntimeConfigKeys},
		{"args.cni", reflect.TypeOf(hl.IPAMArgs{}), config.ArgsCNIKeys},
	} {
		keys := jsonKeys(c.typ)
		if len(keys) == 0 {
			t.Fatalf("%s: no keys read from %v", c.where, c.typ)
		}
		for _, k := range keys {
			if !isKnown(c.known, k) {
				t.Errorf("host-local's %s key %q is not one local-ipam knows (%v)", c.where, k, c.known)
			}
		}
	}
	// args holds "cni" only for host-local; a route's keys are libcni's.
	if k := jsonKeys(fieldType(t, nt, "Args").Elem()); len(k) != 1 || k[0] != "cni" {
		t.Errorf("host-local's args keys %v, want [cni]", k)
	}
	var r types.Route
	if err := json.Unmarshal([]byte(`{"dst":"10.0.0.0/8","gw":"10.1.0.1","mtu":1,"advmss":2,"priority":3,"table":4,"scope":5}`), &r); err != nil || r.Scope == nil || r.Table == nil || r.Priority != 3 || r.AdvMSS != 2 {
		t.Errorf("libcni's route keys changed (%v): RouteKeys %v needs a look", err, config.RouteKeys)
	}
}

func fieldType(t *testing.T, typ reflect.Type, name string) reflect.Type {
	f, ok := typ.FieldByName(name)
	if !ok {
		t.Fatalf("%v has no field %s", typ, name)
	}
	return f.Type
}

// jsonKeys are the keys encoding/json reads into typ (a struct or a pointer to one):
// embedded structs' fields are promoted, a field without a tag is read by its name.
func jsonKeys(typ reflect.Type) []string {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case f.Anonymous && name == "":
			keys = append(keys, jsonKeys(f.Type)...)
		case name == "":
			keys = append(keys, f.Name)
		default:
			keys = append(keys, name)
		}
	}
	return keys
}

// FuzzExamine: lint never panics; each finding has a severity and a message; a config
// a CNI call refuses always has an error among its findings, and the typos a CNI call
// warns about are all among them.
func FuzzExamine(f *testing.F) {
	addSeeds(f)
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"subnet":"10.1.0.0/24","exlcude":[]}}]}`), "")
	f.Fuzz(func(t *testing.T, stdin []byte, _ string) {
		if len(stdin) > maxStdin {
			return
		}
		fs := config.Examine(stdin)
		hasError := false
		for _, x := range fs {
			if (x.Severity != config.SeverityError && x.Severity != config.SeverityWarning) || x.Message == "" {
				t.Fatalf("malformed finding %#v", x)
			}
			hasError = hasError || x.Severity == config.SeverityError
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(stdin, &top) == nil && top["plugins"] != nil {
			return // a conflist: a CNI call never sees it whole
		}
		c, err := config.Load(stdin, "")
		if err != nil && !hasError {
			t.Fatalf("Load refuses (%v), lint finds no error: %v", err, fs)
		}
		if err == nil {
			for _, typo := range c.Typos {
				if !containsFinding(fs, typo) {
					t.Fatalf("typo %v of a CNI call is not among lint's findings %v", typo, fs)
				}
			}
		}
	})
}

// TestOddKeysQuotedInPaths: a key that could break the line a finding is printed on (a
// runtime's log) or pass for another path is quoted in the finding's path.
func TestOddKeysQuotedInPaths(t *testing.T) {
	for key, want := range map[string]string{
		"exlcude":        "ipam.exlcude",
		"exclude\n":      `ipam["exclude\n"]`,
		"exclud\x1b[31m": `ipam["exclud\x1b[31m"]`,
		"\u2028gateway":  `ipam["\u2028gateway"]`,
		`gate"way`:       `ipam["gate\"way"]`,
		"rangeStart ":    `ipam["rangeStart "]`,
	} {
		k, _ := json.Marshal(key)
		conf := `{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"local-ipam","subnet":"10.0.0.0/24",` + string(k) + `:1}}`
		var paths []string
		for _, f := range config.Examine([]byte(conf)) {
			paths = append(paths, f.Path)
		}
		if len(paths) != 1 || paths[0] != want {
			t.Errorf("key %q: finding paths %q, want [%s]", key, paths, want)
		}
	}
}
