package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
)

// TestSameAttachmentTwoMachines: a runtime bug (or two runtimes) ADDs one attachment from
// two machines at the same instant. As for two ADDs in a row, one succeeds and the other
// is refused with code 103: never two addresses in one range set for one attachment.
// The duplicate check is in the reservation's transaction (pkg/store/etcd reserve).
func TestSameAttachmentTwoMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newEtcdNet("twice", eps, map[string]any{"ranges": []any{
		[]any{map[string]any{"subnet": "10.56.0.0/24"}},
		[]any{map[string]any{"subnet": "fd00:56::/120"}},
	}})
	bin := cniexec.Bin(t, "local-ipam")
	const rounds = 30
	confs := [2][]byte{n.conf(t, "m0", nil), n.conf(t, "m1", nil)}
	wins := [2]int{}
	for r := range rounds {
		id := fmt.Sprintf("dup%d", r)
		var outs [2]cniexec.Out
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				outs[i], errs[i] = cniexec.CNIExec(bin, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: confs[i]})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, o := range outs {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if o.Exit == 0 {
				ok++
				wins[i]++
				continue
			}
			if e, isErr := o.Error(); !isErr || e.Code != 103 {
				t.Errorf("round %d, machine m%d: want success or code 103, got %s", r, i, o)
			}
		}
		if ok != 1 {
			t.Errorf("round %d: %d of the two ADDs of %s/eth0 succeeded, want exactly 1", r, ok, id)
		}
	}
	t.Logf("successes by machine: %v", wins)
	held := map[string][]string{}
	for _, e := range list(t, n) {
		held[e.ContainerID] = append(held[e.ContainerID], e.Address)
	}
	for r := range rounds {
		id := fmt.Sprintf("dup%d", r)
		a := held[id]
		if len(a) != 2 || strings.Contains(a[0], ":") == strings.Contains(a[1], ":") {
			t.Errorf("%s/eth0 holds %v, want one IPv4 and one IPv6 address", id, a)
		}
	}
}
