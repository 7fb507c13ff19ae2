package config

// decode.go reads the network config through maps of raw messages, key by key, where
// host-local decodes it into its structs. These tests fail when host-local's config types
// (Net, IPAMConfig, Range/RangeSet, the runtimeConfig and args structs, IPAMEnvArgs) have
// a key local-ipam's decoder does not read: a config field host-local honours and
// local-ipam would silently drop. No list of the decoder's keys is kept here: each key is
// found by reflection on host-local's types and checked by decoding a config that sets
// only it.

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	hl "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/local-ipam/local-ipam/internal/jsonguard"
)

// hostLocalPkg holds host-local's config types: the walk descends into its structs (and
// the anonymous ones declared in them), not into the CNI library's (types.Route, ip.IP),
// which local-ipam decodes with the library itself.
const hostLocalPkg = "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

// ignoredKeys are host-local's keys that local-ipam does not read, on purpose.
var ignoredKeys = map[string]string{
	"ipam.Name": "IPAMConfig.Name has no JSON tag (so its key is \"Name\", in any case) and host-local never uses it",
}

// configKey is one key of host-local's config: its path from the top ("[]" is an
// element of a list) and its Go type.
type configKey struct {
	path []string
	typ  reflect.Type
}

func (k configKey) String() string { return strings.ReplaceAll(strings.Join(k.path, "."), ".[]", "[]") }

// ownStruct reports whether typ, under its pointers and slices, is a struct of
// host-local's config (named in hostLocalPkg, or anonymous).
func ownStruct(typ reflect.Type) bool {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	return typ.Kind() == reflect.Struct && (typ.PkgPath() == hostLocalPkg || typ.Name() == "")
}

// configKeys lists the keys of typ below path as encoding/json reads them: the tag's
// name, else the field's; an embedded struct's fields at its own level; "-" skipped.
func configKeys(typ reflect.Type, path []string) []configKey {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() == reflect.Slice {
		return configKeys(typ.Elem(), append(slices.Clone(path), "[]"))
	}
	var out []configKey
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case !f.IsExported() || name == "-":
			continue
		case f.Anonymous && name == "":
			out = append(out, configKeys(f.Type, path)...)
			continue
		case name == "":
			name = f.Name
		}
		p := append(slices.Clone(path), name)
		if ownStruct(f.Type) {
			out = append(out, configKeys(f.Type, p)...)
		} else {
			out = append(out, configKey{p, f.Type})
		}
	}
	return out
}

// nest is the JSON document that holds v at path, every container on the way new.
func nest(path []string, v any) any {
	switch {
	case len(path) == 0:
		return v
	case path[0] == "[]":
		return []any{nest(path[1:], v)}
	}
	return map[string]any{path[0]: nest(path[1:], v)}
}

// decodes runs the decoder on the document and returns what it read.
func decodes(t *testing.T, doc any) *netJSON {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	n, err := decodeNet(b)
	if err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return n
}

// Every key of host-local's config, set alone (with a value of its type), changes what
// local-ipam's decoder reads, under its own name and in capitals alike (encoding/json
// matches keys case-insensitively, and so must the decoder).
func TestDecoderReadsEveryHostLocalKey(t *testing.T) {
	keys := configKeys(reflect.TypeFor[hl.Net](), nil)
	var names []string
	for _, k := range keys {
		names = append(names, k.String())
	}
	// The walk itself: a few keys it must find, so that it cannot pass by finding none.
	for _, want := range []string{"name", "ipam.subnet", "ipam.rangeStart", "ipam.ranges[][].gateway", "runtimeConfig.ipRanges[][].subnet", "runtimeConfig.ips", "args.cni.ips"} {
		if !slices.Contains(names, want) {
			t.Fatalf("the walk of host-local's config types misses %s: %v", want, names)
		}
	}
	for _, k := range keys {
		v, err := jsonguard.Populated(k.typ)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		last := len(k.path) - 1
		without := decodes(t, nest(k.path[:last], map[string]any{}))
		for _, key := range []string{k.path[last], strings.ToUpper(k.path[last])} {
			path := append(slices.Clone(k.path[:last]), key)
			seen := !reflect.DeepEqual(decodes(t, nest(path, v.Interface())), without)
			why, ignored := ignoredKeys[k.String()]
			switch {
			case ignored && seen:
				t.Errorf("%s is listed as ignored (%s) but the decoder reads it", k, why)
			case !ignored && !seen:
				t.Errorf("host-local reads %s (%s), local-ipam's decoder (decode.go) does not: read it there, or list it in ignoredKeys with why", strings.Join(path, "."), k.typ)
			}
		}
	}
	for name := range ignoredKeys {
		if !slices.Contains(names, name) {
			t.Errorf("ignoredKeys lists %s, which host-local's config no longer has", name)
		}
	}
}

// Every CNI_ARGS key host-local reads (IPAMEnvArgs) is one local-ipam accepts: not
// refused as unknown, and the requested address read.
func TestLoadAcceptsEveryHostLocalEnvArg(t *testing.T) {
	const conf = `{"cniVersion":"1.1.0","name":"net","ipam":{"subnet":"10.1.2.0/24"}}`
	typ := reflect.TypeFor[hl.IPAMEnvArgs]()
	v, err := jsonguard.Populated(typ)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(v.Field(i))
				continue
			}
			// types.LoadArgs sets fields by name, from their text.
			var text string
			if m, ok := v.Field(i).Addr().Interface().(encoding.TextMarshaler); ok {
				b, err := m.MarshalText()
				if err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				text = string(b)
			} else {
				text = fmt.Sprint(v.Field(i).Interface())
			}
			fields = append(fields, f.Name)
			c, err := Load([]byte(conf), f.Name+"="+text)
			if err != nil {
				t.Errorf("host-local reads CNI_ARGS %s=%s, local-ipam refuses it: %v", f.Name, text, err)
				continue
			}
			if f.Name == "IP" && (len(c.Requested) != 1 || c.Requested[0].String() != "10.1.2.3") {
				t.Errorf("CNI_ARGS IP=%s: requested %v, want 10.1.2.3", text, c.Requested)
			}
		}
	}
	walk(v.Elem())
	if !slices.Contains(fields, "IP") || !slices.Contains(fields, "IgnoreUnknown") {
		t.Fatalf("IPAMEnvArgs fields %v: the walk misses IP or IgnoreUnknown", fields)
	}
}
