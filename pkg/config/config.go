// Package config turns a CNI network config (stdin) plus CNI_ARGS into a validated
// local-ipam configuration. It accepts every host-local field with host-local's defaults,
// and answers bad input with a *types.Error that carries the spec's code.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// DefaultDataDir is host-local's default, so that a switch of "type" keeps the store.
const DefaultDataDir = "/var/lib/cni/networks"

// Config is everything one call needs, validated.
type Config struct {
	Name       string
	CNIVersion string
	// PluginType is the top-level "type": "local-ipam" when local-ipam runs as a plugin of
	// a list itself (see Chained), the main plugin's type when it runs as its IPAM.
	PluginType string
	DataDir    string
	// Store is where reservations are kept: the disk store under DataDir by default.
	Store StoreConf
	// Pool holds the range sets in allocation order (runtimeConfig.ipRanges, then the
	// legacy single range, then "ranges": host-local's order) and the exclusions.
	Pool ranges.Pool
	// FreeOnReboot frees, at the first call after the machine rebooted, every address
	// allocated during an earlier boot.
	FreeOnReboot bool
	// Requested are the addresses asked for, at most one per set, de-duplicated.
	Requested  []netip.Addr
	Routes     []*types.Route
	ResolvConf string

	// ValidAttachments is the GC list; an absent or null list is empty (nothing is valid).
	ValidAttachments []types.GCAttachment
	// AttachmentsErr: a GC list that could not be read (GC refuses the config with it).
	AttachmentsErr error
	// RawPrevResult is the prevResult of CHECK (and DEL), as sent.
	RawPrevResult json.RawMessage
	// Typos are the keys of ipam, its ranges and its store that look like misspellings of
	// keys local-ipam reads: accepted and ignored, as host-local ignores unknown keys, but
	// worth a line on stderr.
	Typos []Finding
}

// Chained reports whether local-ipam runs as a plugin of a list after a main plugin that
// already called it as IPAM (the top-level type names local-ipam itself, self being the
// name it is installed under, and there is a prevResult). There it only passes ADD's
// result on, and serves GC and STATUS, which main plugins such as bridge do not forward
// to their IPAM.
func (c *Config) Chained(self string) bool {
	return (c.PluginType == "local-ipam" || c.PluginType == self) &&
		len(c.RawPrevResult) > 0 && string(c.RawPrevResult) != "null"
}

// rangeJSON mirrors host-local's Range; strings so that we parse with netip and give each
// bad value a message naming it.
type rangeJSON struct {
	Subnet, RangeStart, RangeEnd, Gateway string
}

// ipamJSON is the ipam section (decode.go reads it).
type ipamJSON struct {
	rangeJSON
	Type       string
	Routes     []*types.Route
	DataDir    string
	ResolvConf string
	Ranges     [][]rangeJSON
	// local-ipam's own fields.
	Exclude      []string
	FreeOnReboot bool
	Store        *storeJSON
}

// netJSON is the part of the network config local-ipam reads.
type netJSON struct {
	Name, Type, CNIVersion string
	IPAM                   *ipamJSON
	RuntimeConfig          struct {
		IPRanges [][]rangeJSON
		IPs      []string
	}
	ArgsIPs           []string // args.cni.ips
	ValidAttachments  *[]types.GCAttachment
	LegacyAttachments *[]types.GCAttachment
	AttachmentsErr    error
	PrevResult        json.RawMessage
	// Typos are the keys of ipam, its ranges and its store that look like misspellings
	// of keys local-ipam reads.
	Typos []Finding
}

// envArgs is CNI_ARGS as host-local reads it: IP=, plus IgnoreUnknown.
type envArgs struct {
	types.CommonArgs
	IP argIP
}

type argIP struct{ addr netip.Addr }

func (a *argIP) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		a.addr = netip.Addr{} // "IP=" clears an earlier IP=, as in host-local
		return nil
	}
	addr, err := parseRequested(string(b))
	if err != nil {
		return err
	}
	a.addr = addr
	return nil
}

// parseRequested accepts "ip" or "ip/prefix" (the prefix is ignored), like host-local's
// ip.ParseIP.
func parseRequested(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		ip, _, err := net.ParseCIDR(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("invalid IP address %s", s)
		}
		a, _ := netip.AddrFromSlice(ip)
		return a.Unmap(), nil
	}
	a, err := ranges.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %s", s)
	}
	return a, nil
}

func invalid(format string, a ...any) error {
	return cnierr.New(cnierr.InvalidConfig, "", format, a...)
}

