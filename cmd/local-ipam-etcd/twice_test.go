package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/etcdtest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/etcd"
)

// TestSameAttachmentTwoMachines: a runtime bug (or two runtimes) ADDs one attachment from
// two machines at the same instant. As for two ADDs in a row, one succeeds and the other
// is refused with code 103: never two addresses in one range set for one attachment.
// The duplicate check is in the reservation's transaction (pkg/store/etcd reserve).
func TestSameAttachmentTwoMachines(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newDualStack("twice", eps, "10.56.0.0/24", "fd00:56::/120")
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

// TestAddDelSameAttachment: an ADD on one machine and a DEL on another of the same
// attachment at once, round after round (a runtime that gives up on a slow ADD and
// DELs it). Whatever the order, the ADD either fails (code 11: the DEL freed what it had
// reserved in its first range set) and leaves nothing, or every address it answered is
// still reserved for the attachment, or the DEL came after it and freed them all. Never
// an answered address that the store has freed: the next ADD would get it while the
// container uses it. Before, a DEL that read the attachment between the ADD's two
// reservations freed the first one, and the ADD answered both.
func TestAddDelSameAttachment(t *testing.T) {
	eps := etcdtest.StartEmbedded(t)
	n := newDualStack("adddel", eps, "10.59.0.0/24", "fd00:59::/120")
	bin := cniexec.Bin(t, "local-ipam")
	addConf, delConf := n.conf(t, "tn1", nil), n.conf(t, "tn2", nil)
	look, err := etcd.Open(etcd.Config{Endpoints: eps, Prefix: "/t/" + t.Name(), Node: "look", Timeout: 10 * time.Second}, n.name)
	if err != nil {
		t.Fatal(err)
	}
	defer look.Close()
	const rounds = 60
	var failed, emptied, kept int
	for r := range rounds {
		id := fmt.Sprintf("c%d", r)
		var addOut, delOut cniexec.Out
		var addErr, delErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			addOut, addErr = cniexec.CNIExec(bin, cniexec.Call{Cmd: "ADD", ID: id, IfName: "eth0", Conf: addConf})
		}()
		go func() {
			defer wg.Done()
			// The DEL lands anywhere from before the ADD's first reservation to after
			// its last.
			time.Sleep(time.Duration(rand.IntN(6000)) * time.Microsecond)
			delOut, delErr = cniexec.CNIExec(bin, cniexec.Call{Cmd: "DEL", ID: id, IfName: "eth0", Conf: delConf})
		}()
		wg.Wait()
		if addErr != nil || delErr != nil {
			t.Fatal(addErr, delErr)
		}
		if delOut.Exit != 0 {
			t.Errorf("round %d: DEL failed: %s", r, delOut)
		}
		held, err := look.Owned(store.Owner{ID: id, IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, a := range held {
			have = append(have, a.String())
		}
		slices.Sort(have)
		if addOut.Exit != 0 {
			if e, ok := addOut.Error(); !ok || e.Code != 11 {
				t.Errorf("round %d: ADD failed with other than code 11: %s", r, addOut)
			}
			if len(have) != 0 {
				t.Errorf("round %d: the ADD failed, yet %s holds %v", r, id, have)
			}
			failed++
			continue
		}
		var answered []string
		for _, a := range addOut.Addrs(t) {
			answered = append(answered, netip.MustParsePrefix(a).Addr().String())
		}
		slices.Sort(answered)
		switch {
		case len(have) == 0:
			emptied++ // the DEL came after the ADD
		case slices.Equal(have, answered):
			kept++ // the DEL came first
		default:
			t.Errorf("round %d: the ADD answered %v, the store holds %v for %s", r, answered, have, id)
		}
	}
	t.Logf("%d rounds: ADD failed %d, DEL after the ADD %d, DEL before it %d", rounds, failed, emptied, kept)
	if got := strings.Count(fmt.Sprint(list(t, n)), "10.59."); got != kept {
		t.Errorf("%d IPv4 reservations in the network, want the %d kept", got, kept)
	}
}
