package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// Examine checks a network config or conflist as the operator's lint command does
// (docs/LINT.md lists every check): unknown and misspelled keys, the ranges, the
// exclusions, the gateways and the store. It returns what it found, in the order of the
// config; none for a config that is clean. A CNI call never examines: it only reports
// Config.Typos.
func Examine(raw []byte) []Finding {
	top := &object{raw: raw}
	if err := json.Unmarshal(raw, &top.m); err != nil {
		return []Finding{{"", SeverityError, fmt.Sprintf("not a JSON object: %v", err)}}
	}
	if isNull(top.get("plugins")) {
		var h struct{ Name, CNIVersion string }
		if json.Unmarshal(raw, &h) != nil {
			return examinePlugin(raw, "") // a name or version of the wrong type: reported there
		}
		return refusedBySkel(examinePlugin(raw, ""), h.Name, h.CNIVersion)
	}
	out := misspelled(top, ListKeys, "", false)
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return append(out, Finding{"plugins", SeverityError, fmt.Sprintf("not a list of plugin configs: %v", err)})
	}
	withIPAM, firstIPAM, firstWhere, warnedIPAM := 0, "", "", false
	for i, p := range list.Plugins {
		where := fmt.Sprintf("plugins[%d]", i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil {
			out = append(out, Finding{where, SeverityError, fmt.Sprintf("not a JSON object: %v", err)})
			continue
		}
		if isNull((&object{m: m, raw: p}).get("ipam")) {
			out = append(out, misspelled(&object{m: m, raw: p}, TopKeys, where, false)...)
			continue
		}
		withIPAM++
		// Another ipam section than the first's (the chained form repeats the same one).
		ipam := canonical((&object{m: m, raw: p}).get("ipam"))
		if withIPAM == 1 {
			firstIPAM, firstWhere = ipam, where
		} else if ipam != firstIPAM && !warnedIPAM {
			warnedIPAM = true
			out = append(out, Finding{where + ".ipam", SeverityWarning, fmt.Sprintf(
				"a second plugin with an ipam section: local-ipam's commands given this conflist by --conf (list, usage, release) read only the first one's (%s)", firstWhere)})
		}
		// What the runtime hands the plugin: the list's name and version (as PluginConf).
		m["name"], _ = json.Marshal(list.Name)
		m["cniVersion"], _ = json.Marshal(list.CNIVersion)
		conf, _ := json.Marshal(m)
		out = append(out, examinePlugin(conf, where)...)
	}
	if withIPAM == 0 {
		out = append(out, Finding{"plugins", SeverityError, "no plugin of the conflist has an ipam section"})
	}
	return refusedBySkel(out, list.Name, list.CNIVersion)
}

// refusedBySkel adds to found, when it holds no error, what skel refuses before any verb
// reads the config (so Load never sees it): a missing or invalid network name (code 7)
// and a cniVersion the plugin does not support (code 1). In a conflist, the list's name
// and version, which libcni hands each plugin.
func refusedBySkel(found []Finding, name, cniVersion string) []Finding {
	for _, f := range found {
		if f.Severity == SeverityError {
			return found
		}
	}
	if err := utils.ValidateNetworkName(name); err != nil {
		msg := "missing network name: every CNI call fails with code 7"
		if name != "" {
			msg = fmt.Sprintf("network name %q: invalid characters (a letter or digit first, then letters, digits, _ . -): every CNI call fails with code 7", name)
		}
		found = append(found, Finding{"name", SeverityError, msg})
	}
	v := cniVersion
	if v == "" {
		v = "0.1.0" // what skel reads a config without cniVersion as
	}
	if supported := version.All.SupportedVersions(); !slices.Contains(supported, v) {
		found = append(found, Finding{"cniVersion", SeverityError, fmt.Sprintf(
			"cniVersion %q is not supported (%s): every CNI call fails with code 1", cniVersion, strings.Join(supported, ", "))})
	}
	return found
}

