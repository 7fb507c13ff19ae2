package plugin

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func capture(t *testing.T, f func() error) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatal(ferr)
	}
	return out
}

var oddStrings = []string{"example.org", "a<b>&c", "quote\"back\\slash", "tab\tnl\n", "\x01ctl", "é ü ✓", "bad\xffutf8", "line\u2028sep", "ndots:2", ""}

func randomResult(rng *rand.Rand) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	pick := func() string { return oddStrings[rng.IntN(len(oddStrings))] }
	for i := rng.IntN(4); i > 0; i-- {
		ipc := &current.IPConfig{}
		if rng.IntN(2) == 0 {
			ipc.Address = net.IPNet{IP: net.IPv4(10, byte(rng.IntN(256)), 0, byte(rng.IntN(256))).To4(), Mask: net.CIDRMask(8+rng.IntN(23), 32)}
			if rng.IntN(3) > 0 {
				ipc.Gateway = net.IPv4(10, 0, 0, 1).To4()
			}
		} else {
			ipc.Address = net.IPNet{IP: net.ParseIP("fd00::1234"), Mask: net.CIDRMask(64+rng.IntN(60), 128)}
			if rng.IntN(3) > 0 {
				ipc.Gateway = net.ParseIP("fd00::1")
			}
		}
		if rng.IntN(4) == 0 {
			n := rng.IntN(3)
			ipc.Interface = &n
		}
		r.IPs = append(r.IPs, ipc)
	}
	for i := rng.IntN(4); i > 0; i-- {
		rt := &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(rng.IntN(33), 32)}}
		if rng.IntN(2) == 0 {
			rt.GW = net.IPv4(10, 0, 0, 1).To4()
		}
		if rng.IntN(3) == 0 {
			rt.MTU = 1500
		}
		if rng.IntN(3) == 0 {
			rt.AdvMSS = 1400
		}
		if rng.IntN(3) == 0 {
			rt.Priority = rng.IntN(100)
		}
		if rng.IntN(3) == 0 {
			v := rng.IntN(300)
			rt.Table = &v
		}
		if rng.IntN(3) == 0 {
			v := rng.IntN(255)
			rt.Scope = &v
		}
		r.Routes = append(r.Routes, rt)
	}
	if rng.IntN(2) == 0 {
		for i := rng.IntN(3); i > 0; i-- {
			r.DNS.Nameservers = append(r.DNS.Nameservers, pick())
		}
		if rng.IntN(2) == 0 {
			r.DNS.Domain = pick()
		}
		for i := rng.IntN(3); i > 0; i-- {
			r.DNS.Search = append(r.DNS.Search, pick())
		}
		for i := rng.IntN(3); i > 0; i-- {
			r.DNS.Options = append(r.DNS.Options, pick())
		}
	}
	return r
}

// printResult must write exactly what the CNI library writes, byte for byte.
func TestPrintResultMatchesLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2000; i++ {
		r := randomResult(rng)
		for _, v := range []string{"1.0.0", "1.1.0", "0.4.0", "0.3.1", "0.2.0"} {
			if v == "0.2.0" {
				continue // not always representable; both paths go through the library there
			}
			want := capture(t, func() error { return types.PrintResult(r, v) })
			got := capture(t, func() error { return printResult(r, v) })
			if !bytes.Equal(got, want) {
				t.Fatalf("version %s, result %+v:\nlibrary:\n%s\nours:\n%s", v, r, want, got)
			}
		}
	}
}
