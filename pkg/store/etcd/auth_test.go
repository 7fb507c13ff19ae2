package etcd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
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

// startMember starts an embedded etcd member for the test and returns its client URL:
// http, or https with tls (then it asks clients for certificates as tls says). Its
// password hashing is cheap (bcrypt's least cost): the delays of these tests are their
// proxies', whatever the machine's load.
func startMember(t *testing.T, tls *transport.TLSInfo) string {
	t.Helper()
	scheme := "http"
	if tls != nil {
		scheme = "https"
	}
	l1, _ := net.Listen("tcp", "127.0.0.1:0")
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	client, peer := scheme+"://"+l1.Addr().String(), "http://"+l2.Addr().String()
	l1.Close()
	l2.Close()
	cfg, err := etcdtest.MemberConfig("m0", t.TempDir(), client, peer, "m0="+peer)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BcryptCost = 4 // bcrypt's least
	if tls != nil {
		cfg.ClientTLSInfo = *tls
	}
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
	return client
}

// enableAuth turns etcd's authentication on, through cli, with the user root (password
// secret).
func enableAuth(t *testing.T, cli *clientv3.Client) {
	t.Helper()
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
}

// startAuthEtcd starts an etcd with authentication on (user root, password secret).
func startAuthEtcd(t *testing.T) []string {
	t.Helper()
	eps := []string{startMember(t, nil)}
	enableAuth(t, etcdtest.Client(t, eps))
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

// writeCert writes a certificate (signed by parent, or self-signed) and its key as PEM.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestTLSAndAuth serves clients over https with client certificates required and etcd
// authentication enabled.
func TestTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
	writeCert(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "local-ipam"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
	pem := func(n string) string { return filepath.Join(dir, n+".pem") }
	client := startMember(t, &transport.TLSInfo{CertFile: pem("server"), KeyFile: pem("server-key"), TrustedCAFile: pem("ca"), ClientCertAuth: true})

	good := Config{Endpoints: []string{client}, Node: "n", Timeout: 3 * time.Second,
		CertFile: pem("client"), KeyFile: pem("client-key"), TrustedCAFile: pem("ca")}
	s, err := Open(good, "tls")
	if err != nil {
		t.Fatalf("Open over TLS: %v", err)
	}
	if ok, err := s.Reserve(netip.MustParseAddr("10.0.0.1"), own("c", "eth0")); err != nil || !ok {
		t.Fatalf("Reserve over TLS = %v, %v", ok, err)
	}
	s.Close()

	// Without a client certificate the server refuses the connection: no answer.
	noCert := good
	noCert.CertFile, noCert.KeyFile = "", ""
	if _, err := Open(noCert, "tls"); cnierr.Code(err) != cnierr.TryAgainLater {
		t.Errorf("Open without a client certificate = %v; want code 11", err)
	}

	// Authentication on: the right password works, a wrong one is a config error.
	tlsCfg, err := (transport.TLSInfo{CertFile: pem("client"), KeyFile: pem("client-key"), TrustedCAFile: pem("ca")}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	enableAuth(t, cli)
	withAuth := good
	withAuth.Username, withAuth.Password = "root", "secret"
	s, err = Open(withAuth, "tls")
	if err != nil {
		t.Fatalf("Open with the right password: %v", err)
	}
	if got, err := s.Owned(own("c", "eth0")); err != nil || len(got) != 1 {
		t.Errorf("Owned with auth = %v, %v", got, err)
	}
	s.Close()
	withAuth.Password = "wrong"
	if _, err := Open(withAuth, "tls"); cnierr.Code(err) != cnierr.InvalidConfig {
		t.Errorf("Open with a wrong password = %v; want code 7", err)
	}
	if _, err := Open(good, "tls"); cnierr.Code(err) == 0 {
		t.Errorf("Open without credentials on an auth-enabled etcd succeeded")
	} else {
		t.Logf("without credentials: %v", err)
	}
}