// examinePlugin checks one plugin's config (a network config, or a plugin of a conflist
// given the list's name and version); at prefixes every path.
func examinePlugin(raw []byte, at string) []Finding {
	l := &linter{at: at}
	top := &object{raw: raw}
	if err := json.Unmarshal(raw, &top.m); err != nil {
		l.add("", SeverityError, "not a JSON object: %v", err)
		return l.out
	}
	l.keys(top, TopKeys, "", false)
	ipam, _ := decodeObject(top.get("ipam"), "ipam")
	if ipam != nil {
		l.keys(ipam, IPAMKeys, "ipam", true)
		l.rangeKeys(ipam.get("ranges"), "ipam.ranges")
		if st, _ := decodeObject(ipam.get("store"), "ipam.store"); st != nil {
			l.keys(st, StoreKeys, "ipam.store", true)
		}
		var routes []json.RawMessage
		if json.Unmarshal(ipam.get("routes"), &routes) == nil {
			for i, r := range routes {
				if o, _ := decodeObject(r, ""); o != nil {
					l.keys(o, RouteKeys, fmt.Sprintf("ipam.routes[%d]", i), true)
				}
			}
		}
	}
	if rc, _ := decodeObject(top.get("runtimeConfig"), "runtimeConfig"); rc != nil {
		l.keys(rc, RuntimeConfigKeys, "runtimeConfig", false)
		l.rangeKeys(rc.get("ipRanges"), "runtimeConfig.ipRanges")
	}
	if args, _ := decodeObject(top.get("args"), "args"); args != nil {
		if cni, _ := decodeObject(args.get("cni"), "args.cni"); cni != nil {
			l.keys(cni, ArgsCNIKeys, "args.cni", false)
		}
	}

	n, err := decodeNet(raw)
	var pe *pathError
	switch {
	case errors.As(err, &pe):
		l.add(pe.Path, SeverityError, "%v", pe.Err)
	case err != nil:
		l.add("", SeverityError, "%v", err)
	case n.IPAM != nil:
		l.pool(n)
		if _, err := validStore(n.IPAM.Store); err != nil {
			l.add("ipam.store", SeverityError, "%s", msgOf(err))
		}
		l.storeFields(n.IPAM.Store)
		// ADD reads it every time and fails without it (as host-local does).
		if _, err := (&Config{ResolvConf: n.IPAM.ResolvConf}).DNS(); err != nil {
			l.add("ipam.resolvConf", SeverityWarning, "%s (on this machine): every ADD fails where it cannot be read", msgOf(err))
		}
	}
	// What the checks above do not cover (no ipam, no ranges, a cniVersion that allows
	// one set per family, requested addresses): as a CNI call would refuse the config.
	if !l.failed {
		if _, err := Load(raw, ""); err != nil {
			l.add("", SeverityError, "%s", msgOf(err))
		}
	}
	return l.out
}

func msgOf(err error) string {
	var te *types.Error
	if errors.As(err, &te) {
		if te.Details != "" {
			return te.Msg + ": " + te.Details
		}
		return te.Msg
	}
	return err.Error()
}

// linter gathers the findings of one plugin's config.
type linter struct {
	at     string // the plugin's path in a conflist
	out    []Finding
	failed bool // an error was found: a CNI call would refuse the config, or misread it
}

func (l *linter) add(path, sev, format string, a ...any) {
	if l.at != "" {
		if path == "" {
			path = l.at
		} else {
			path = l.at + "." + path
		}
	}
	if sev == SeverityError {
		l.failed = true
	}
	l.out = append(l.out, Finding{path, sev, fmt.Sprintf(format, a...)})
}

// keys reports o's misspelled keys, and with strict its unknown ones. A CNI call ignores
// them: they do not count as failed.
func (l *linter) keys(o *object, keys []string, where string, strict bool) {
	failed := l.failed
	for _, f := range misspelled(o, keys, where, strict) {
		l.add(f.Path, f.Severity, "%s", f.Message)
	}
	l.failed = failed
}

// rangeKeys reports the unknown keys of each range of a list of range sets.
func (l *linter) rangeKeys(raw json.RawMessage, where string) {
	var sets [][]json.RawMessage
	if json.Unmarshal(raw, &sets) != nil {
		return // reported by the decoder
	}
	for i, set := range sets {
		for j, r := range set {
			if o, _ := decodeObject(r, ""); o != nil {
				l.keys(o, RangeKeys, fmt.Sprintf("%s[%d][%d]", where, i, j), true)
			}
		}
	}
}

// placed is a range set with the JSON path of the set and of each of its ranges.
type placed struct {
	path   string
	set    ranges.Set
	ranges []string
	given  []rangeJSON
}