// Load parses and validates stdin and CNI_ARGS.
func Load(stdin []byte, cniArgs string) (*Config, error) {
	n, err := decodeNet(stdin)
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, cnierr.New(cnierr.DecodingFailure, err.Error(), "failed to decode network config")
		}
		return nil, invalid("invalid network config: %v", err)
	}
	if n.IPAM == nil {
		return nil, invalid("IPAM config missing 'ipam' key")
	}
	c := &Config{
		Name:          n.Name,
		CNIVersion:    n.CNIVersion,
		PluginType:    n.Type,
		DataDir:       n.IPAM.DataDir,
		Routes:        n.IPAM.Routes,
		ResolvConf:    n.IPAM.ResolvConf,
		RawPrevResult: n.PrevResult,
		FreeOnReboot:  n.IPAM.FreeOnReboot,
		Typos:         n.Typos,
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Store, err = validStore(n.IPAM.Store); err != nil {
		return nil, err
	}
	if c.Store.Type == StoreEtcd && len(c.Name) > 255 {
		// A key component, bounded as the disk store's directory name is.
		return nil, invalid("network name is %d bytes long; at most 255 with the etcd store", len(c.Name))
	}
	c.AttachmentsErr = n.AttachmentsErr
	switch {
	case n.ValidAttachments != nil:
		c.ValidAttachments = *n.ValidAttachments
	case n.LegacyAttachments != nil:
		c.ValidAttachments = *n.LegacyAttachments
	}

	if err := c.loadRequested(n, cniArgs); err != nil {
		return nil, err
	}

	// host-local's order: runtime ranges, then the legacy single range, then "ranges".
	raw := append([][]rangeJSON{}, n.RuntimeConfig.IPRanges...)
	if n.IPAM.Subnet != "" {
		raw = append(raw, []rangeJSON{n.IPAM.rangeJSON})
	}
	raw = append(raw, n.IPAM.Ranges...)
	if len(raw) == 0 {
		return nil, invalid("no IP ranges specified")
	}
	numV4, numV6 := 0, 0
	for i, rs := range raw {
		set, err := parseSet(rs)
		if err != nil {
			return nil, invalid("invalid range set %d: %s", i, err)
		}
		if set.Is4() {
			numV4++
		} else {
			numV6++
		}
		c.Pool.Sets = append(c.Pool.Sets, set)
	}
	if numV4 > 1 || numV6 > 1 {
		if ok, _ := version.GreaterThanOrEqualTo(n.CNIVersion, "0.3.0"); !ok {
			return nil, cnierr.New(cnierr.IncompatibleVersion, "",
				"CNI version %v does not support more than 1 address per family", n.CNIVersion)
		}
	}
	// Sets must not overlap: one sorted pass over all their ranges.
	var all []ranges.Range
	var setOf []int
	for i, set := range c.Pool.Sets {
		for _, r := range set {
			all = append(all, r)
			setOf = append(setOf, i)
		}
	}
	if a, b, ok := ranges.FirstOverlap(len(all), func(k int) ranges.Range { return all[k] }); ok {
		return nil, invalid("range set %d overlaps with %d", min(setOf[a], setOf[b]), max(setOf[a], setOf[b]))
	}
	var excl []netip.Prefix
	for _, e := range n.IPAM.Exclude {
		p, err := parseExclude(e)
		if err != nil {
			return nil, invalid("invalid exclude entry %q: %v", e, err)
		}
		excl = append(excl, p)
	}
	// Never hand out IPv4-mapped addresses from an IPv6 range (::/80, say).
	c.Pool.Exclude = ranges.NewExclusions(append(excl, ranges.Mapped))
	return c, nil
}

// parseExclude accepts an address or a CIDR without host bits.
func parseExclude(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := ranges.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := ranges.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set (did you mean %s?)", p.Masked())
	}
	return p, nil
}

// loadRequested gathers requested addresses. Unlike host-local, which merges CNI_ARGS with
// the config's args, the config's args (and runtimeConfig) take precedence over CNI_ARGS,
// as CONVENTIONS.md asks: CNI_ARGS IP= is used only when the config requests nothing.
func (c *Config) loadRequested(n *netJSON, cniArgs string) error {
	var e envArgs
	if cniArgs != "" {
		if err := types.LoadArgs(cniArgs, &e); err != nil {
			return cnierr.New(cnierr.InvalidEnvironment, "", "invalid CNI_ARGS: %v", err)
		}
	}
	fromConf := append([]string(nil), n.ArgsIPs...)
	fromConf = append(fromConf, n.RuntimeConfig.IPs...)
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if !seen[a] {
			seen[a] = true
			c.Requested = append(c.Requested, a)
		}
	}
	for _, s := range fromConf {
		a, err := parseRequested(s)
		if err != nil {
			return invalid("cannot understand ip: %v", err)
		}
		add(a)
	}
	if len(fromConf) == 0 && e.IP.addr.IsValid() {
		add(e.IP.addr)
	}
	return nil
}

func parseSet(rs []rangeJSON) (ranges.Set, error) {
	out := make([]ranges.Range, 0, len(rs))
	for _, r := range rs {
		rr, err := parseRange(r)
		if err != nil {
			return nil, err
		}
		out = append(out, rr)
	}
	return ranges.NewSet(out)
}

func parseRange(r rangeJSON) (ranges.Range, error) {
	if r.Subnet == "" {
		return ranges.Range{}, fmt.Errorf("missing subnet")
	}
	subnet, err := ranges.ParsePrefix(r.Subnet)
	if err != nil {
		return ranges.Range{}, err
	}
	var start, end, gw netip.Addr
	for _, f := range []struct {
		name, val string
		dst       *netip.Addr
	}{{"rangeStart", r.RangeStart, &start}, {"rangeEnd", r.RangeEnd, &end}, {"gateway", r.Gateway, &gw}} {
		if f.val == "" {
			continue
		}
		a, err := ranges.ParseAddr(f.val)
		if err != nil {
			return ranges.Range{}, fmt.Errorf("%s: %v", f.name, err)
		}
		*f.dst = a
	}
	return ranges.New(subnet, start, end, gw)
}
