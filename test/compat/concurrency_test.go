package compat

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// The concurrency tests run the plugin under test only (they pass on host-local too).

type concCall struct {
	cmd    string
	id     string
	ifname string
	conf   []byte // overrides the shared config (CHECK with its own prevResult)
}

type concResult struct {
	call concCall
	out  cniexec.Out
	err  error
}

// runConcurrently runs calls with at most width processes at a time (all at once when
// width <= 0), starting them together.
func runConcurrently(bin string, conf []byte, calls []concCall, width int) []concResult {
	if width <= 0 {
		width = len(calls)
	}
	res := make([]concResult, len(calls))
	sem := make(chan struct{}, width)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func(i int, c concCall) {
			defer wg.Done()
			<-start
			sem <- struct{}{}
			defer func() { <-sem }()
			ifn := c.ifname
			if ifn == "" {
				ifn = "eth0"
			}
			cf := conf
			if c.conf != nil {
				cf = c.conf
			}
			o, err := cniexec.CNIExec(bin, cniexec.Call{Cmd: c.cmd, ID: c.id, IfName: ifn, Conf: cf})
			res[i] = concResult{call: c, out: o, err: err}
		}(i, c)
	}
	close(start)
	wg.Wait()
	return res
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

func calls(cmd string, idl []string) []concCall {
	var out []concCall
	for _, id := range idl {
		out = append(out, concCall{cmd: cmd, id: id})
	}
	return out
}

// owners checks a set of ADD results and returns address -> container ID. It fails on
// duplicate addresses.
func owners(t *testing.T, res []concResult) map[string]string {
	t.Helper()
	own := map[string]string{}
	for _, r := range res {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.call.cmd != "ADD" || !r.out.OK() {
			continue
		}
		addrs, err := addresses(r.out.Stdout)
		if err != nil {
			t.Fatalf("ADD %s: %v", r.call.id, err)
		}
		for _, a := range addrs {
			ip, _, err := net.ParseCIDR(a)
			if err != nil {
				t.Fatalf("ADD %s: bad address %q", r.call.id, a)
			}
			if prev, dup := own[ip.String()]; dup {
				t.Errorf("address %s given to both %s and %s", ip, prev, r.call.id)
			}
			own[ip.String()] = r.call.id
		}
	}
	return own
}

// storeMatches requires the network directory to hold exactly the records in want
// (address -> container ID), each naming its container and ifname eth0.
func storeMatches(t *testing.T, netDir string, want map[string]string) {
	t.Helper()
	got := records(t, netDir)
	for addr, id := range want {
		c, ok := got[addr]
		if !ok {
			t.Errorf("no record for %s (given to %s)", addr, id)
			continue
		}
		if c != id+"\r\neth0" {
			t.Errorf("record %s holds %q, want %q", addr, c, id+"\r\neth0")
		}
	}
	for addr, c := range got {
		if _, ok := want[addr]; !ok {
			t.Errorf("unexpected record %s holding %q", addr, c)
		}
	}
}

// checkCalls builds CHECK calls for ids, each with its own ADD result as prevResult.
func checkCalls(t *testing.T, dataDir, ipam string, added []concResult, idl []string) []concCall {
	t.Helper()
	prev := map[string][]byte{}
	for _, r := range added {
		if r.call.cmd == "ADD" && r.out.OK() {
			prev[r.call.id] = []byte(r.out.Stdout)
		}
	}
	var out []concCall
	for _, id := range idl {
		var v any
		if err := json.Unmarshal(prev[id], &v); err != nil {
			t.Fatalf("no ADD result for %s: %v", id, err)
		}
		out = append(out, concCall{cmd: "CHECK", id: id,
			conf: makeConf(t, cfg("1.0.0", ipam), dataDir, "", map[string]any{"prevResult": v})})
	}
	return out
}

func concConf(t *testing.T, dataDir, ipam string) []byte {
	return makeConf(t, cfg("1.0.0", ipam), dataDir, "", nil)
}

func requireAll(t *testing.T, res []concResult, want bool) {
	t.Helper()
	for _, r := range res {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.out.OK() != want {
			t.Errorf("%s %s: %s", r.call.cmd, r.call.id, r.out)
		}
	}
}

// TestConcurrentAddDel: 64 processes, 16 at a time, each ADD a distinct container to one
// /24; then 64 concurrent DELs empty the store.
func TestConcurrentAddDel(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dataDir := t.TempDir()
	netDir := filepath.Join(dataDir, netName)
	conf := concConf(t, dataDir, `{"subnet": "10.100.0.0/24"}`)
	n := 64
	idl := ids("cc", 0, n)

	res := runConcurrently(b.plugin, conf, calls("ADD", idl), 16)
	requireAll(t, res, true)
	own := owners(t, res)
	if len(own) != n {
		t.Fatalf("%d distinct addresses for %d containers", len(own), n)
	}
	for addr := range own {
		ip := net.ParseIP(addr)
		if ip.To4() == nil || !strings.HasPrefix(addr, "10.100.0.") || addr == "10.100.0.1" || addr == "10.100.0.0" || addr == "10.100.0.255" {
			t.Errorf("address %s outside the usable range", addr)
		}
	}
	storeMatches(t, netDir, own)

	// Every allocation passes CHECK (with its own ADD result as prevResult), concurrently.
	requireAll(t, runConcurrently(b.plugin, conf, checkCalls(t, dataDir, `{"subnet": "10.100.0.0/24"}`, res, idl), 16), true)

	res = runConcurrently(b.plugin, conf, calls("DEL", idl), 16)
	requireAll(t, res, true)
	storeMatches(t, netDir, map[string]string{})
}

