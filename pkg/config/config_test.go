package config_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	hl "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
)

// corpus: ipam sections (and a few whole-config tweaks) that host-local accepts or refuses.
var corpus = []struct {
	name string
	conf string // the whole network config
	args string // CNI_ARGS
}{
	{"legacy subnet", `{"ipam":{"subnet":"10.1.2.0/24"}}`, ""},
	{"legacy with bounds", `{"ipam":{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"}}`, ""},
	{"ipv6 defaults", `{"ipam":{"subnet":"2001:db8:1::/64"}}`, ""},
	{"ranges dual stack", `{"ipam":{"ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/120","gateway":"fd00::fe"}]]}}`, ""},
	{"two ranges in a set", `{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.2.0.0/24","rangeStart":"10.2.0.100"}]]}}`, ""},
	{"legacy plus ranges", `{"ipam":{"subnet":"10.9.0.0/24","ranges":[[{"subnet":"fd00::/64"}]]}}`, ""},
	{"runtime ipRanges prepended", `{"ipam":{"subnet":"10.9.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"10.8.0.0/24"}]]}}`, ""},
	{"/30 is allowed", `{"ipam":{"subnet":"10.1.2.0/30"}}`, ""},
	{"/31 too small", `{"ipam":{"subnet":"10.1.2.0/31"}}`, ""},
	{"/32 too small", `{"ipam":{"subnet":"10.1.2.3/32"}}`, ""},
	{"/127 too small", `{"ipam":{"subnet":"fd00::/127"}}`, ""},
	{"host bits", `{"ipam":{"subnet":"10.1.2.3/24"}}`, ""},
	{"bad cidr", `{"ipam":{"subnet":"10.1.2.0/33"}}`, ""},
	{"not an ip", `{"ipam":{"subnet":"10.1.2.0/24","rangeStart":"banana"}}`, ""},
	{"start outside", `{"ipam":{"subnet":"10.1.2.0/24","rangeStart":"10.1.3.1"}}`, ""},
	{"end outside", `{"ipam":{"subnet":"10.1.2.0/24","rangeEnd":"10.1.3.1"}}`, ""},
	{"reversed", `{"ipam":{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.50","rangeEnd":"10.1.2.40"}}`, ""},
	{"gateway outside", `{"ipam":{"subnet":"10.1.2.0/24","gateway":"10.1.3.1"}}`, ""},
	{"gateway other family", `{"ipam":{"subnet":"10.1.2.0/24","gateway":"fd00::1"}}`, ""},
	{"mixed families in a set", `{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]}}`, ""},
	{"overlap in a set", `{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.1.0.0/25"}]]}}`, ""},
	{"overlapping sets", `{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.128/25"}]]}}`, ""},
	{"empty set", `{"ipam":{"ranges":[[]]}}`, ""},
	{"no ranges", `{"ipam":{"type":"local-ipam"}}`, ""},
	{"no ipam", `{"name":"x"}`, ""},
	{"two v4 sets on 0.2.0", `{"cniVersion":"0.2.0","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`, ""},
	{"two v4 sets on 0.3.1", `{"cniVersion":"0.3.1","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`, ""},
	{"CNI_ARGS IP", `{"ipam":{"subnet":"10.1.2.0/24"}}`, "IP=10.1.2.77"},
	{"CNI_ARGS unknown key", `{"ipam":{"subnet":"10.1.2.0/24"}}`, "FOO=bar"},
	{"CNI_ARGS ignore unknown", `{"ipam":{"subnet":"10.1.2.0/24"}}`, "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.9"},
	{"CNI_ARGS bad IP", `{"ipam":{"subnet":"10.1.2.0/24"}}`, "IP=nope"},
	{"CNI_ARGS malformed", `{"ipam":{"subnet":"10.1.2.0/24"}}`, "IP"},
	{"args ips", `{"ipam":{"subnet":"10.1.2.0/24"},"args":{"cni":{"ips":["10.1.2.5/24","fd00::5"]}}}`, ""},
	{"runtime ips", `{"ipam":{"subnet":"10.1.2.0/24"},"runtimeConfig":{"ips":["10.1.2.6"]}}`, ""},
	{"bad args ip", `{"ipam":{"subnet":"10.1.2.0/24"},"args":{"cni":{"ips":["x"]}}}`, ""},
	{"mapped v4 start", `{"ipam":{"subnet":"10.1.2.0/24","rangeStart":"::ffff:10.1.2.9"}}`, ""},
	{"key case folded", `{"ipam":{"Subnet":"10.1.2.0/24","RANGESTART":"10.1.2.9"}}`, ""},
	{"same key twice, two cases", `{"ipam":{"subnet":"10.1.2.0/24","SUBNET":"10.1.3.0/24"}}`, ""},
	{"same key twice, other order", `{"ipam":{"SUBNET":"10.1.3.0/24","subnet":"10.1.2.0/24"}}`, ""},
	{"wrong type", `{"ipam":{"subnet":["10.1.2.0/24"]}}`, ""},
	{"ipam not an object", `{"ipam":"host-local"}`, ""},
	{"null ipam", `{"ipam":null}`, ""},
	{"ranges not a list", `{"ipam":{"ranges":{"subnet":"10.1.2.0/24"}}}`, ""},
	{"routes and dataDir", `{"ipam":{"subnet":"10.1.2.0/24","dataDir":"/tmp/x","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.2.1"}]}}`, ""},
}

