package plugin

// printResult (result.go) writes the JSON of an IPAM result by hand, field by field.
// These tests fail when the CNI library's result types gain (or lose) a JSON field, so
// that an upgrade of the library cannot silently leave a field out of local-ipam's
// output: the new field must be written by printResult, or listed as left out, with why.

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/local-ipam/local-ipam/internal/jsonguard"
)

// interfacesOmitted is why no field of current.Interface is written.
const interfacesOmitted = "an IPAM plugin creates no interface (the main plugin that calls it reports its own): cmdAdd never sets Result.Interfaces, and chained mode prints its prevResult with types.PrintResult"

// resultTypes are the types printResult encodes, with the JSON names it writes and those
// it leaves out on purpose (name -> why).
var resultTypes = []struct {
	name    string
	typ     reflect.Type
	written []string
	omitted map[string]string
}{
	{"current.Result", reflect.TypeFor[current.Result](), []string{"cniVersion", "dns", "ips", "routes"},
		map[string]string{"interfaces": interfacesOmitted}},
	{"current.IPConfig", reflect.TypeFor[current.IPConfig](), []string{"address", "gateway", "interface"}, nil},
	{"types.Route", reflect.TypeFor[types.Route](), []string{"advmss", "dst", "gw", "mtu", "priority", "scope", "table"}, nil},
	{"types.DNS", reflect.TypeFor[types.DNS](), []string{"domain", "nameservers", "options", "search"}, nil},
	{"current.Interface", reflect.TypeFor[current.Interface](), nil, map[string]string{
		"name": interfacesOmitted, "mac": interfacesOmitted, "mtu": interfacesOmitted,
		"sandbox": interfacesOmitted, "socketPath": interfacesOmitted, "pciID": interfacesOmitted}},
}

// filled is a new *typ with every field set (jsonguard.Populated).
func filled(t *testing.T, typ reflect.Type) reflect.Value {
	t.Helper()
	v, err := jsonguard.Populated(typ)
	if err != nil {
		t.Fatalf("%v; teach jsonguard to fill it, then check printResult writes it", err)
	}
	return v
}

// jsonNames are the keys of the JSON object b.
func jsonNames(t *testing.T, what string, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: not a JSON object (%v): %s", what, err, b)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// The JSON names of each type, as the library writes a fully populated value (through the
// type's own MarshalJSON where it has one: IPConfig and Route carry no tags) and as its
// struct tags say, are exactly those printResult writes or leaves out on purpose.
func TestResultTypesHaveNoUnknownField(t *testing.T) {
	for _, rt := range resultTypes {
		known := slices.Concat(rt.written, slices.Collect(maps.Keys(rt.omitted)))
		slices.Sort(known)
		b, err := json.Marshal(filled(t, rt.typ).Interface())
		if err != nil {
			t.Fatalf("%s: %v", rt.name, err)
		}
		lib := jsonNames(t, rt.name, b)
		if added, dropped := setDiff(lib, known), setDiff(known, lib); len(added) > 0 || len(dropped) > 0 {
			t.Errorf("%s: the CNI library writes %v; printResult (result.go) knows %v: new %v, gone %v. "+
				"Write the new ones in printResult and list them here, or list them as omitted with why",
				rt.name, lib, known, added, dropped)
		}
		exported := 0
		for i := range rt.typ.NumField() {
			f := rt.typ.Field(i)
			if !f.IsExported() {
				continue
			}
			exported++
			if tag, ok := f.Tag.Lookup("json"); ok {
				if name, _, _ := strings.Cut(tag, ","); name != "-" && !slices.Contains(known, name) {
					t.Errorf("%s.%s: JSON name %q (struct tag) unknown to printResult", rt.name, f.Name, name)
				}
			}
		}
		if exported != len(known) {
			t.Errorf("%s has %d exported fields, printResult knows %d JSON names %v", rt.name, exported, len(known), known)
		}
	}
}

// setDiff is what a holds that b does not.
func setDiff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// printResult really writes the names listed as written: on a fully populated result, the
// keys of the result and of each nested object are exactly those, and the bytes are the
// library's (which, without interfaces, writes nothing else).
func TestPrintResultWritesEveryListedField(t *testing.T) {
	r := filled(t, reflect.TypeFor[current.Result]()).Interface().(*current.Result)
	r.CNIVersion = "1.1.0"
	r.Interfaces = nil // see interfacesOmitted
	got := capture(t, func() error { return printResult(r, "1.1.0") })
	want := capture(t, func() error { return types.PrintResult(r, "1.1.0") })
	if !bytes.Equal(got, want) {
		t.Errorf("a fully populated result:\nlibrary:\n%s\nprintResult:\n%s", want, got)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(got, &top); err != nil {
		t.Fatalf("printResult wrote no JSON object (%v): %s", err, got)
	}
	first := func(key string) []byte {
		var list []json.RawMessage
		if err := json.Unmarshal(top[key], &list); err != nil || len(list) != 1 {
			t.Fatalf("%s: %s", key, top[key])
		}
		return list[0]
	}
	objects := map[string][]byte{
		"current.Result":   got,
		"current.IPConfig": first("ips"),
		"types.Route":      first("routes"),
		"types.DNS":        top["dns"],
	}
	for _, rt := range resultTypes {
		b, ok := objects[rt.name]
		if !ok {
			continue // current.Interface: nothing written
		}
		if names := jsonNames(t, rt.name, b); !slices.Equal(names, rt.written) {
			t.Errorf("%s: printResult writes %v, the list says %v", rt.name, names, rt.written)
		}
	}
}
