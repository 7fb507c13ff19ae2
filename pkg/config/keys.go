package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// The keys local-ipam reads, by where they sit in the config. A key matches as the decoder
// matches it (decode.go): exactly or case-insensitively.
var (
	// TopKeys are those of a network config (or of one plugin of a conflist) that local-ipam
	// reads or that the spec defines. Other plugins' fields sit beside them.
	TopKeys = []string{"cniVersion", "name", "type", "ipam", "dns", "capabilities", "prevResult",
		"runtimeConfig", "args", "cni.dev/valid-attachments", "cni.dev/attachments"}
	// ListKeys are a conflist's own.
	ListKeys = []string{"cniVersion", "cniVersions", "name", "plugins", "disableCheck", "disableGC",
		"loadOnlyInlinedPlugins"}
	// IPAMKeys are the ipam section's: host-local's, then local-ipam's own.
	IPAMKeys = []string{"type", "name", "subnet", "rangeStart", "rangeEnd", "gateway", "routes",
		"dataDir", "resolvConf", "ranges", "exclude", "freeOnReboot", "store"}
	// RangeKeys are those of one range of "ranges" (and of runtimeConfig.ipRanges).
	RangeKeys = []string{"subnet", "rangeStart", "rangeEnd", "gateway"}
	// StoreKeys are ipam.store's.
	StoreKeys = []string{"type", "endpoints", "prefix", "certFile", "keyFile", "trustedCAFile",
		"username", "password", "timeout", "node"}
	// RouteKeys are those of one route of ipam.routes (libcni's types.Route).
	RouteKeys = []string{"dst", "gw", "mtu", "advmss", "priority", "table", "scope"}
	// RuntimeConfigKeys are the capabilities local-ipam reads; other plugins' sit beside them.
	RuntimeConfigKeys = []string{"ips", "ipRanges"}
	// ArgsCNIKeys are those of args.cni local-ipam reads (CONVENTIONS.md); others sit beside.
	ArgsCNIKeys = []string{"ips"}
)

// Severities of a Finding.
const (
	SeverityError   = "error"   // the config is refused, or does something other than what it says
	SeverityWarning = "warning" // accepted, but something in it has no effect or looks wrong
)

// Finding is one thing wrong in a config, at its JSON path ("ipam.ranges[0][1].gateway";
// "" for the config as a whole).
type Finding struct {
	Path     string `json:"path"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

func (f Finding) String() string {
	p := f.Path
	if p == "" {
		p = "(config)"
	}
	return f.Severity + ": " + p + ": " + f.Message
}

// known reports whether key is one of keys, as the decoder matches it.
func known(keys []string, key string) bool {
	for _, k := range keys {
		if k == key || strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// maxTypo is how far a key may be from a known key to be taken for a misspelling of it:
// one edit for short keys, where two edits reach unrelated words ("mode" and "name"), two
// for longer ones.
func maxTypo(k string) int {
	if len(k) <= 5 {
		return 1
	}
	return 2
}

// Suggest returns the known key that key is most likely a misspelling of: the nearest
// within maxTypo edits (a transposition is one edit), case ignored; "" when none is.
// A key that is itself known (case ignored) is no misspelling.
func Suggest(keys []string, key string) string {
	if len(key) > 64 || known(keys, key) {
		return ""
	}
	lk := strings.ToLower(key)
	best, bestD := "", 1<<30
	for _, k := range keys {
		m := maxTypo(k)
		if d := len(lk) - len(k); d > m || -d > m {
			continue
		}
		if d := distance(lk, strings.ToLower(k), m); d <= m && d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the optimal string alignment distance of a and b (insertions, deletions,
// substitutions and transpositions of neighbours, one edit each), or max+1 when it is
// larger than max.
func distance(a, b string, max int) int {
	if a == b {
		return 0
	}
	// Three rows of the table: two back for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
			rowMin = min(rowMin, v)
		}
		if rowMin > max {
			return max + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], max+1)
}

// misspelled returns a finding for each key of o that is not one of keys but is near one,
// in key order; where is o's JSON path. With unknownToo, every other unknown key is
// reported as well (a warning: it is ignored).
func misspelled(o *object, keys []string, where string, unknownToo bool) []Finding {
	if o == nil {
		return nil
	}
	var out []Finding
	for k := range o.m {
		if known(keys, k) {
			continue
		}
		if s := Suggest(keys, k); s != "" {
			out = append(out, Finding{joinPath(where, k), SeverityError,
				fmt.Sprintf("unknown key %q, did you mean %q?", k, s)})
		} else if unknownToo {
			out = append(out, Finding{joinPath(where, k), SeverityWarning,
				fmt.Sprintf("unknown key %q: local-ipam ignores it", k)})
		}
	}
	out = append(out, repeated(o, keys, where)...)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// repeated reports each known key that the object gives more than once, exactly or in
// another case: only one of them counts, so that {"exclude": [...], "Exclude": []} may
// silently exclude nothing. Which one is the runtime's doing: the last as written for a
// config handed on as it is (encoding/json, host-local), the last in byte order for a
// conflist's plugin, which libcni decodes and encodes again (keys sorted).
func repeated(o *object, keys []string, where string) []Finding {
	// Walking the members is slow on a huge object: only when some known key's name is
	// found more than once in it (nested objects and values included).
	lower, again := bytes.ToLower(o.raw), false
	for _, k := range keys {
		if bytes.Count(lower, []byte(`"`+strings.ToLower(k)+`"`)) > 1 {
			again = true
			break
		}
	}
	if !again {
		return nil
	}
	seen := map[string][]string{}
	var order []string
	eachMember(o.raw, func(k string, _ json.RawMessage) {
		for _, known := range keys {
			if strings.EqualFold(k, known) {
				if seen[known] == nil {
					order = append(order, known)
				}
				seen[known] = append(seen[known], k)
				return
			}
		}
	})
	var out []Finding
	for _, known := range order {
		if as := seen[known]; len(as) > 1 {
			out = append(out, Finding{joinPath(where, as[len(as)-1]), SeverityError,
				fmt.Sprintf("key %q is given %d times (as %s): only one of them counts (which one depends on the runtime): keep one", known, len(as), quoteAll(as))})
		}
	}
	return out
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// joinPath appends key to a JSON path: as .key, or as ["key"] quoted when it holds a
// character that is not printable, a space, a quote or a bracket, so that a key cannot
// break the line it is printed on (a runtime's log) or pass for another path.
func joinPath(where, key string) string {
	plain := key != ""
	for _, r := range key {
		if !strconv.IsPrint(r) || r == ' ' || r == '"' || r == '[' || r == ']' || r == '\\' {
			plain = false
			break
		}
	}
	switch {
	case !plain:
		return where + "[" + strconv.Quote(key) + "]"
	case where == "":
		return key
	}
	return where + "." + key
}
