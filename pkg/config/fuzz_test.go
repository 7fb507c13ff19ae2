package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	hl "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/local-ipam/local-ipam/pkg/config"
)

// Inputs past these sizes are skipped: the properties do not depend on size, and small
// inputs keep every execution fast.
const (
	maxStdin   = 16 << 10
	maxCNIArgs = 1 << 10
)

// addSeeds adds the differential corpus of config_test.go, each with and without the
// name and version filled in; testdata/fuzz/<target>/ holds more (README configs,
// runtimeConfig, exclusions, odd JSON).
func addSeeds(f *testing.F) {
	for _, c := range corpus {
		f.Add(full(c.conf), c.args)
		f.Add([]byte(c.conf), c.args)
	}
}

// FuzzLoad: Load never panics; a refusal is a *types.Error with a spec code (never 999),
// code 6 exactly when stdin is not JSON; an accepted config is valid throughout (range
// sets, exclusions, requested addresses, data directory), and Load is deterministic.
func FuzzLoad(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		if len(stdin) > maxStdin || len(cniArgs) > maxCNIArgs {
			return
		}
		c, err := config.Load(stdin, cniArgs)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v (%T) is not a *types.Error", err, err)
			}
			switch te.Code {
			case 1, 2, 3, 4, 5, 6, 7:
			default:
				t.Fatalf("error %v has code %d", err, te.Code)
			}
			if (te.Code == types.ErrDecodingFailure) != !json.Valid(stdin) {
				t.Fatalf("code %d (%v), but stdin is valid JSON: %v", te.Code, err, json.Valid(stdin))
			}
			if te.Code == types.ErrInvalidEnvironmentVariables && cniArgs == "" {
				t.Fatalf("code 4 (%v) without CNI_ARGS", err)
			}
			if te.Msg == "" {
				t.Fatalf("error without a message: %#v", te)
			}
			return
		}
		checkConfig(t, c)
		c2, err := config.Load(stdin, cniArgs)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("Load is not deterministic:\n%+v\n%+v (%v)", c, c2, err)
		}
	})
}

var (
	mappedFirst = netip.MustParseAddr("::ffff:0.0.0.0")
	mappedLast  = netip.MustParseAddr("::ffff:255.255.255.255")
)

