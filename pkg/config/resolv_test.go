package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
)

func TestResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\n; other\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.org\nsearch a.example b.example\noptions ndots:2 edns0\nbogus\n"), 0o644)
	c, _ := config.Load(full(`{"ipam":{"subnet":"10.1.2.0/24","resolvConf":"`+p+`"}}`), "")
	dns, err := c.DNS()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%v %v %v %v", dns.Nameservers, dns.Domain, dns.Search, dns.Options) != "[10.0.0.53 fd00::53] example.org [a.example b.example] [ndots:2 edns0]" {
		t.Errorf("dns = %+v", dns)
	}
	c, _ = config.Load(full(`{"ipam":{"subnet":"10.1.2.0/24","resolvConf":"/nonexistent/resolv.conf"}}`), "")
	if _, err := c.DNS(); cnierr.Code(err) != cnierr.IOFailure {
		t.Errorf("missing resolvConf: %v", err)
	}
}