// TestConcurrentExhaustion: 40 concurrent ADDs into a /27 (30 hosts, one of them the
// gateway): exactly 29 succeed, the rest fail with a CNI error, no duplicates.
func TestConcurrentExhaustion(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dataDir := t.TempDir()
	conf := concConf(t, dataDir, `{"subnet": "10.101.0.0/27"}`)
	const usable = 30 - 1
	res := runConcurrently(b.plugin, conf, calls("ADD", ids("ex", 0, 40)), 0)
	ok := 0
	for _, r := range res {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.out.OK() {
			ok++
		} else if err := checkCNIError(r.out); err != nil {
			t.Errorf("ADD %s: %v", r.call.id, err)
		}
	}
	if ok != usable {
		t.Errorf("%d ADDs succeeded, want exactly %d", ok, usable)
	}
	own := owners(t, res)
	if len(own) != usable {
		t.Errorf("%d distinct addresses, want %d", len(own), usable)
	}
	for i := 2; i <= 30; i++ {
		if _, ok := own[fmt.Sprintf("10.101.0.%d", i)]; !ok {
			t.Errorf("10.101.0.%d was not handed out", i)
		}
	}
	storeMatches(t, filepath.Join(dataDir, netName), own)
}

// TestConcurrentMixed: 32 containers exist; then, all at once, 16 of them are deleted, 32
// new ones added and the other 16 checked. The store must then hold exactly the 16
// survivors (at their old addresses) and the 32 new ones.
func TestConcurrentMixed(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dataDir := t.TempDir()
	netDir := filepath.Join(dataDir, netName)
	ipam := `{"subnet": "10.102.0.0/24"}`
	conf := concConf(t, dataDir, ipam)
	old := ids("old", 0, 32)
	res := runConcurrently(b.plugin, conf, calls("ADD", old), 16)
	requireAll(t, res, true)
	before := owners(t, res)

	var doomed, kept []string
	for i, id := range old {
		if i%2 == 0 {
			doomed = append(doomed, id)
		} else {
			kept = append(kept, id)
		}
	}
	fresh := ids("new", 0, 32)
	adds := calls("ADD", fresh)
	dl, ck := calls("DEL", doomed), checkCalls(t, dataDir, ipam, res, kept)
	var others []concCall // DELs and CHECKs interleaved
	for i := range dl {
		others = append(others, dl[i], ck[i])
	}
	var wg sync.WaitGroup
	var resAdd, resOther []concResult
	wg.Add(2)
	go func() { defer wg.Done(); resAdd = runConcurrently(b.plugin, conf, adds, 12) }()
	go func() { defer wg.Done(); resOther = runConcurrently(b.plugin, conf, others, 12) }()
	wg.Wait()
	requireAll(t, resAdd, true)
	requireAll(t, resOther, true)

	want := owners(t, resAdd)
	for _, id := range kept {
		for addr, owner := range before {
			if owner == id {
				if other, taken := want[addr]; taken {
					t.Errorf("%s (still allocated to %s) was given to %s", addr, id, other)
				}
				want[addr] = id
			}
		}
	}
	if len(want) != 48 {
		t.Errorf("%d allocations after the mixed round, want 48", len(want))
	}
	storeMatches(t, netDir, want)

	// And every one of them is released by a concurrent DEL.
	var all []string
	for _, id := range want {
		all = append(all, id)
	}
	requireAll(t, runConcurrently(b.plugin, conf, calls("DEL", all), 16), true)
	storeMatches(t, netDir, map[string]string{})
}

// TestConcurrentDualStack: 32 concurrent dual-stack ADDs get distinct addresses in both
// families, with a record for each.
func TestConcurrentDualStack(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dataDir := t.TempDir()
	conf := concConf(t, dataDir, `{"ranges": [[{"subnet": "10.103.0.0/24"}], [{"subnet": "fd00:103::/120"}]]}`)
	n := 32
	if testing.Short() {
		n = 16
	}
	res := runConcurrently(b.plugin, conf, calls("ADD", ids("ds", 0, n)), 16)
	requireAll(t, res, true)
	own := owners(t, res)
	if len(own) != 2*n {
		t.Errorf("%d distinct addresses for %d dual-stack containers", len(own), n)
	}
	storeMatches(t, filepath.Join(dataDir, netName), own)
	requireAll(t, runConcurrently(b.plugin, conf, calls("DEL", ids("ds", 0, n)), 16), true)
	storeMatches(t, filepath.Join(dataDir, netName), map[string]string{})
}
