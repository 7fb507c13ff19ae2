package config_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
)

func TestStoreSection(t *testing.T) {
	host, _ := os.Hostname()
	conf := func(store string) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.1.2.0/24","store":` + store + `}}`)
	}
	ok := []struct {
		name, store string
		want        config.StoreConf
	}{
		{"absent is disk", `null`, config.StoreConf{Type: "disk"}},
		{"explicit disk", `{"type":"disk"}`, config.StoreConf{Type: "disk"}},
		{"etcd defaults", `{"type":"etcd","endpoints":["http://127.0.0.1:2379"]}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/local-ipam", Timeout: 5 * time.Second, Node: host, BlockSize: 64}},
		{"etcd everything", `{"type":"etcd","endpoints":["https://a:2379","https://b:2379"],"prefix":"/ipam/","certFile":"/c","keyFile":"/k","trustedCAFile":"/ca","username":"u","password":"p","timeout":"1500ms","node":"worker-1"}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"https://a:2379", "https://b:2379"}, Prefix: "/ipam", CertFile: "/c", KeyFile: "/k", TrustedCAFile: "/ca", Username: "u", Password: "p", Timeout: 1500 * time.Millisecond, Node: "worker-1", BlockSize: 64}},
		{"timeout in seconds", `{"type":"etcd","endpoints":["http://e:2379"],"timeout":2.5,"node":"x"}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://e:2379"}, Prefix: "/local-ipam", Timeout: 2500 * time.Millisecond, Node: "x", BlockSize: 64}},
		{"keys case-insensitive", `{"Type":"etcd","ENDPOINTS":["http://e:2379"],"Node":"x"}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://e:2379"}, Prefix: "/local-ipam", Timeout: 5 * time.Second, Node: "x", BlockSize: 64}},
		{"no blocks", `{"type":"etcd","endpoints":["http://e:2379"],"node":"x","blockSize":0}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://e:2379"}, Prefix: "/local-ipam", Timeout: 5 * time.Second, Node: "x", BlockSize: 0}},
		{"smallest blocks", `{"type":"etcd","endpoints":["http://e:2379"],"node":"x","blockSize":8}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://e:2379"}, Prefix: "/local-ipam", Timeout: 5 * time.Second, Node: "x", BlockSize: 8}},
		{"largest blocks", `{"type":"etcd","endpoints":["http://e:2379"],"node":"x","blockSize":4096}`,
			config.StoreConf{Type: "etcd", Endpoints: []string{"http://e:2379"}, Prefix: "/local-ipam", Timeout: 5 * time.Second, Node: "x", BlockSize: 4096}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(conf(tc.store), "")
			if err != nil {
				t.Fatal(err)
			}
			g, w := c.Store, tc.want
			if g.Type != w.Type || strings.Join(g.Endpoints, " ") != strings.Join(w.Endpoints, " ") || g.Prefix != w.Prefix ||
				g.CertFile != w.CertFile || g.KeyFile != w.KeyFile || g.TrustedCAFile != w.TrustedCAFile ||
				g.Username != w.Username || g.Password != w.Password || g.Timeout != w.Timeout || g.Node != w.Node ||
				(w.Type == "etcd" && g.BlockSize != w.BlockSize) {
				t.Errorf("store = %+v, want %+v", g, w)
			}
		})
	}
	bad := []struct{ name, store, msg string }{
		{"unknown type", `{"type":"consul"}`, "not supported"},
		{"no endpoints", `{"type":"etcd"}`, "endpoints"},
		{"endpoint without scheme", `{"type":"etcd","endpoints":["127.0.0.1:2379"]}`, "not an http"},
		{"endpoint unix", `{"type":"etcd","endpoints":["unix:///x"]}`, "not an http"},
		{"endpoints with disk", `{"endpoints":["http://e:2379"]}`, "not \"etcd\""},
		{"cert without key", `{"type":"etcd","endpoints":["https://e"],"certFile":"/c"}`, "certFile and keyFile"},
		{"user without password", `{"type":"etcd","endpoints":["https://e"],"username":"u"}`, "username and password"},
		{"relative prefix", `{"type":"etcd","endpoints":["http://e"],"prefix":"ipam"}`, "must start with /"},
		{"root prefix", `{"type":"etcd","endpoints":["http://e"],"prefix":"/"}`, "root"},
		{"bad timeout", `{"type":"etcd","endpoints":["http://e"],"timeout":"soon"}`, "not a duration"},
		{"zero timeout", `{"type":"etcd","endpoints":["http://e"],"timeout":0}`, "positive"},
		{"negative timeout", `{"type":"etcd","endpoints":["http://e"],"timeout":"-1s"}`, "positive"},
		{"huge timeout", `{"type":"etcd","endpoints":["http://e"],"timeout":1e300}`, "out of range"},
		{"node with slash", `{"type":"etcd","endpoints":["http://e"],"node":"a/b"}`, "must not contain"},
		{"node with line break", `{"type":"etcd","endpoints":["http://e"],"node":"a\nb"}`, "must not contain"},
		{"node too long", `{"type":"etcd","endpoints":["http://e"],"node":"` + strings.Repeat("n", 256) + `"}`, "at most 255"},
		{"prefix too long", `{"type":"etcd","endpoints":["http://e"],"prefix":"/` + strings.Repeat("p", 1024) + `"}`, "at most 1024"},
		{"store not an object", `"etcd"`, "want an object"},
		{"endpoints not a list", `{"type":"etcd","endpoints":"http://e"}`, "endpoints"},
		{"block size not a power of two", `{"type":"etcd","endpoints":["http://e"],"blockSize":48}`, "blockSize: 48 is not a power of two"},
		{"block size too small", `{"type":"etcd","endpoints":["http://e"],"blockSize":4}`, "blockSize"},
		{"block size too large", `{"type":"etcd","endpoints":["http://e"],"blockSize":8192}`, "from 8 to 4096"},
		{"block size negative", `{"type":"etcd","endpoints":["http://e"],"blockSize":-64}`, "blockSize"},
		{"block size a string", `{"type":"etcd","endpoints":["http://e"],"blockSize":"64"}`, "not a whole number"},
		{"block size a fraction", `{"type":"etcd","endpoints":["http://e"],"blockSize":6.5}`, "blockSize"},
	}
	long := []byte(`{"cniVersion":"1.1.0","name":"` + strings.Repeat("n", 256) + `","ipam":{"subnet":"10.1.2.0/24","store":{"type":"etcd","endpoints":["http://e"],"node":"x"}}}`)
	if _, err := config.Load(long, ""); cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("a 256-byte network name with etcd: %v, want code 7", err)
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(conf(tc.store), "")
			if err == nil {
				t.Fatal("accepted")
			}
			if cnierr.Code(err) != cnierr.InvalidConfig || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got code %d %q, want code 7 mentioning %q", cnierr.Code(err), err, tc.msg)
			}
		})
	}
}
