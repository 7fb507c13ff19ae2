package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Pipe is one direction of a proxied connection: it forwards what it reads from from to
// to, as the test wants it changed, held back or delayed. It returns when either fails,
// or when done is closed (the test is over).
type Pipe func(from, to net.Conn, done <-chan struct{})

// Copy is the Pipe that forwards everything as it comes.
func Copy(from, to net.Conn, _ <-chan struct{}) { _, _ = io.Copy(to, from) }

// Proxy forwards TCP connections to an etcd member, each direction through a Pipe: what
// a real member and a real client do when the network between them misbehaves.
type Proxy struct {
	ln net.Listener
}

// StartProxy listens on a free port of 127.0.0.1 and forwards every connection to target
// (host:port): up carries what the client sends, down what the member answers. When the
// test ends it closes the listener and every connection and waits for the pipes.
func StartProxy(t testing.TB, target string, up, down Pipe) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Go(func() { up(c, u, done) })
			wg.Go(func() { down(u, c, done) })
		}
	})
	return &Proxy{ln: ln}
}

// Endpoint is the proxy's client URL.
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }
