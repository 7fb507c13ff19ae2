package compat

import (
	"fmt"
	"math/rand"
	"testing"
)

// TestDifferentialRandom runs seeded random sequences (ADD, duplicate ADD, ADD with a
// requested address, DEL, CHECK, GC) on a small dual-stack config whose walk wraps often,
// comparing host-local and the plugin under test after every call like TestDifferential.
// A failure names its seed and step; the sequence is the same on every run.
//
// Avoided on purpose, because host-local is not deterministic there or local-ipam differs
// deliberately: two requested addresses for one range set, and args.cni.ips together with
// CNI_ARGS IP=.
func TestDifferentialRandom(t *testing.T) {
	needBins(t)
	steps := 160
	if testing.Short() {
		steps = 60
	}
	conf := cfg("1.1.0", `{"ranges": [
		[{"subnet": "10.110.0.0/29"}, {"subnet": "10.110.1.0/28", "rangeStart": "10.110.1.8", "rangeEnd": "10.110.1.12", "gateway": "10.110.1.10"}],
		[{"subnet": "fd00:110::/124", "rangeStart": "fd00:110::4"}]]}`)
	for _, seed := range []int64{1, 2, 3, 4} {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewSource(seed))
			ops := randomOps(rng, steps)
			runDifferential(t, scenario{name: "random", conf: conf, ops: ops})
		})
	}
}

func randomOps(rng *rand.Rand, n int) []op {
	ifn := func() string {
		if rng.Intn(5) == 0 {
			return "eth1"
		}
		return "eth0"
	}
	v4 := func() string {
		if rng.Intn(2) == 0 {
			return fmt.Sprintf("10.110.0.%d", rng.Intn(9)) // includes network, gateway, broadcast, outside
		}
		return fmt.Sprintf("10.110.1.%d", 6+rng.Intn(8))
	}
	v6 := func() string { return fmt.Sprintf("fd00:110::%x", rng.Intn(17)) }

	// An ADD with a requested address skips host-local's duplicate check, and when such an
	// ADD then fails, host-local's rollback releases every record of (id, ifname), older
	// ones included. That quirk has its own rows in TestDifferential; here requested
	// addresses only go to attachments that cannot hold an address at that point.
	maybeHeld := map[string]bool{}
	pick := func(free bool) (string, string) {
		for tries := 0; tries < 50; tries++ {
			id, ifname := fmt.Sprintf("r-%02d", rng.Intn(14)), ifn()
			if !free || !maybeHeld[id+"/"+ifname] {
				return id, ifname
			}
		}
		return "", ""
	}
	var ops []op
	for len(ops) < n {
		k := rng.Intn(100)
		switch {
		case k < 40:
			id, ifname := pick(false)
			maybeHeld[id+"/"+ifname] = true
			ops = append(ops, op{Cmd: "ADD", ID: id, IfName: ifname})
		case k < 58:
			id, ifname := pick(true)
			if id == "" {
				continue
			}
			maybeHeld[id+"/"+ifname] = true
			o := op{Cmd: "ADD", ID: id, IfName: ifname}
			switch {
			case k < 48:
				o.CNIArgs = "IP=" + v4()
			case k < 54:
				o = o.reqArgs(v6())
			default:
				o = o.reqRuntime(v4()+"/24", v6())
			}
			ops = append(ops, o)
		case k < 85:
			id, ifname := pick(false)
			delete(maybeHeld, id+"/"+ifname)
			ops = append(ops, op{Cmd: "DEL", ID: id, IfName: ifname})
		case k < 97:
			id, ifname := pick(false)
			ops = append(ops, op{Cmd: "CHECK", ID: id, IfName: ifname})
		default:
			var valid []string
			for i := 0; i < 14; i++ {
				if rng.Intn(2) == 0 {
					valid = append(valid, fmt.Sprintf("r-%02d/%s", i, ifn()))
				}
			}
			extra := map[string]any{"cni.dev/valid-attachments": idList(valid...)}
			switch rng.Intn(8) {
			case 0:
				extra = nil // cnitool gc: nothing is valid
			case 1:
				extra["cni.dev/valid-attachments"] = nil // libcni with no live attachment
			}
			ops = append(ops, op{Cmd: "GC", Extra: extra})
		}
	}
	return ops
}