func full(conf string) []byte {
	// Fill in name and version unless the case sets them.
	if !strings.Contains(conf, `"cniVersion"`) {
		conf = `{"cniVersion":"1.0.0",` + conf[1:]
	}
	if !strings.Contains(conf, `"name"`) {
		conf = `{"name":"net",` + conf[1:]
	}
	return []byte(conf)
}

// TestAgreesWithHostLocal parses every config with host-local's own loader (from the
// plugins module) and with ours: both accept or both refuse, and accepted ones give the
// same range sets, requested addresses and routes.
func TestAgreesWithHostLocal(t *testing.T) {
	for _, c := range corpus {
		t.Run(c.name, func(t *testing.T) {
			b := full(c.conf)
			want, _, herr := hl.LoadIPAMConfig(b, c.args)
			got, err := config.Load(b, c.args)
			if (herr == nil) != (err == nil) {
				t.Fatalf("host-local: %v; local-ipam: %v", herr, err)
			}
			if err != nil {
				if code := cnierr.Code(err); code == 999 || code == 0 {
					t.Errorf("refused without a CNI code: %v", err)
				}
				return
			}
			if hs, ls := hostLocalSets(want), localSets(got); fmt.Sprint(hs) != fmt.Sprint(ls) {
				t.Errorf("sets differ:\nhost-local %v\nlocal-ipam %v", hs, ls)
			}
			var hreq, lreq []string
			for _, ip := range want.IPArgs {
				hreq = append(hreq, ip.String())
			}
			for _, a := range got.Requested {
				lreq = append(lreq, a.String())
			}
			if fmt.Sprint(hreq) != fmt.Sprint(lreq) {
				t.Errorf("requested: host-local %v, local-ipam %v", hreq, lreq)
			}
			if d := routesAndDataDir(want, got); d != "" {
				t.Error(d)
			}
		})
	}
}

func subnetString(ip, mask []byte) string {
	a, _ := netip.AddrFromSlice(ip)
	ones := 0
	for _, b := range mask {
		for ; b != 0; b <<= 1 {
			ones++
		}
	}
	return netip.PrefixFrom(a.Unmap(), ones).String()
}

func TestErrorCodes(t *testing.T) {
	for _, c := range []struct {
		conf, args string
		code       uint
	}{
		{`{"ipam":{"subnet":"10.1.2.3/24"}}`, "", cnierr.InvalidConfig},
		{`{"name":"x"}`, "", cnierr.InvalidConfig},
		{`{"ipam":{"subnet":"10.1.2.0/24"}}`, "FOO=bar", cnierr.InvalidEnvironment},
		{`{"ipam":{"subnet":10}}`, "", cnierr.InvalidConfig},
		{`{"ipam":`, "", cnierr.DecodingFailure},
		{`{"cniVersion":"0.2.0","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`, "", cnierr.IncompatibleVersion},
	} {
		b := []byte(c.conf)
		if strings.HasPrefix(c.conf, `{"ipam":{`) {
			b = full(c.conf)
		}
		_, err := config.Load(b, c.args)
		if cnierr.Code(err) != c.code {
			t.Errorf("%s %s: got %v (code %d), want code %d", c.conf, c.args, err, cnierr.Code(err), c.code)
		}
	}
}

// CONVENTIONS.md: the config's args win over CNI_ARGS (host-local merges both).
func TestArgsTakePrecedence(t *testing.T) {
	b := full(`{"ipam":{"subnet":"10.1.2.0/24"},"args":{"cni":{"ips":["10.1.2.5"]}}}`)
	c, err := config.Load(b, "IP=10.1.2.9")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.Requested) != "[10.1.2.5]" {
		t.Fatalf("requested %v, want only args' 10.1.2.5", c.Requested)
	}
	c, _ = config.Load(full(`{"ipam":{"subnet":"10.1.2.0/24"}}`), "IP=10.1.2.9")
	if fmt.Sprint(c.Requested) != "[10.1.2.9]" {
		t.Fatalf("requested %v, want CNI_ARGS' 10.1.2.9", c.Requested)
	}
}

func TestGCAttachments(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  int // attachments read; -1: the list cannot be read
	}{
		{``, 0}, // no list: nothing is valid, as host-local reads it
		{`,"cni.dev/valid-attachments":null`, 0},
		{`,"cni.dev/valid-attachments":[]`, 0},
		{`,"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]`, 1},
		{`,"cni.dev/valid-attachments":null,"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]`, 1},
		{`,"cni.dev/valid-attachments":"all"`, -1},
		{`,"cni.dev/valid-attachments":{}`, -1},
	} {
		c, err := config.Load(full(`{"ipam":{"subnet":"10.1.2.0/24"}`+tc.extra+`}`), "")
		if err != nil {
			t.Fatalf("%s: %v", tc.extra, err)
		}
		if (c.AttachmentsErr != nil) != (tc.want < 0) || (tc.want >= 0 && len(c.ValidAttachments) != tc.want) {
			t.Errorf("%q: %d attachments, error %v; want %d", tc.extra, len(c.ValidAttachments), c.AttachmentsErr, tc.want)
		}
	}
}