// pool checks the range sets (each range, each set, overlaps between sets), the
// exclusions, and where the gateways are.
func (l *linter) pool(n *netJSON) {
	var sets []placed
	addSet := func(path string, rs []rangeJSON, paths []string) {
		var parsed []ranges.Range
		for k, r := range rs {
			rr, err := parseRange(r)
			if err != nil {
				l.add(paths[k], SeverityError, "%v", err)
				return
			}
			parsed = append(parsed, rr)
		}
		set, err := ranges.NewSet(parsed)
		if err != nil {
			l.add(path, SeverityError, "%v", err)
			return
		}
		sets = append(sets, placed{path, set, paths, rs})
	}
	list := func(where string, rss [][]rangeJSON) {
		for i, rs := range rss {
			path := fmt.Sprintf("%s[%d]", where, i)
			var paths []string
			for j := range rs {
				paths = append(paths, fmt.Sprintf("%s[%d]", path, j))
			}
			addSet(path, rs, paths)
		}
	}
	list("runtimeConfig.ipRanges", n.RuntimeConfig.IPRanges)
	legacy := n.IPAM.rangeJSON
	if legacy.Subnet != "" {
		addSet("ipam", []rangeJSON{legacy}, []string{"ipam"})
	} else {
		for _, f := range []struct{ key, val string }{{"rangeStart", legacy.RangeStart}, {"rangeEnd", legacy.RangeEnd}, {"gateway", legacy.Gateway}} {
			if f.val != "" {
				l.add("ipam."+f.key, SeverityWarning, "ignored: it belongs to the single range of ipam.subnet, which is not set")
			}
		}
	}
	list("ipam.ranges", n.IPAM.Ranges)

	// Overlaps between sets (within a set, NewSet refused them).
	type at struct{ set, rng int }
	var all []ranges.Range
	var where []at
	for i, s := range sets {
		for j, r := range s.set {
			all = append(all, r)
			where = append(where, at{i, j})
		}
	}
	if a, b, ok := ranges.FirstOverlap(len(all), func(k int) ranges.Range { return all[k] }); ok {
		wa, wb := where[a], where[b]
		if wb.set < wa.set || (wb.set == wa.set && wb.rng < wa.rng) {
			wa, wb = wb, wa
		}
		l.add(sets[wb.set].ranges[wb.rng], SeverityError, "%s overlaps %s of %s: range sets must not overlap",
			sets[wb.set].set[wb.rng], sets[wa.set].set[wa.rng], l.full(sets[wa.set].ranges[wa.rng]))
	}

	var prefixes []netip.Prefix
	var prefixPaths []string
	for k, e := range n.IPAM.Exclude {
		p, err := parseExclude(e)
		if err != nil {
			l.add(fmt.Sprintf("ipam.exclude[%d]", k), SeverityError, "invalid exclude entry %q: %v", e, err)
			continue
		}
		prefixes = append(prefixes, p)
		prefixPaths = append(prefixPaths, fmt.Sprintf("ipam.exclude[%d]", k))
	}
	excl := ranges.NewExclusions(append(append([]netip.Prefix(nil), prefixes...), ranges.Mapped))
	for k, p := range prefixes {
		hits := false
		for _, s := range sets {
			for _, r := range s.set {
				if ranges.NewExclusions([]netip.Prefix{p}).Count(r.Start, r.End).Sign() > 0 {
					hits = true
				}
			}
		}
		if !hits && len(sets) > 0 {
			l.add(prefixPaths[k], SeverityWarning, "%s excludes no address of any range", p)
		}
	}
	for _, s := range sets {
		switch {
		case len(prefixes) > 0 && allExcluded(s.set, excl):
			l.add(s.path, SeverityError, "every assignable address of %s is excluded by ipam.exclude: every ADD fails with code 100", s.set)
		case allExcluded(s.set, ranges.NewExclusions([]netip.Prefix{ranges.Mapped})):
			l.add(s.path, SeverityError, "%s holds no address but its gateway, which is never assigned: every ADD fails with code 100", s.set)
		}
		for j, r := range s.set {
			if s.given[j].Gateway == "" {
				continue // the default, subnet + 1
			}
			gw, path := r.Gateway, s.ranges[j]+".gateway"
			if s.ranges[j] == "ipam" {
				path = "ipam.gateway"
			}
			switch {
			case gw == r.Subnet.Addr():
				l.add(path, SeverityWarning, "gateway %s is the network address of %s", gw, r.Subnet)
			case gw.Is4() && gw == ranges.LastAddr(r.Subnet):
				l.add(path, SeverityWarning, "gateway %s is the broadcast address of %s", gw, r.Subnet)
			}
			// subnet + 1 is the default and the usual router; an exclusion there (the
			// first addresses kept for the infrastructure) is no mistake.
			if iv, ok := excl.Covering(gw); ok && gw != r.Subnet.Addr().Next() {
				l.add(path, SeverityWarning, "gateway %s is inside the exclusion %s-%s: is the gateway or the exclusion wrong?", gw, iv.From, iv.To)
			}
		}
	}
}

// full is a path with the plugin's prefix, for messages that name another place.
func (l *linter) full(path string) string {
	if l.at == "" {
		return path
	}
	return l.at + "." + path
}

// allExcluded reports whether every address of set but its gateways is excluded.
func allExcluded(set ranges.Set, excl ranges.Exclusions) bool {
	for _, r := range set {
		a := r.Start
		for {
			if iv, ok := excl.Covering(a); ok {
				if iv.To.Compare(r.End) >= 0 {
					break
				}
				a = iv.To.Next()
				continue
			}
			if a != r.Gateway {
				return false
			}
			if a == r.End {
				break
			}
			a = a.Next()
		}
	}
	return true
}

// storeFields reports the etcd store's fields in a store that is not etcd's.
func (l *linter) storeFields(s *storeJSON) {
	if s == nil || s.Type == StoreEtcd {
		return
	}
	for _, f := range []struct {
		key string
		set bool
	}{
		{"prefix", s.Prefix != ""}, {"certFile", s.CertFile != ""}, {"keyFile", s.KeyFile != ""},
		{"trustedCAFile", s.TrustedCAFile != ""}, {"username", s.Username != ""},
		{"password", s.Password != ""}, {"timeout", !isNull(s.Timeout)}, {"node", s.Node != ""},
	} {
		if f.set {
			l.add("ipam.store."+f.key, SeverityWarning, "ignored: only the etcd store reads it, and ipam.store.type is not \"etcd\"")
		}
	}
}

// canonical is raw re-encoded with its keys sorted, to compare two JSON values.
func canonical(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
