// Command etcd-member is one member of etcdtest's test clusters: an embedded etcd with
// etcdtest.MemberConfig, that prints "ready" on stdout once it serves clients and runs
// until it is killed (the point: tests SIGKILL it) or its stdin closes (the harness died).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

func main() {
	name := flag.String("name", "m0", "member name")
	dir := flag.String("dir", "", "directory for data and log")
	client := flag.String("client", "", "client URL")
	peer := flag.String("peer", "", "peer URL")
	initial := flag.String("initial-cluster", "", "name=peerURL,...")
	fsync := flag.Bool("fsync", false, "fsync writes, as a production member does (benchmarks)")
	flag.Parse()
	cfg, err := etcdtest.MemberConfig(*name, *dir, *client, *peer, *initial)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.UnsafeNoFsync = !*fsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// The harness holds stdin open while it lives; when it is gone, so are we.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		sig <- syscall.SIGTERM
	}()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case <-sig:
		e.Close()
		return
	}
	select {
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case <-sig:
		e.Close()
	}
}
