package compat

import (
	"fmt"
	"path/filepath"
	"testing"
)

// takeoverConf: dual stack, a v4 range of 39 addresses (so the walk wraps during the test)
// and a v6 /120. cniVersion 1.1.0 so GC and STATUS can be called.
var takeoverConf = cfg("1.1.0", `{"ranges": [
	[{"subnet": "10.95.0.0/24", "rangeEnd": "10.95.0.40"}],
	[{"subnet": "fd00:95::/120"}]],
	"routes": [{"dst": "0.0.0.0/0"}]}`)

// takeoverBuild: 30 ADDs (c-00 .. c-29 get 10.95.0.2 .. 10.95.0.31 and fd00:95::2 ..
// fd00:95::1f), then five DELs.
func takeoverBuild() []op {
	ops := []op{}
	for i := 0; i < 30; i++ {
		ops = append(ops, addOK(fmt.Sprintf("c-%02d", i),
			fmt.Sprintf("10.95.0.%d/24", i+2), fmt.Sprintf("fd00:95::%x/120", i+2)))
	}
	return append(ops, dels("c", 3, 7, 11, 19, 25)...)
}

// writeLegacy leaves records as host-local before v0.7 wrote them: the container ID alone.
// They sit right after the cursor, so the next ADD has to skip them.
func writeLegacy(t *testing.T, netDir string) {
	writeFile(t, netDir, "10.95.0.32", "legacy-1")
	writeFile(t, netDir, "fd00:95::20", "legacy-1")
}

const legacyPrev = `{"cniVersion": "1.1.0", "ips": [{"address": "10.95.0.32/24", "gateway": "10.95.0.1"},
	{"address": "fd00:95::20/120", "gateway": "fd00:95::1"}]}`

// takeoverContinue is what the second binary does with the store.
func takeoverContinue() []op {
	ops := seq(
		addOK("n-00", "10.95.0.33/24", "fd00:95::21/120"), // skips the legacy record
		check("c-01"), check("c-29"), checkFail("c-03"),
		check("legacy-1").prev(legacyPrev),
		check("legacy-1").ifname("eth5").prev(legacyPrev), // legacy records match any ifname
		addFail("legacy-1").ifname("eth1"),
		addFail("c-01"), // duplicate of an allocation made by the other binary
		del("c-00"),
		del("legacy-1").ifname("eth7"), // the legacy record goes with any ifname
		checkFail("legacy-1").prev(legacyPrev),
		addOK("n-01", "10.95.0.34/24", "fd00:95::22/120"),
	)
	// 10.95.0.35 .. .40, then the walk wraps to the released .2, .5, .9, .13, .21, .27, .32.
	want := []string{"35", "36", "37", "38", "39", "40", "2", "5", "9", "13", "21", "27", "32"}
	for i, w := range want {
		ops = append(ops, addOK(fmt.Sprintf("n-%02d", i+2), "10.95.0."+w+"/24", fmt.Sprintf("fd00:95::%x/120", 0x23+i)))
	}
	ops = append(ops, addFail("n-15"), op{Cmd: "STATUS"}.ours("fail", 50),
		del("c-10"), addOK("n-16", "10.95.0.12/24", "fd00:95::30/120"),
		op{Cmd: "GC", Want: "ok", Extra: map[string]any{"cni.dev/valid-attachments": idList(
			"c-01", "c-02", "c-04", "n-00", "n-01", "n-02", "n-16", "n-03/eth1")}},
		check("c-01"), checkFail("c-05"), checkFail("n-03"), check("n-16"),
		addOK("n-17", "10.95.0.13/24", "fd00:95::31/120"), // GC does not rewind the cursor
		addOK("n-18").reqRuntime("10.95.0.30", "fd00:95::99"),
		addOK("n-19", "10.95.0.31/24", "fd00:95::9a/120"),
		del("n-18"), del("n-19"), del("c-01"), del("c-01"),
	)
	return ops
}

// TestTakeoverFromHostLocal: host-local builds a store (with legacy ID-only records added by
// hand), then the plugin under test carries on with it. Reference: host-local carrying on
// with a copy of the same store.
func TestTakeoverFromHostLocal(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dir := t.TempDir()
	r := &seqRunner{
		t:    t,
		tmpl: takeoverConf,
		a:    newSide("A (host-local's store, host-local continues)", filepath.Join(dir, "A"), always(b.hostLocal)),
		b:    newSide("B (copy of host-local's store, plugin continues)", filepath.Join(dir, "B"), always(b.plugin)),
	}
	r.build(r.a, takeoverBuild())
	writeLegacy(t, r.a.netDir())
	copyTree(t, r.a.dataDir, r.b.dataDir)
	for k, v := range r.a.lastAdd {
		r.b.lastAdd[k] = v
	}
	r.runAll(takeoverContinue())
}

