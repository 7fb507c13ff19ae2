package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Store types.
const (
	StoreDisk = "disk"
	StoreEtcd = "etcd"
)

// DefaultEtcdPrefix is where the etcd store keeps its keys when the config names none.
const DefaultEtcdPrefix = "/local-ipam"

// DefaultEtcdTimeout bounds one call's etcd work when the config names no timeout: well
// under the minutes a runtime waits for a plugin, so that an unreachable cluster is
// answered with code 11 while the runtime is still listening.
const DefaultEtcdTimeout = 5 * time.Second

// DefaultBlockSize is the addresses of a node-affine block of an etcd pool (both
// families), when the config names none: Calico's default too.
const DefaultBlockSize = 64

// MaxBlockSize bounds store.blockSize: a block is at most one bitmap page of the etcd
// store.
const MaxBlockSize = 4096

// StoreConf is the ipam section's "store": where reservations are kept. Without it, the
// disk store under dataDir (host-local's). Its defaults are filled in here, the one place
// that defines them (the etcd store applies the same ones for its direct callers).
type StoreConf struct {
	Type string // StoreDisk or StoreEtcd
	// etcd only:
	Endpoints                        []string
	Prefix                           string
	CertFile, KeyFile, TrustedCAFile string
	Username, Password               string
	Timeout                          time.Duration
	// Node names this machine in the cluster (records are tagged with it, GC and
	// freeOnReboot touch only its own); the host name by default.
	Node string
	// BlockSize: addresses per node-affine block (a power of two, 8 to MaxBlockSize), or
	// 0 for one cluster-wide round robin; DefaultBlockSize by default.
	BlockSize int
}

// storeJSON is "store" as written.
type storeJSON struct {
	Type                             string
	Endpoints                        []string
	Prefix                           string
	CertFile, KeyFile, TrustedCAFile string
	Username, Password               string
	Timeout                          json.RawMessage
	Node                             string
	BlockSize                        json.RawMessage
}

func decodeStore(raw json.RawMessage, typos *[]Finding) (*storeJSON, error) {
	o, err := decodeObject(raw, "ipam.store")
	if err != nil || o == nil {
		return nil, err
	}
	*typos = append(*typos, misspelled(o, StoreKeys, "ipam.store", false)...)
	s := &storeJSON{}
	for _, f := range []struct {
		key string
		dst any
	}{
		{"type", &s.Type}, {"endpoints", &s.Endpoints}, {"prefix", &s.Prefix},
		{"certFile", &s.CertFile}, {"keyFile", &s.KeyFile}, {"trustedCAFile", &s.TrustedCAFile},
		{"username", &s.Username}, {"password", &s.Password}, {"node", &s.Node},
	} {
		if err := o.decode(f.key, "ipam.store.", f.dst); err != nil {
			return nil, err
		}
	}
	s.Timeout = o.get("timeout")
	s.BlockSize = o.get("blockSize")
	return s, nil
}

// parseTimeout accepts a Go duration ("5s", "1500ms") or a number of seconds.
func parseTimeout(raw json.RawMessage) (time.Duration, error) {
	if isNull(raw) {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (like \"5s\")", s)
		}
		return d, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, fmt.Errorf("%s is neither a duration string nor a number of seconds", raw)
	}
	if f > float64(time.Hour/time.Second) || f < 0 {
		return 0, fmt.Errorf("%s seconds is out of range", raw)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// validStore checks "store" and fills in its defaults.
func validStore(s *storeJSON) (StoreConf, error) {
	if s == nil || s.Type == "" || s.Type == StoreDisk {
		if s != nil && len(s.Endpoints) > 0 {
			return StoreConf{}, invalid("ipam.store: endpoints given but type is not \"etcd\"")
		}
		return StoreConf{Type: StoreDisk}, nil
	}
	if s.Type != StoreEtcd {
		return StoreConf{}, invalid("ipam.store.type %q is not supported (\"disk\" or \"etcd\")", s.Type)
	}
	st := StoreConf{
		Type: StoreEtcd, Endpoints: s.Endpoints, Prefix: s.Prefix,
		CertFile: s.CertFile, KeyFile: s.KeyFile, TrustedCAFile: s.TrustedCAFile,
		Username: s.Username, Password: s.Password, Node: s.Node,
	}
	if len(st.Endpoints) == 0 {
		return StoreConf{}, invalid("ipam.store: the etcd store needs \"endpoints\"")
	}
	for _, e := range st.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return StoreConf{}, invalid("ipam.store.endpoints: %q is not an http:// or https:// URL", e)
		}
	}
	if (st.CertFile == "") != (st.KeyFile == "") {
		return StoreConf{}, invalid("ipam.store: certFile and keyFile go together")
	}
	if (st.Username == "") != (st.Password == "") {
		return StoreConf{}, invalid("ipam.store: username and password go together")
	}
	if st.Prefix == "" {
		st.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(st.Prefix, "/") || strings.ContainsRune(st.Prefix, 0) {
		return StoreConf{}, invalid("ipam.store.prefix %q must start with /", st.Prefix)
	}
	st.Prefix = strings.TrimRight(st.Prefix, "/")
	if st.Prefix == "" {
		return StoreConf{}, invalid("ipam.store.prefix must not be the root of the key space")
	}
	d, err := parseTimeout(s.Timeout)
	if err != nil {
		return StoreConf{}, invalid("ipam.store.timeout: %v", err)
	}
	if d < 0 || (d == 0 && !isNull(s.Timeout)) {
		return StoreConf{}, invalid("ipam.store.timeout must be positive")
	}
	if d == 0 {
		d = DefaultEtcdTimeout
	}
	st.Timeout = d
	if st.Node == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return StoreConf{}, invalid("ipam.store.node is not set and the host name cannot be read")
		}
		st.Node = h
	}
	if strings.ContainsAny(st.Node, "/\x00\r\n") {
		return StoreConf{}, invalid("ipam.store.node %q must not contain /, NUL or a line break", st.Node)
	}
	// Keys are sent whole in every request: bounded like a file name (the network's
	// name is, on disk), so that no key comes near etcd's request size limit.
	if len(st.Node) > 255 {
		return StoreConf{}, invalid("ipam.store.node is %d bytes long; at most 255", len(st.Node))
	}
	bs, err := parseBlockSize(s.BlockSize)
	if err != nil {
		return StoreConf{}, invalid("ipam.store.blockSize: %v", err)
	}
	st.BlockSize = bs
	if len(st.Prefix) > 1024 {
		return StoreConf{}, invalid("ipam.store.prefix is %d bytes long; at most 1024", len(st.Prefix))
	}
	return st, nil
}

// parseBlockSize reads store.blockSize: absent or null is DefaultBlockSize; 0 turns blocks
// off; otherwise a power of two from 8 to MaxBlockSize.
func parseBlockSize(raw json.RawMessage) (int, error) {
	if isNull(raw) {
		return DefaultBlockSize, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("%s is not a whole number (a power of two from 8 to %d, or 0 for no blocks)", raw, MaxBlockSize)
	}
	if n != 0 && (n < 8 || n > MaxBlockSize || n&(n-1) != 0) {
		return 0, fmt.Errorf("%d is not a power of two from 8 to %d (or 0 for no blocks)", n, MaxBlockSize)
	}
	return n, nil
}