func big128(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func plainAddr(a netip.Addr) bool { return a.IsValid() && a.Zone() == "" && !a.Is4In6() }

// checkConfig asserts what an accepted config promises its users.
func checkConfig(t *testing.T, c *config.Config) {
	t.Helper()
	if c.DataDir == "" {
		t.Fatalf("empty DataDir")
	}
	if len(c.Pool.Sets) == 0 {
		t.Fatalf("no range sets")
	}
	numV4, numV6 := 0, 0
	type iv struct {
		bits   int
		lo, hi *big.Int
	}
	var all [][]iv
	for i, set := range c.Pool.Sets {
		if len(set) == 0 {
			t.Fatalf("range set %d is empty", i)
		}
		fam := set[0].Start.BitLen()
		if set.Is4() {
			numV4++
		} else {
			numV6++
		}
		var ivs []iv
		for j, r := range set {
			where := fmt.Sprintf("set %d range %d (%s %s-%s gw %s)", i, j, r.Subnet, r.Start, r.End, r.Gateway)
			for _, a := range []netip.Addr{r.Start, r.End, r.Gateway, r.Subnet.Addr()} {
				if !a.IsValid() || a.Zone() != "" || a.BitLen() != fam {
					t.Fatalf("%s: address %s not of the set's family", where, a)
				}
			}
			if r.Subnet.Addr().Is4In6() || r.Gateway.Is4In6() {
				t.Fatalf("%s: an IPv4-mapped subnet or gateway", where)
			}
			if !r.Subnet.IsValid() || r.Subnet.Masked() != r.Subnet || r.Subnet.Bits() > fam-2 {
				t.Fatalf("%s: bad subnet", where)
			}
			for _, a := range []netip.Addr{r.Start, r.End, r.Gateway} {
				if !r.Subnet.Contains(a) {
					t.Fatalf("%s: %s outside the subnet", where, a)
				}
			}
			if big128(r.Start).Cmp(big128(r.End)) > 0 {
				t.Fatalf("%s: start after end", where)
			}
			// A v6 range that reaches into ::ffff:0:0/96 must never hand those addresses
			// out: the store names a record by the address's text, and isRecordName
			// (rightly, for host-local's directories) does not take "::ffff:a.b.c.d" for
			// a record, so such an allocation would vanish from the index at its next
			// rebuild. They must all be excluded.
			if fam == 128 && big128(r.Start).Cmp(big128(mappedLast)) <= 0 && big128(r.End).Cmp(big128(mappedFirst)) >= 0 {
				if iv, ok := c.Pool.Exclude.Covering(mappedFirst); !ok || iv.To.Compare(mappedLast) < 0 {
					t.Fatalf("%s: an IPv6 range holding IPv4-mapped addresses (%s-%s) not excluded: %v", where, mappedFirst, mappedLast, c.Pool.Exclude)
				}
			}
			ivs = append(ivs, iv{fam, big128(r.Start), big128(r.End)})
		}
		all = append(all, ivs)
	}
	overlap := func(a, b iv) bool { return a.bits == b.bits && a.lo.Cmp(b.hi) <= 0 && b.lo.Cmp(a.hi) <= 0 }
	for i := range all {
		for j := range all {
			for x, a := range all[i] {
				for y, b := range all[j] {
					if (i != j || x != y) && overlap(a, b) {
						t.Fatalf("ranges %d.%d and %d.%d overlap: %v", i, x, j, y, c.Pool.Sets)
					}
				}
			}
		}
	}
	if numV4 > 1 || numV6 > 1 {
		if ok, _ := version.GreaterThanOrEqualTo(c.CNIVersion, "0.3.0"); !ok {
			t.Fatalf("%d v4 and %d v6 sets with version %q", numV4, numV6, c.CNIVersion)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, a := range c.Requested {
		if !plainAddr(a) || seen[a] {
			t.Fatalf("requested %v: bad or repeated %s", c.Requested, a)
		}
		seen[a] = true
	}
	e := c.Pool.Exclude
	for i, x := range e {
		// (an interval may hold IPv4-mapped IPv6 addresses: ::ffff:0:0/96 is excluded)
		if !x.From.IsValid() || x.From.Zone() != "" || !x.To.IsValid() || x.To.Zone() != "" ||
			x.From.BitLen() != x.To.BitLen() || x.From.Compare(x.To) > 0 {
			t.Fatalf("exclusions %v: bad interval %d", e, i)
		}
		if i > 0 && (e[i-1].To.Compare(x.From) >= 0 || e[i-1].To.Next() == x.From) {
			t.Fatalf("exclusions %v: %d and %d not sorted, disjoint and merged", e, i-1, i)
		}
	}
}

// FuzzAgreesWithHostLocal: every config that host-local v1.10.0's own loader accepts,
// local-ipam accepts too, with the same range sets, requested addresses, routes and data
// directory; except for README's deliberate differences:
//   - a bad "exclude" (and, likewise, a bad "freeOnReboot": local-ipam's own fields,
//     which host-local ignores) is refused;
//   - CNI_ARGS IP= is not used when the config's args or runtimeConfig request addresses;
//   - requested addresses are de-duplicated (host-local's allocator does the same);
//   - a key repeated with object or array values: encoding/json merges the values
//     (decoding the second into the first's struct or slice elements), local-ipam takes
//     the last whole.
//
// Configs that host-local refuses and local-ipam accepts are not failures here.
func FuzzAgreesWithHostLocal(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		if len(stdin) > maxStdin || len(cniArgs) > maxCNIArgs {
			return
		}
		want, herr := hostLocalLoad(stdin, cniArgs)
		if herr != nil {
			return
		}
		got, err := config.Load(stdin, cniArgs)
		if hasDuplicateObjectKeys(stdin) {
			return // README, deliberate differences: a repeated key's last value is taken whole
		}
		if err != nil {
			msg := err.Error()
			if strings.HasPrefix(msg, "invalid exclude entry ") ||
				strings.HasPrefix(msg, "invalid network config: ipam.exclude: ") ||
				strings.HasPrefix(msg, "invalid network config: ipam.freeOnReboot: ") {
				return // README: local-ipam's own fields must be valid
			}
			t.Fatalf("host-local accepts, local-ipam refuses: %v\nstdin %q\nCNI_ARGS %q", err, stdin, cniArgs)
		}
		if hs, ls := hostLocalSets(want), localSets(got); !slices.Equal(hs, ls) {
			t.Fatalf("sets differ:\nhost-local %q\nlocal-ipam %q\nstdin %q", hs, ls, stdin)
		}
		// Requested: host-local puts CNI_ARGS' IP first and appends the config's; local-ipam
		// uses CNI_ARGS' only when the config asks for none.
		var env hl.IPAMEnvArgs
		_ = types.LoadArgs(cniArgs, &env)
		hreq := want.IPArgs
		if env.IP.ToIP() != nil && len(hreq) > 1 {
			hreq = hreq[1:]
		}
		var h, l []string
		for _, ip := range hreq {
			a, _ := netip.AddrFromSlice(ip)
			h = append(h, a.Unmap().String())
		}
		for _, a := range got.Requested {
			l = append(l, a.String())
		}
		slices.Sort(h)
		h = slices.Compact(h)
		slices.Sort(l)
		if !slices.Equal(h, l) {
			t.Fatalf("requested: host-local %v, local-ipam %v\nstdin %q\nCNI_ARGS %q", h, l, stdin, cniArgs)
		}
		if d := routesAndDataDir(want, got); d != "" {
			t.Fatalf("%s\nstdin %q", d, stdin)
		}
	})
}

// routesAndDataDir says how local-ipam's routes and data directory differ from
// host-local's ("" when they do not).
func routesAndDataDir(want *hl.IPAMConfig, got *config.Config) string {
	if fmt.Sprint(want.Routes) != fmt.Sprint(got.Routes) {
		return fmt.Sprintf("routes: host-local %v, local-ipam %v", want.Routes, got.Routes)
	}
	wantDir := want.DataDir
	if wantDir == "" {
		wantDir = config.DefaultDataDir
	}
	if got.DataDir != wantDir {
		return fmt.Sprintf("dataDir %q, want %q", got.DataDir, wantDir)
	}
	return ""
}

// hostLocalLoad runs host-local's loader; a panic in it (it has some, on null list
// entries) counts as a refusal.
func hostLocalLoad(stdin []byte, cniArgs string) (c *hl.IPAMConfig, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("host-local panicked: %v", r)
		}
	}()
	c, _, err = hl.LoadIPAMConfig(stdin, cniArgs)
	return c, err
}

func hostLocalSets(c *hl.IPAMConfig) []string {
	var out []string
	for _, set := range c.Ranges {
		var parts []string
		for _, r := range set {
			// the addresses as numbers: net.IP prints an IPv4-mapped IPv6 address (the
			// last address of ::/80, say) as IPv4, netip does not
			parts = append(parts, fmt.Sprintf("%s %s-%s gw %s", subnetString(r.Subnet.IP, r.Subnet.Mask), asAddr(r.RangeStart), asAddr(r.RangeEnd), asAddr(r.Gateway)))
		}
		out = append(out, strings.Join(parts, ","))
	}
	return out
}

func asAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func localSets(c *config.Config) []string {
	var out []string
	for _, set := range c.Pool.Sets {
		var parts []string
		for _, r := range set {
			parts = append(parts, fmt.Sprintf("%s %s-%s gw %s", r.Subnet, r.Start, r.End, r.Gateway))
		}
		out = append(out, strings.Join(parts, ","))
	}
	return out
}

// hasDuplicateObjectKeys reports whether some object of the JSON text has two members
// whose keys fold to the same and whose values are both objects or arrays (which
// encoding/json merges: the second is decoded into the first's struct or slice elements).
func hasDuplicateObjectKeys(b []byte) bool {
	var walk func(raw json.RawMessage, depth int) bool
	walk = func(raw json.RawMessage, depth int) bool {
		if depth > 100 {
			return false
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			var seen []string // keys of object members so far
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return false
				}
				var v json.RawMessage
				if err := dec.Decode(&v); err != nil {
					return false
				}
				k, _ := kt.(string)
				if v := bytes.TrimSpace(v); len(v) > 0 && (v[0] == '{' || v[0] == '[') {
					for _, s := range seen {
						if strings.EqualFold(s, k) {
							return true
						}
					}
					seen = append(seen, k)
				}
				if walk(v, depth+1) {
					return true
				}
			}
		case json.Delim('['):
			for dec.More() {
				var v json.RawMessage
				if err := dec.Decode(&v); err != nil {
					return false
				}
				if walk(v, depth+1) {
					return true
				}
			}
		}
		return false
	}
	return walk(b, 0)
}
