package etcd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

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

	l1, _ := net.Listen("tcp", "127.0.0.1:0")
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	client := fmt.Sprintf("https://%s", l1.Addr())
	peer := fmt.Sprintf("http://%s", l2.Addr())
	l1.Close()
	l2.Close()
	cfg, err := etcdtest.MemberConfig("m0", dir, client, peer, "m0="+peer)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pem("server"), KeyFile: pem("server-key"), TrustedCAFile: pem("ca"), ClientCertAuth: true}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready")
	}

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
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "secret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
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
