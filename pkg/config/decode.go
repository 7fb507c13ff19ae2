package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// The config is decoded through maps of raw messages rather than by encoding/json into
// structs: a CNI call is a process that lives for one call, and encoding/json's first
// decode into a struct type computes and sorts its field table by reflection, a large
// share of an ADD's work (docs/PERFORMANCE.md). Keys are matched as encoding/json matches
// struct fields: exactly, else case-insensitively, so every config host-local accepts
// reads the same here.

// object is a decoded JSON object: its members, and its bytes for the rare lookups that
// need the members' order.
type object struct {
	m   map[string]json.RawMessage
	raw []byte
}

var null = []byte("null")

// pathError is a value of the wrong JSON type, at its JSON path (lint reports it there).
type pathError struct {
	Path string
	Err  error
}

func (e *pathError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *pathError) Unwrap() error { return e.Err }

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || bytes.Equal(raw, null) }

// decodeObject reads a JSON object; absent or null gives nil.
func decodeObject(raw json.RawMessage, where string) (*object, error) {
	if isNull(raw) {
		return nil, nil
	}
	o := &object{raw: raw}
	if err := json.Unmarshal(raw, &o.m); err != nil {
		return nil, &pathError{where, fmt.Errorf("want an object: %w", err)}
	}
	return o, nil
}

// get finds key as encoding/json finds a struct field: matched exactly or
// case-insensitively, the last matching member winning.
func (o *object) get(key string) json.RawMessage {
	if o == nil {
		return nil
	}
	matches := 0
	var last json.RawMessage
	for k, v := range o.m {
		if k == key || strings.EqualFold(k, key) {
			matches++
			last = v
		}
	}
	if matches <= 1 {
		return last
	}
	return lastMember(o.raw, key)
}

// lastMember walks the object's members in order: for the rare object holding both
// "subnet" and "Subnet", say.
func lastMember(raw []byte, key string) json.RawMessage {
	var last json.RawMessage
	eachMember(raw, func(k string, v json.RawMessage) {
		if strings.EqualFold(k, key) {
			last = v
		}
	})
	return last
}

// eachMember calls fn with each member of the JSON object raw, in order, as far as raw
// can be read.
func eachMember(raw []byte, fn func(key string, v json.RawMessage)) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return
		}
		k, _ := t.(string)
		fn(k, v)
	}
}

func (o *object) decode(key, where string, dst any) error {
	raw := o.get(key)
	if isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return &pathError{where + key, err}
	}
	return nil
}

func (o *object) rangeJSON(where string) (rangeJSON, error) {
	var r rangeJSON
	for _, f := range []struct {
		key string
		dst *string
	}{{"subnet", &r.Subnet}, {"rangeStart", &r.RangeStart}, {"rangeEnd", &r.RangeEnd}, {"gateway", &r.Gateway}} {
		if err := o.decode(f.key, where, f.dst); err != nil {
			return r, err
		}
	}
	return r, nil
}

// rangeSets reads a list of range sets (the shape of "ranges" and "ipRanges"), adding to
// typos the misspelled keys of its ranges.
func rangeSets(raw json.RawMessage, where string, typos *[]Finding) ([][]rangeJSON, error) {
	if isNull(raw) {
		return nil, nil
	}
	var sets [][]json.RawMessage
	if err := json.Unmarshal(raw, &sets); err != nil {
		return nil, &pathError{where, fmt.Errorf("want a list of lists of ranges: %w", err)}
	}
	out := make([][]rangeJSON, 0, len(sets))
	for i, set := range sets {
		rs := make([]rangeJSON, 0, len(set))
		for j, rraw := range set {
			w := fmt.Sprintf("%s[%d][%d]", where, i, j)
			o, err := decodeObject(rraw, w)
			if err != nil {
				return nil, err
			}
			r, err := o.rangeJSON(w + ".")
			if err != nil {
				return nil, err
			}
			*typos = append(*typos, misspelled(o, RangeKeys, w, false)...)
			rs = append(rs, r)
		}
		out = append(out, rs)
	}
	return out, nil
}

// decodeNet reads the network config into netJSON.
func decodeNet(stdin []byte) (*netJSON, error) {
	top := &object{raw: stdin}
	if err := json.Unmarshal(stdin, &top.m); err != nil {
		return nil, err
	}
	n := &netJSON{}
	for _, f := range []struct {
		key string
		dst any
	}{{"name", &n.Name}, {"type", &n.Type}, {"cniVersion", &n.CNIVersion}} {
		if err := top.decode(f.key, "", f.dst); err != nil {
			return nil, err
		}
	}
	if raw := top.get("prevResult"); !isNull(raw) {
		n.PrevResult = raw
	}
	// The GC lists matter to GC only: a malformed one fails GC (code 7), not ADD or DEL,
	// which host-local does not read them for either.
	for _, f := range []struct {
		key string
		dst **[]types.GCAttachment
	}{{"cni.dev/valid-attachments", &n.ValidAttachments}, {"cni.dev/attachments", &n.LegacyAttachments}} {
		if raw := top.get(f.key); !isNull(raw) {
			var list []types.GCAttachment
			if err := json.Unmarshal(raw, &list); err != nil {
				n.AttachmentsErr = fmt.Errorf("%s: %w", f.key, err)
				continue
			}
			*f.dst = &list
		}
	}
	ipam, err := decodeObject(top.get("ipam"), "ipam")
	if err != nil {
		return nil, err
	}
	if ipam != nil {
		n.IPAM = &ipamJSON{}
		n.Typos = misspelled(ipam, IPAMKeys, "ipam", false)
		if n.IPAM.rangeJSON, err = ipam.rangeJSON("ipam."); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			key string
			dst any
		}{
			{"type", &n.IPAM.Type}, {"dataDir", &n.IPAM.DataDir}, {"resolvConf", &n.IPAM.ResolvConf},
			{"routes", &n.IPAM.Routes}, {"exclude", &n.IPAM.Exclude}, {"freeOnReboot", &n.IPAM.FreeOnReboot},
		} {
			if err := ipam.decode(f.key, "ipam.", f.dst); err != nil {
				return nil, err
			}
		}
		if n.IPAM.Ranges, err = rangeSets(ipam.get("ranges"), "ipam.ranges", &n.Typos); err != nil {
			return nil, err
		}
		if n.IPAM.Store, err = decodeStore(ipam.get("store"), &n.Typos); err != nil {
			return nil, err
		}
	}

	rc, err := decodeObject(top.get("runtimeConfig"), "runtimeConfig")
	if err != nil {
		return nil, err
	}
	if rc != nil {
		if n.RuntimeConfig.IPRanges, err = rangeSets(rc.get("ipRanges"), "runtimeConfig.ipRanges", &n.Typos); err != nil {
			return nil, err
		}
		if err := rc.decode("ips", "runtimeConfig.", &n.RuntimeConfig.IPs); err != nil {
			return nil, err
		}
	}

	args, err := decodeObject(top.get("args"), "args")
	if err != nil {
		return nil, err
	}
	if args != nil {
		cni, err := decodeObject(args.get("cni"), "args.cni")
		if err != nil {
			return nil, err
		}
		if cni != nil {
			if err := cni.decode("ips", "args.cni.", &n.ArgsIPs); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}
