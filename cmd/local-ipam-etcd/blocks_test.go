package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

// TestBlocksCommand: `local-ipam blocks --conf FILE [--json]` lists each block with the
// machine holding it, how much of it is in use, and its size; release --node gives a
// machine's blocks back.
func TestBlocksCommand(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("blk", eps, map[string]any{"subnet": "10.61.0.0/24"})
	n.store = map[string]any{"blockSize": 16}
	for _, id := range []string{"a1", "a2", "a3"} {
		wantOK(t, add(t, n, "m1", id), "ADD "+id)
	}
	wantOK(t, add(t, n, "m2", "b1"), "ADD b1")
	conf := writeConf(t, n.conf(t, "operator", nil))
	type block struct {
		CIDR  string `json:"cidr"`
		Node  string `json:"node"`
		InUse int    `json:"inUse"`
		Size  int    `json:"size"`
	}
	blocks := func() []block {
		t.Helper()
		o := operator(t, "blocks", "--conf", conf, "--json")
		wantOK(t, o, "blocks --json")
		var out struct {
			Network   string  `json:"network"`
			BlockSize int     `json:"blockSize"`
			Blocks    []block `json:"blocks"`
		}
		if err := json.Unmarshal([]byte(o.Stdout), &out); err != nil || out.Network != "blk" || out.BlockSize != 16 {
			t.Fatalf("blocks --json: %v: %s", err, o.Stdout)
		}
		return out.Blocks
	}
	got := blocks()
	byNode := map[string]block{}
	for _, b := range got {
		byNode[b.Node] = b
	}
	if len(got) != 2 || byNode["m1"].InUse != 3 || byNode["m2"].InUse != 1 || byNode["m1"].Size != 16 ||
		!strings.HasSuffix(byNode["m1"].CIDR, "/28") {
		t.Fatalf("blocks: %+v; want one of m1 with 3 in use and one of m2 with 1, /28 each", got)
	}
	o := operator(t, "blocks", "--conf", conf)
	wantOK(t, o, "blocks")
	for _, s := range []string{"CIDR", "NODE", "IN USE", "SIZE", byNode["m1"].CIDR, byNode["m2"].CIDR} {
		if !strings.Contains(o.Stdout, s) {
			t.Errorf("blocks output lacks %q:\n%s", s, o.Stdout)
		}
	}
	wantOK(t, operator(t, "release", "--conf", conf, "--node", "m1"), "release --node m1")
	if got := blocks(); len(got) != 1 || got[0].Node != "m2" {
		t.Errorf("after release --node m1: %+v; want only m2's block", got)
	}

	// Without blocks, and for a network on disk.
	n0 := newEtcdNet("noblk", eps, map[string]any{"subnet": "10.62.0.0/24"})
	n0.store = map[string]any{"blockSize": 0}
	wantOK(t, add(t, n0, "m1", "c"), "ADD without blocks")
	o = operator(t, "blocks", "--conf", writeConf(t, n0.conf(t, "operator", nil)))
	if o.Exit != 0 || !strings.Contains(o.Stdout, "has no blocks") {
		t.Errorf("blocks of a network without: %s", o)
	}
	disk := writeConf(t, []byte(`{"cniVersion":"1.1.0","name":"d","type":"bridge","ipam":{"type":"local-ipam","subnet":"10.63.0.0/24","dataDir":"`+t.TempDir()+`"}}`))
	if o := operator(t, "blocks", "--conf", disk); o.Exit != 2 || !strings.Contains(o.Stderr, "etcd") {
		t.Errorf("blocks of a disk network: %s", o)
	}
	if o := operator(t, "blocks"); o.Exit != 2 {
		t.Errorf("blocks without --conf: %s", o)
	}
	// A bad blockSize is a config error, code 7, naming the field.
	n0.store = map[string]any{"blockSize": 48}
	e := wantCode(t, add(t, n0, "m1", "bad"), 7, "ADD with blockSize 48")
	if !strings.Contains(e.Msg, "blockSize") {
		t.Errorf("message does not name blockSize: %s", e.Msg)
	}
}