// TestTakeoverByHostLocal: the plugin under test builds a store, then host-local carries on
// with it (ADD, CHECK, DEL, GC), then the plugin resumes after host-local touched its store.
// Reference: host-local alone from the start.
func TestTakeoverByHostLocal(t *testing.T) {
	t.Parallel()
	b := needBins(t)
	dir := t.TempDir()
	phase := "build"
	r := &seqRunner{
		t:    t,
		tmpl: takeoverConf,
		a:    newSide("A (host-local throughout)", filepath.Join(dir, "A"), always(b.hostLocal)),
		b: newSide("B (plugin builds, host-local continues, plugin resumes)", filepath.Join(dir, "B"), func(int) string {
			if phase == "hostlocal" {
				return b.hostLocal
			}
			return b.plugin
		}),
	}
	// Build on both sides in lock step (a differential run in itself).
	r.runAll(takeoverBuild())
	writeLegacy(t, r.a.netDir())
	writeLegacy(t, r.b.netDir())

	phase = "hostlocal"
	ops := takeoverContinue()
	r.runAll(ops[:len(ops)-4])

	phase = "plugin"
	r.runAll(seq(
		check("n-16"), checkFail("c-05"), addFail("n-16"),
		addOK("p-1", "10.95.0.32/24", "fd00:95::9b/120"),
		adds("p", 2, 10),
		del("n-16"), del("c-02"), checkFail("c-02"),
		op{Cmd: "GC", Want: "ok", Extra: map[string]any{"cni.dev/valid-attachments": idList("p-1", "p-02", "p-03", "n-00")}},
		adds("p", 10, 20),
		del("p-1"), del("p-10"), check("p-11"),
	))
}

// TestTakeoverInterleaved alternates the two binaries on one data dir (B) and compares with
// host-local alone (A), using several alternation patterns.
func TestTakeoverInterleaved(t *testing.T) {
	b := needBins(t)
	patterns := map[string]func(step int) bool{ // true = plugin under test
		"even-odd":    func(s int) bool { return s%2 == 0 },
		"two-and-one": func(s int) bool { return s%3 != 0 },
		"runs-of-5":   func(s int) bool { return (s/5)%2 == 0 },
	}
	conf := cfg("1.1.0", `{"ranges": [
		[{"subnet": "10.96.0.0/27"}],
		[{"subnet": "fd00:96::/64", "rangeStart": "fd00:96::10", "rangeEnd": "fd00:96::2f"}]]}`)
	for name, usePlugin := range patterns {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := &seqRunner{
				t:    t,
				tmpl: conf,
				a:    newSide("A (host-local alone)", filepath.Join(dir, "A"), always(b.hostLocal)),
				b: newSide("B (binaries alternating)", filepath.Join(dir, "B"), func(s int) string {
					if usePlugin(s) {
						return b.plugin
					}
					return b.hostLocal
				}),
			}
			ops := seq(adds("i", 0, 20))
			ops = append(ops, dels("i", 1, 4, 5, 9, 16)...)
			ops = append(ops, check("i-00"), check("i-19"), checkFail("i-04"), addFail("i-00"),
				addOK("i-20").cniArgs("IP=10.96.0.30"), addOK("i-21").reqArgs("fd00:96::11"))
			ops = append(ops, adds("i", 22, 34)...) // wraps in both sets; fills the v4 set
			ops = append(ops, addFail("i-34"), del("i-22"), del("i-23"))
			ops = append(ops, adds("i", 35, 37)...)
			ops = append(ops, addFail("i-37"), op{Cmd: "STATUS"}.ours("fail", 50))
			ops = append(ops, op{Cmd: "GC", Want: "ok", Extra: map[string]any{"cni.dev/valid-attachments": idList(
				"i-00", "i-02", "i-03", "i-20", "i-21", "i-35", "i-36")}})
			// a second GC, so that every pattern has the plugin run at least one of them
			ops = append(ops, op{Cmd: "GC", Want: "ok", Extra: map[string]any{"cni.dev/valid-attachments": idList(
				"i-00", "i-02", "i-03", "i-20", "i-21", "i-35", "i-36/eth1", "i-99")}})
			ops = append(ops, adds("i", 37, 45)...)
			ops = append(ops, check("i-35"), checkFail("i-06"), del("i-00"), del("i-36"), del("i-36"))
			ops = append(ops, adds("i", 45, 49)...)
			// GC without a list: nothing is valid, whichever binary made the records.
			ops = append(ops, op{Cmd: "GC", Want: "ok"}, checkFail("i-45"), checkFail("i-02"))
			r.runAll(ops)
		})
	}
}
