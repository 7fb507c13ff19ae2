package main

// Hostile input. Every case is one call through the RSS middleman: it must answer within its
// time bound (5 s; 2 s for small inputs in the short run, 10 s for inputs over 1 MB, 2 s for
// the huge ranges) and its memory bound (64 MiB plus 48 bytes per byte of input: a JSON
// document decodes to many times its size), exit non-zero with a CNI error
// object on stdout, and print no panic trace; where the README documents a code,
// local-ipam must use it. A few inputs are valid (unknown fields, huge IPv6 ranges,
// IgnoreUnknown): they must succeed within the same bounds, and a /8 or a range of 2^100
// addresses must cost what a /24 costs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type expectation int

const (
	expectError expectation = iota // a CNI error object, non-zero exit
	expectOK                       // success
	expectAbout                    // exit 0 without a command (skel prints its "about")
	expectAny                      // either answer (host-local, for local-ipam's own fields)
)

type hostileCase struct {
	name    string
	verb    string // default ADD
	conf    func(h *hctx) []byte
	args    string
	env     func(map[string]string)
	id      string
	want    expectation
	host    *expectation // host-local's expectation, when it differs
	codes   []uint       // local-ipam's documented codes (README)
	maxTime time.Duration
	// check judges a success of local-ipam (e.g. which address); "" is fine.
	check func(h *hctx, o outcome) string
	// after runs more calls once the case passed (e.g. DEL of what it allocated).
	after func(h *hctx, o outcome)
	// files is the size of the input the config points at (counted in the memory bound).
	files int
}

// n scales the size of a huge input: the short run uses a fifth of it (2 MB rather than
// 10 MB; a quadratic cost still shows, 25 times smaller).
func (h *hctx) n(full int) int {
	if h.x.short {
		return full / 5
	}
	return full
}

// resolvSize marks a case whose input includes the 10 MB resolv.conf file.
const resolvSize = -1

// hctx gives the cases their data dir and a fresh network name each.
type hctx struct {
	x       *job
	name    string // the case's
	dataDir string
	net     string
	scratch string
}

// base is a valid network config; edit changes it (a nil value deletes a key; keys of
// the form "ipam.x" are in the ipam section).
func (h *hctx) base(edit map[string]any) []byte {
	ipam := map[string]any{"type": h.x.p.typ, "dataDir": h.dataDir, "subnet": "10.60.0.0/24"}
	c := map[string]any{"cniVersion": "1.1.0", "name": h.net, "type": "bridge", "ipam": ipam}
	var splice []string
	for k, v := range edit {
		m, key := c, k
		if rest, ok := strings.CutPrefix(k, "ipam."); ok {
			m, key = ipam, rest
		}
		switch v := v.(type) {
		case nil:
			delete(m, key)
		case rawJSON:
			// Spliced in after encoding: encoding/json would refuse what is meant to be
			// refused (too deep, invalid).
			m[key] = fmt.Sprintf("@@raw%d@@", len(splice))
			splice = append(splice, string(v))
		default:
			m[key] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	for i, r := range splice {
		b = bytes.Replace(b, []byte(fmt.Sprintf(`"@@raw%d@@"`, i)), []byte(r), 1)
	}
	return b
}

func edit(kv ...any) func(h *hctx) []byte {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return func(h *hctx) []byte { return h.base(m) }
}

func raw(s string) func(h *hctx) []byte { return func(*hctx) []byte { return []byte(s) } }

// rawJSON is a value spliced into the config as is.
type rawJSON string

func exp(e expectation) *expectation { return &e }

var anyExp = exp(expectAny)

const tenMB = 10 << 20

// hugeBound is the time bound of the huge-range cases: they take as long as a /24 (a few
// milliseconds); in proportion to their size they would take years.
const hugeBound = 2 * time.Second

// wantAddr checks that a success returned want.
func wantAddr(want string) func(h *hctx, o outcome) string {
	return func(h *hctx, o outcome) string {
		addrs, err := parseAdd(o)
		if err != nil {
			return err.Error()
		}
		if addrs[0] != netip.MustParseAddr(want) {
			return fmt.Sprintf("got %s, want %s", addrs[0], want)
		}
		return ""
	}
}

// thenDel DELs the attachment of a successful ADD: it must succeed and leave no record.
func thenDel(h *hctx, o outcome) {
	if !o.ok() {
		return
	}
	h.x.hostileDel(h, "hostile", "")
}

var hostileCases = []hostileCase{
	// Not JSON, or not an object.
	{name: "empty stdin", conf: raw(""), codes: []uint{6}},
	{name: "not JSON", conf: raw("this is not JSON"), codes: []uint{6}},
	{name: "truncated JSON", conf: raw(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":`), codes: []uint{6}},
	{name: "a JSON array", conf: raw(`[1,2,3]`), codes: []uint{6}},
	{name: "JSON null", conf: raw(`null`), codes: []uint{6, 7}},
	{name: "invalid UTF-8 and NUL bytes", conf: raw("{\"cniVersion\":\"1.1.0\",\"name\":\"n\xff\x00\"}"), codes: []uint{6, 7}},
	// Huge.
	{name: "10 MB, truncated", conf: func(h *hctx) []byte {
		b := h.base(map[string]any{"junk": strings.Repeat("a", h.n(tenMB))})
		return b[:len(b)-len(b)/3]
	}, codes: []uint{6}},
	{name: "10 MB string in an unknown field", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"junk": strings.Repeat("x", h.n(tenMB))})
	}, want: expectOK, after: thenDel},
	{name: "10 MB of white space around the config", conf: func(h *hctx) []byte {
		pad := bytes.Repeat([]byte(" \n\t"), h.n(tenMB)/6)
		return append(append(append([]byte(nil), pad...), h.base(nil)...), pad...)
	}, want: expectOK, after: thenDel},
	{name: "300,000 ranges in one range set (10 MB)", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.subnet": nil, "ipam.ranges": manyRanges(h.n(300000), false)})
	}, want: expectOK, check: wantAddr("10.0.0.2"), after: thenDel},
	{name: "300,000 range sets, the last overlapping the first (10 MB)", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.subnet": nil, "ipam.ranges": manyRanges(h.n(300000), true)})
	}, codes: []uint{7}},
	{name: "400,000 exclusions, the first addresses of a /8 (10 MB)", conf: func(h *hctx) []byte {
		exclude := jsonList(h.n(400000), func(i int) string { return `"` + ip4(0x0a000002+i) + `"` })
		return h.base(map[string]any{"ipam.subnet": "10.0.0.0/8", "ipam.exclude": exclude})
	}, want: expectOK, host: anyExp, check: func(h *hctx, o outcome) string {
		return wantAddr(ip4(0x0a000002+h.n(400000)))(h, o)
	}, after: thenDel},
	{name: "200,000 routes (8 MB)", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.routes": jsonList(h.n(200000), func(i int) string {
			return fmt.Sprintf(`{"dst":"10.%d.%d.0/24","gw":"10.60.0.1"}`, i>>8&255, i&255)
		})})
	}, want: expectOK, after: thenDel},
	{name: "arrays nested 100,000 deep in an unknown field", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"junk": rawJSON(strings.Repeat("[", 100000) + strings.Repeat("]", 100000))})
	}, codes: []uint{6}},
	{name: "objects nested 100,000 deep in the ipam section", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.junk": rawJSON(strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000))})
	}, codes: []uint{6}},
	{name: "10 MB of '['", conf: func(h *hctx) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"n","x":` + strings.Repeat("[", h.n(tenMB)))
	}, codes: []uint{6}},
	// Wrong types.
	{name: "name is a number", conf: edit("name", 5), codes: []uint{6, 7}},
	{name: "cniVersion is a number", conf: edit("cniVersion", 1.1), codes: []uint{1, 6, 7}},
	{name: "ipam is a string", conf: edit("ipam", "local-ipam"), codes: []uint{6, 7}},
	{name: "ranges is an object", conf: edit("ipam.ranges", map[string]any{}), codes: []uint{6, 7}},
	{name: "ranges is a list of objects (not of lists)", conf: edit("ipam.subnet", nil, "ipam.ranges", []any{map[string]any{"subnet": "10.60.0.0/24"}}), codes: []uint{6, 7}},
	{name: "subnet is a number", conf: edit("ipam.subnet", 42), codes: []uint{6, 7}},
	{name: "rangeStart is a boolean", conf: edit("ipam.rangeStart", true), codes: []uint{6, 7}},
	{name: "routes is a string", conf: edit("ipam.routes", "default"), codes: []uint{6, 7}},
	{name: "dataDir is a number", conf: edit("ipam.dataDir", 1), codes: []uint{6, 7}},
	{name: "exclude is a string", conf: edit("ipam.exclude", "10.60.0.5"), codes: []uint{6, 7}, host: anyExp},
	{name: "exclude holds a number", conf: edit("ipam.exclude", []any{5}), codes: []uint{6, 7}, host: anyExp},
	{name: "freeOnReboot is a string", conf: edit("ipam.freeOnReboot", "yes"), codes: []uint{6, 7}, host: anyExp},
	{name: "unknown fields everywhere", conf: edit("x-unknown", 1, "ipam.x-unknown", map[string]any{"a": []any{1, "b"}}, "args", map[string]any{"other": 1}),
		want: expectOK, after: thenDel},
	// Invalid addresses and ranges.
	{name: "subnet 10.60.0.0/33", conf: edit("ipam.subnet", "10.60.0.0/33"), codes: []uint{7}},
	{name: "subnet with host bits 10.60.0.1/24", conf: edit("ipam.subnet", "10.60.0.1/24"), codes: []uint{7}},
	{name: "subnet ::/129", conf: edit("ipam.subnet", "::/129"), codes: []uint{7}},
	{name: "subnet foo", conf: edit("ipam.subnet", "foo"), codes: []uint{7}},
	{name: "subnet empty", conf: edit("ipam.subnet", ""), codes: []uint{7}},
	{name: "subnet without prefix length", conf: edit("ipam.subnet", "10.60.0.0"), codes: []uint{7}},
	{name: "subnet 1.2.3.4.5/24", conf: edit("ipam.subnet", "1.2.3.4.5/24"), codes: []uint{7}},
	{name: "subnet with a zone fe80::%eth0/64", conf: edit("ipam.subnet", "fe80::%eth0/64"), codes: []uint{7}},
	{name: "subnet /31", conf: edit("ipam.subnet", "10.60.0.0/31"), codes: []uint{7}},
	{name: "subnet /32", conf: edit("ipam.subnet", "10.60.0.0/32"), codes: []uint{7}},
	{name: "subnet /127", conf: edit("ipam.subnet", "fd00::/127"), codes: []uint{7}},
	{name: "subnet /128", conf: edit("ipam.subnet", "fd00::/128"), codes: []uint{7}},
	{name: "reversed range (rangeStart > rangeEnd)", conf: edit("ipam.rangeStart", "10.60.0.200", "ipam.rangeEnd", "10.60.0.100"), codes: []uint{7}},
	{name: "rangeStart outside the subnet", conf: edit("ipam.rangeStart", "10.61.0.10"), codes: []uint{7}},
	{name: "rangeEnd is not an address", conf: edit("ipam.rangeEnd", "10.60.0.x"), codes: []uint{7}},
	{name: "gateway outside the subnet", conf: edit("ipam.gateway", "10.61.0.1"), codes: []uint{7}, host: anyExp},
	{name: "overlapping range sets", conf: edit("ipam.subnet", nil, "ipam.ranges", []any{[]any{map[string]any{"subnet": "10.60.0.0/24"}}, []any{map[string]any{"subnet": "10.60.0.128/25"}}}), codes: []uint{7}},
	{name: "IPv4 and IPv6 ranges in one set", conf: edit("ipam.subnet", nil, "ipam.ranges", []any{[]any{map[string]any{"subnet": "10.60.0.0/24"}, map[string]any{"subnet": "fd00::/64"}}}), codes: []uint{7}},
	{name: "an empty range set", conf: edit("ipam.subnet", nil, "ipam.ranges", []any{[]any{}}), codes: []uint{7}},
	{name: "no range at all", conf: edit("ipam.subnet", nil), codes: []uint{7}},
	{name: "no ipam section", conf: edit("ipam", nil), codes: []uint{7}},
	{name: "exclude with host bits", conf: edit("ipam.exclude", []any{"10.60.0.1/24"}), codes: []uint{7}, host: anyExp},
	{name: "exclude that is not an address", conf: edit("ipam.exclude", []any{"ten"}), codes: []uint{7}, host: anyExp},
	// Huge ranges: must not cost memory or time in proportion to their size.
	{name: "IPv6 /8 (2000::/8)", conf: edit("ipam.subnet", "2000::/8"), want: expectOK, maxTime: hugeBound, check: wantAddr("2000::2"), after: thenDel},
	{name: "IPv6 ::/0", conf: edit("ipam.subnet", "::/0"), want: expectOK, maxTime: hugeBound, check: wantAddr("::2"), after: thenDel},
	{name: "IPv4 0.0.0.0/0", conf: edit("ipam.subnet", "0.0.0.0/0"), want: expectOK, maxTime: hugeBound, check: wantAddr("0.0.0.2"), after: thenDel},
	{name: "IPv6 /28 (2^100 addresses), its first 3/4 excluded", conf: edit("ipam.subnet", "fd00::/28", "ipam.exclude", []any{"fd00::/29", "fd00:8::/30"}),
		want: expectOK, host: anyExp, maxTime: hugeBound, check: wantAddr("fd00:c::"), after: thenDel},
	{name: "IPv6 /8 entirely excluded", conf: edit("ipam.subnet", "2000::/8", "ipam.exclude", []any{"2000::/8"}), codes: []uint{100}, host: anyExp, maxTime: hugeBound},
	{name: "STATUS of an IPv6 /8 entirely excluded", verb: "STATUS", conf: edit("ipam.subnet", "2000::/8", "ipam.exclude", []any{"2000::/8"}), codes: []uint{50}, host: anyExp, maxTime: hugeBound},
	{name: "IPv6 /8, rangeStart at its last address", conf: edit("ipam.subnet", "2000::/8", "ipam.rangeStart", "20ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
		want: expectOK, maxTime: hugeBound, check: wantAddr("20ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), after: thenDel},
	{name: "IPv6 /8 with 100,000 single-address exclusions", conf: func(h *hctx) []byte {
		var ex []string
		for i := 0; i < h.n(100000); i++ {
			ex = append(ex, fmt.Sprintf("2000::%x:%x", i>>16+1, i&0xffff))
		}
		return h.base(map[string]any{"ipam.subnet": "2000::/8", "ipam.exclude": ex})
	}, want: expectOK, host: anyExp, check: wantAddr("2000::2"), after: thenDel},
	{name: "requested IP (CNI_ARGS) deep in an IPv6 /8", conf: edit("ipam.subnet", "2000::/8"), args: "IP=20ab:cdef::1234", want: expectOK, maxTime: hugeBound,
		check: wantAddr("20ab:cdef::1234"), after: thenDel},
	// CNI_ARGS.
	{name: "CNI_ARGS IP=notanip", args: "IP=notanip", codes: []uint{4}},
	{name: "CNI_ARGS with an unknown key", args: "FOO=bar", codes: []uint{4}},
	{name: "CNI_ARGS without '='", args: "IP", codes: []uint{4}},
	{name: "CNI_ARGS ';;;='", args: ";;;=", codes: []uint{4}},
	{name: "CNI_ARGS IP outside every range", args: "IP=10.61.0.5", codes: []uint{102}},
	{name: "CNI_ARGS IP is the gateway", args: "IP=10.60.0.1", codes: []uint{102}},
	{name: "CNI_ARGS IgnoreUnknown with unknown keys", args: "IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=x", want: expectOK, after: thenDel},
	{name: "CNI_ARGS of 100 KB", args: longArgs, want: expectOK, after: thenDel},
	// The environment.
	{name: "no CNI_COMMAND", env: func(e map[string]string) { delete(e, "CNI_COMMAND") }, want: expectAbout},
	{name: "empty environment", env: func(e map[string]string) {
		for k := range e {
			delete(e, k)
		}
		e[clearEnv] = ""
	}, want: expectAbout},
	{name: "CNI_COMMAND=BOGUS", env: func(e map[string]string) { e["CNI_COMMAND"] = "BOGUS" }, codes: []uint{4}},
	{name: "no CNI_CONTAINERID", env: func(e map[string]string) { delete(e, "CNI_CONTAINERID") }, codes: []uint{3, 4}},
	{name: "no CNI_IFNAME", env: func(e map[string]string) { delete(e, "CNI_IFNAME") }, codes: []uint{4}},
	{name: "no CNI_NETNS", env: func(e map[string]string) { delete(e, "CNI_NETNS") }, codes: []uint{4}},
	{name: "no CNI_PATH", env: func(e map[string]string) { delete(e, "CNI_PATH") }, codes: []uint{4}},
	{name: "CNI_IFNAME of 16 characters", env: func(e map[string]string) { e["CNI_IFNAME"] = "abcdefghijklmnop" }},
	{name: "CNI_IFNAME with a '/'", env: func(e map[string]string) { e["CNI_IFNAME"] = "a/b" }},
	{name: "CNI_CONTAINERID ../../x", id: "../../x"},
	{name: "CNI_CONTAINERID with a newline", id: "abc\r\nxyz"},
	{name: "CNI_CONTAINERID of 100,000 characters (then CHECK and DEL)", id: longID, want: expectOK, after: func(h *hctx, o outcome) {
		h.x.hostileCheckDel(h, strings.Repeat("c", 100000), o)
	}},
	// Versions and verbs.
	{name: "cniVersion 99.0.0", conf: edit("cniVersion", "99.0.0"), codes: []uint{1}},
	{name: "cniVersion 0.1.0 with two IPv4 range sets", conf: edit("cniVersion", "0.1.0", "ipam.subnet", nil, "ipam.ranges", []any{[]any{map[string]any{"subnet": "10.60.0.0/24"}}, []any{map[string]any{"subnet": "10.62.0.0/24"}}}), codes: []uint{1}},
	{name: "CHECK with config version 0.3.1", verb: "CHECK", conf: edit("cniVersion", "0.3.1"), codes: []uint{1}},
	{name: "CHECK with a prevResult that is a string", verb: "CHECK", conf: edit("prevResult", "x"), codes: []uint{6}},
	{name: "CHECK with a prevResult holding a bad address", verb: "CHECK", conf: edit("prevResult", map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.60.0.999/24"}}}), codes: []uint{6}},
	{name: "GC without cni.dev/valid-attachments (nothing is valid)", verb: "GC", want: expectOK},
	{name: "GC with cni.dev/valid-attachments null (nothing is valid)", verb: "GC", conf: edit("cni.dev/valid-attachments", rawJSON("null")), want: expectOK},
	{name: "GC with cni.dev/valid-attachments a string", verb: "GC", conf: edit("cni.dev/valid-attachments", "all"), codes: []uint{6, 7}, host: anyExp},
	{name: "GC with cni.dev/valid-attachments an object", verb: "GC", conf: edit("cni.dev/valid-attachments", map[string]any{}), codes: []uint{6, 7}, host: anyExp},
	{name: "GC with 200,000 valid attachments (9 MB)", verb: "GC", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"cni.dev/valid-attachments": jsonList(h.n(200000), func(i int) string {
			return fmt.Sprintf(`{"containerID":"container-%08d","ifname":"eth0"}`, i)
		})})
	}, want: expectOK},
	{name: "STATUS with config version 1.0.0", verb: "STATUS", conf: edit("cniVersion", "1.0.0"), codes: []uint{1}, host: anyExp},
	// Files the config points at.
	// The README does not say which code a resolvConf that is not a readable file gets: 5
	// (I/O failure) and 7 (invalid network config) are both fair.
	{name: "resolvConf /dev/zero", conf: edit("ipam.resolvConf", "/dev/zero"), codes: []uint{5, 7}},
	{name: "resolvConf /dev/urandom", conf: edit("ipam.resolvConf", "/dev/urandom"), codes: []uint{5, 7}},
	{name: "resolvConf is a FIFO nobody writes", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.resolvConf": filepath.Join(h.scratch, "fifo")})
	}, codes: []uint{5, 7}},
	{name: "resolvConf is a directory", conf: edit("ipam.resolvConf", "/"), codes: []uint{5, 7}},
	{name: "resolvConf does not exist", conf: edit("ipam.resolvConf", "/nonexistent/resolv.conf"), codes: []uint{5}},
	{name: "resolvConf of 10 MB (388,000 search lines)", conf: func(h *hctx) []byte {
		return h.base(map[string]any{"ipam.resolvConf": filepath.Join(h.scratch, "resolv.conf")})
	}, want: expectOK, files: resolvSize, after: thenDel},
	{name: "dataDir with a NUL byte", conf: edit("ipam.dataDir", "/tmp/a\x00b")},
	{name: "network name of 300 characters", conf: edit("name", strings.Repeat("n", 300))},
	{name: "network name ../escape", conf: edit("name", "../escape"), codes: []uint{7}},
}

// manyRanges is n /30 ranges of 10.0.0.0/8, as one range set, or as n sets (the last
// overlapping the first).
func manyRanges(n int, sets bool) rawJSON {
	rng := func(i int) string {
		a := 0x0a000000 + 4*i
		if sets && i == n-1 {
			a = 0x0a000000
		}
		return `{"subnet":"` + ip4(a) + `/30"}`
	}
	if !sets {
		return "[" + jsonList(n, rng) + "]"
	}
	return jsonList(n, func(i int) string { return "[" + rng(i) + "]" })
}

// jsonList is a JSON array of n elements, elem(i) the i-th, encoded.
func jsonList(n int, elem func(i int) string) rawJSON {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(elem(i))
	}
	b.WriteByte(']')
	return rawJSON(b.String())
}

// ip4 is the dotted form of an IPv4 address given as a number.
func ip4(a int) string { return fmt.Sprintf("%d.%d.%d.%d", a>>24, a>>16&255, a>>8&255, a&255) }

func hostileScenario(x *job) error {
	h := &hctx{x: x, dataDir: filepath.Join(x.dir, "data"), scratch: filepath.Join(x.dir, "files")}
	if err := mkdirAll(h.scratch); err != nil {
		return err
	}
	if err := unix.Mkfifo(filepath.Join(h.scratch, "fifo"), 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(h.scratch, "resolv.conf"), bytes.Repeat([]byte("search a.example b.example\n"), h.n(tenMB)/27)); err != nil {
		return err
	}
	if err := mkdirAll(h.dataDir); err != nil {
		return err
	}
	before, err := treeSnapshot(x.dir, h.dataDir)
	if err != nil {
		return err
	}
	var failed []string
	var maxRSS int64
	var slowest time.Duration
	var slowName, bigName string
	for i, c := range hostileCases {
		if x.Err() != nil {
			return x.Err()
		}
		h.net, h.name = fmt.Sprintf("hostile%02d", i), c.name
		nv := x.res.violationCount()
		o := x.hostileCase(h, c)
		if x.res.violationCount() > nv {
			failed = append(failed, c.name)
		}
		x.fault(1)
		if o.maxrss > maxRSS {
			maxRSS, bigName = o.maxrss, c.name
		}
		if o.dur > slowest {
			slowest, slowName = o.dur, c.name
		}
	}
	after, err := treeSnapshot(x.dir, h.dataDir)
	if err != nil {
		return err
	}
	for _, d := range diffTrees(before, after) {
		x.violate("outside the data dir, %s", d)
	}
	if x.short {
		x.note("short run: huge inputs a fifth of their size")
	}
	if len(failed) > 0 {
		x.note("violations in %d cases: %s", len(failed), strings.Join(failed, "; "))
	}
	x.note("%d inputs; slowest %v (%s); largest peak RSS %d MiB (%s)", len(hostileCases), slowest.Round(time.Millisecond), slowName, maxRSS>>10, bigName)
	return nil
}

// hostileCase runs one case and judges it.
func (x *job) hostileCase(h *hctx, c hostileCase) outcome {
	verb := c.verb
	if verb == "" {
		verb = "ADD"
	}
	conf := h.base(nil)
	if c.conf != nil {
		conf = c.conf(h)
	}
	id := c.id
	switch id {
	case "":
		id = "hostile"
	case longID:
		id = strings.Repeat("c", 100000)
	}
	args := c.args
	if args == longArgs {
		args = "IgnoreUnknown=1" + strings.Repeat(";K=v", 25000)
	}
	files := c.files
	if files == resolvSize {
		files = h.n(tenMB)
	}
	size := len(conf) + len(args) + len(id) + files
	maxTime := c.maxTime
	switch {
	case maxTime != 0:
	case size >= 1<<20:
		maxTime = 10 * time.Second // a huge input: decoding alone takes a second
	case x.short:
		maxTime = 2 * time.Second // small inputs answer in milliseconds
	default:
		maxTime = 5 * time.Second
	}
	limitRSS := int64(64<<10) + 48*int64(size)/1024
	slack := 5 * time.Second
	if x.short {
		slack = time.Second / 2
	}
	o := x.call(call{cmd: verb, id: id, stdin: conf, args: args, editEnv: c.env, rss: true, timeout: maxTime + slack})
	want := c.want
	if c.host != nil && !x.isLocal() {
		want = *c.host
	}
	label := fmt.Sprintf("%s (%s)", c.name, verb)
	var problems []string
	if o.dur > maxTime {
		problems = append(problems, fmt.Sprintf("took %v (bound %v)", o.dur.Round(time.Millisecond), maxTime))
	}
	if o.maxrss > limitRSS {
		problems = append(problems, fmt.Sprintf("peak RSS %d MiB (bound %d MiB)", o.maxrss>>10, limitRSS>>10))
	}
	if looksLikePanic(o.stderr) {
		problems = append(problems, "a panic trace on stderr: "+clip(o.stderr, 160))
	}
	result := errSummary(o)
	switch want {
	case expectOK:
		if !o.ok() {
			problems = append(problems, "want success, got "+describe(o))
		} else if x.isLocal() && c.check != nil {
			if p := c.check(h, o); p != "" {
				problems = append(problems, p)
			}
		}
	case expectAbout:
		if o.exit != 0 || o.timedOut {
			problems = append(problems, "want exit 0 (no command: the plugin's about text), got "+describe(o))
		}
		result = "exit 0"
	case expectError:
		if o.ok() {
			problems = append(problems, "want a CNI error, got success")
			break
		}
		e, bad := parseError(o)
		if bad != "" {
			problems = append(problems, bad)
		} else if x.isLocal() && len(c.codes) > 0 && !containsAddr(c.codes, e.Code) {
			problems = append(problems, fmt.Sprintf("want code %v (README), got %s", c.codes, errSummary(o)))
		}
	case expectAny:
		if !o.ok() {
			if _, bad := parseError(o); bad != "" {
				problems = append(problems, bad)
			}
		}
	}
	if len(problems) > 0 {
		x.violate("%s: %s", label, strings.Join(problems, "; "))
	}
	x.detail("%s: %s in %v, peak RSS %.1f MiB", label, result, o.dur.Round(100*time.Microsecond), float64(o.maxrss)/1024)
	if c.after != nil && len(problems) == 0 {
		c.after(h, o)
	}
	return o
}

// hostileDel DELs an attachment a hostile case allocated: it must succeed and leave no
// record naming it.
func (x *job) hostileDel(h *hctx, id, ifname string) {
	if ifname == "" {
		ifname = "eth0"
	}
	n := network{name: h.net, dataDir: h.dataDir}
	o := x.call(call{cmd: "DEL", id: id, ifname: ifname, stdin: h.base(nil), timeout: 10 * time.Second})
	if !o.ok() {
		x.violate("%s: DEL after the ADD failed: %s", h.name, describe(o))
		return
	}
	for _, r := range x.readRecords(n.dir()) {
		if full, _ := readNoFollow(filepath.Join(n.dir(), r.name), len(id)+64); string(full) == id+"\r\n"+ifname {
			x.violate("%s: DEL of %.20s.../%s succeeded but record %s naming it remains: a leaked address", h.name, id, ifname, filepath.Join(n.dir(), r.name))
		}
	}
}

// hostileCheckDel: CHECK with the ADD's result must pass, then DEL must free the record.
func (x *job) hostileCheckDel(h *hctx, id string, add outcome) {
	if !add.ok() {
		return
	}
	var conf map[string]any
	_ = json.Unmarshal(h.base(nil), &conf)
	conf["prevResult"] = json.RawMessage(add.stdout)
	b, _ := json.Marshal(conf)
	o := x.call(call{cmd: "CHECK", id: id, stdin: b, timeout: 10 * time.Second})
	if !o.ok() {
		x.violate("%s: CHECK with the ADD's result failed: %s", h.name, clip([]byte(describe(o)), 200))
	}
	x.hostileDel(h, id, "")
}

// Placeholders for the long strings, built when the case runs: this binary is also the
// RSS middleman, whose own peak is the floor of every measurement.
const (
	longID   = "<100,000 characters>"
	longArgs = "<100 KB>"
)
