package etcd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
)

// authProxy stands between the client and a real etcd, reading the client's HTTP/2
// frames: the first request (the authentication, when credentials are configured) goes
// through after a delay, every later request never does; everything else goes through.
// etcd authenticates slowly, then stops answering.
type authProxy struct {
	*etcdtest.Proxy
	delay   time.Duration
	dropped atomic.Bool // a request after the first was held back
}

func startAuthProxy(t *testing.T, target string, delay time.Duration) *authProxy {
	t.Helper()
	p := &authProxy{delay: delay}
	p.Proxy = etcdtest.StartProxy(t, target, p.upstream, etcdtest.Copy)
	return p
}

// upstream forwards the client's preface and frames: those of the first stream opened
// after the delay, those of any later stream never.
func (p *authProxy) upstream(c, u net.Conn, done <-chan struct{}) {
	const preface = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	buf := make([]byte, preface)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	if _, err := u.Write(buf); err != nil {
		return
	}
	var first uint32
	var release time.Time // when the first stream's frames go through
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		frame := make([]byte, 9+(int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2])))
		copy(frame, hdr)
		if _, err := io.ReadFull(c, frame[9:]); err != nil {
			return
		}
		stream := binary.BigEndian.Uint32(hdr[5:9]) & 0x7fffffff
		if stream != 0 && first == 0 {
			first, release = stream, time.Now().Add(p.delay)
		}
		switch {
		case stream == 0: // the connection's own: settings, pings, window updates
		case stream == first:
			select {
			case <-time.After(time.Until(release)):
			case <-done:
				return
			}
		default:
			p.dropped.Store(true)
			continue // never answered
		}
		if _, err := u.Write(frame); err != nil {
			return
		}
	}
}

// TestAuthWithinTimeout: with a username and password the client authenticates before
// any request; that must be spent out of the call's timeout, not on top of it. etcd
// answers the authentication after most of the timeout, then nothing more: the call
// fails with code 11 when the timeout is up (it took authentication + timeout before).
func TestAuthWithinTimeout(t *testing.T) {
	eps := startAuthEtcd(t)
	const timeout = 2 * time.Second
	cfg := Config{Node: "n", Timeout: timeout, Username: "root", Password: "secret"}

	// Straight to etcd, the credentials work.
	cfg.Endpoints = eps
	s, err := Open(cfg, "auth")
	if err != nil {
		t.Fatalf("Open with the right password: %v", err)
	}
	s.Close()

	slow := startAuthProxy(t, eps[0][len("http://"):], timeout*6/10)
	for _, c := range []struct {
		what     string
		endpoint string
	}{
		{"authentication answered after 60% of the timeout, then nothing", slow.Endpoint()},
		{"a server that accepts and never answers", silentListener(t)},
	} {
		cfg.Endpoints = []string{c.endpoint}
		start := time.Now()
		_, err := Open(cfg, "auth")
		took := time.Since(start)
		t.Logf("%s: %v after %v", c.what, err, took)
		if cnierr.Code(err) != cnierr.TryAgainLater {
			t.Errorf("%s: Open = %v; want code 11", c.what, err)
		}
		if took > timeout+500*time.Millisecond {
			t.Errorf("%s: Open took %v with a timeout of %v", c.what, took, timeout)
		}
	}
	if !slow.dropped.Load() {
		t.Errorf("no request came after the authentication: the slow one was not answered, the test tested nothing")
	}
}

// startAuthEtcd starts an etcd with authentication on (user root, password secret). Its
// password hashing is cheap (bcrypt's least cost): the delays are the proxy's, whatever
// the machine's load.
func startAuthEtcd(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	l1, _ := net.Listen("tcp", "127.0.0.1:0")
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	client, peer := "http://"+l1.Addr().String(), "http://"+l2.Addr().String()
	l1.Close()
	l2.Close()
	cfg, err := etcdtest.MemberConfig("m0", dir, client, peer, "m0="+peer)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BcryptCost = 4 // bcrypt's least
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready")
	}
	eps := []string{client}
	cli := etcdtest.Client(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.UserAdd(ctx, "root", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	return eps
}

// silentListener accepts connections and never says anything.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestPermissionDenied: a user etcd knows but who may not use the keys under the prefix
// is a configuration error (code 7) that says so, like credentials etcd refuses; it was
// code 5, "etcdserver: permission denied". One user has no role at all, the other may
// read the prefix but not write it: its reservation is refused.
func TestPermissionDenied(t *testing.T) {
	eps := startAuthEtcd(t)
	root, err := clientv3.New(clientv3.Config{Endpoints: eps, Username: "root", Password: "secret", DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "norole", "pw"); return err },
		func() error { _, err := root.UserAdd(ctx, "reader", "pw"); return err },
		func() error { _, err := root.RoleAdd(ctx, "ro"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "ro", config.DefaultEtcdPrefix+"/", clientv3.GetPrefixRangeEnd(config.DefaultEtcdPrefix+"/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "reader", "ro"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Endpoints: eps, Node: "n", Machine: machineA, Timeout: 5 * time.Second, Password: "pw"}
	wantDenied := func(what, user string, err error) {
		t.Helper()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if cnierr.Code(err) != cnierr.InvalidConfig || !strings.Contains(msg, "user "+user+" lacks permission") || !strings.Contains(msg, config.DefaultEtcdPrefix+"/") {
			t.Errorf("%s: %v; want code 7 saying user %s lacks permission on %s/", what, err, user, config.DefaultEtcdPrefix)
		}
	}
	cfg.Username = "norole"
	_, err = Open(cfg, "perm")
	wantDenied("Open as a user without a role", "norole", err)

	cfg.Username = "reader"
	s, err := Open(cfg, "perm")
	if err != nil {
		t.Fatalf("Open as a user who may read: %v", err)
	}
	defer s.Close()
	ok, err := s.Reserve(netip.MustParseAddr("10.9.0.1"), own("c", "eth0"))
	wantDenied("Reserve as a user who may only read", "reader", err)
	if ok {
		t.Errorf("Reserve as a user who may only read = true")
	}
}
