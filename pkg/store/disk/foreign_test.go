package disk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// Exec-level tests of a store in which another user left files: the built binary run as
// nobody (the runtime's user) on a network directory nobody owns, beside files that only
// root may read. host-local, which reads every record it may and skips the rest, works
// there; local-ipam must too.

// userRig runs the built local-ipam (and host-local) on one network of a data dir that
// nobody may reach.
type userRig struct {
	t       *testing.T
	li, hl  string
	dataDir string
	net     string
	boot    string // LOCAL_IPAM_BOOT_ID_FILE
}

func newUserRig(t *testing.T) *userRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the plugin as uid 65534 beside files of root's")
	}
	base := t.TempDir()
	// t.TempDir's directories are 0700: open the way for nobody.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &userRig{t: t, li: cniexec.Bin(t, "local-ipam"), hl: cniexec.Bin(t, "host-local"),
		dataDir: filepath.Join(base, "data"), net: "net", boot: filepath.Join(base, "boot_id")}
	if err := os.Mkdir(r.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.setBoot("boot-1")
	return r
}

func (r *userRig) dir() string { return filepath.Join(r.dataDir, r.net) }

func (r *userRig) setBoot(id string) {
	r.t.Helper()
	if err := os.WriteFile(r.boot, []byte(id+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// conf: a range of six addresses, 10.60.0.2-10.60.0.7; extra keys go into the ipam
// section, but for prevResult and GC's list, which go to the top level.
func (r *userRig) conf(plugin string, extra map[string]any) []byte {
	ipam := map[string]any{"type": plugin, "dataDir": r.dataDir,
		"ranges": []any{[]any{map[string]any{"subnet": "10.60.0.0/24", "rangeStart": "10.60.0.2", "rangeEnd": "10.60.0.7"}}}}
	top := map[string]any{}
	for k, v := range extra {
		if k == "prevResult" || strings.HasPrefix(k, "cni.dev/") {
			top[k] = v
		} else {
			ipam[k] = v
		}
	}
	return cniexec.NetConf("1.1.0", r.net, ipam, top)
}

// operator runs local-ipam with args, as a person does, as nobody.
func (r *userRig) operator(args ...string) cniexec.Out {
	r.t.Helper()
	opts := cniexec.Options{Env: []string{"PATH=" + os.Getenv("PATH")}, Args: args,
		Cred: &syscall.Credential{Uid: cniexec.Nobody, Gid: cniexec.Nobody}}
	o, err := cniexec.Exec(context.Background(), r.li, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	return o
}

// cni runs one CNI command of local-ipam (or host-local, hl) for container id, as nobody
// or as root.
func (r *userRig) cni(asNobody, hl bool, cmd, id string, extra map[string]any) cniexec.Out {
	r.t.Helper()
	bin, plugin := r.li, "local-ipam"
	if hl {
		bin, plugin = r.hl, "host-local"
	}
	c := cniexec.Call{Cmd: cmd, ID: id, IfName: "eth0", Env: []string{"LOCAL_IPAM_BOOT_ID_FILE=" + r.boot}, Conf: r.conf(plugin, extra)}
	if asNobody {
		c.UID = cniexec.Nobody
	}
	return cniexec.CNI(r.t, bin, c)
}

func (r *userRig) ok(o cniexec.Out, what string) cniexec.Out {
	r.t.Helper()
	if !o.OK() {
		r.t.Fatalf("%s: %s", what, o)
	}
	return o
}

func (r *userRig) code(o cniexec.Out, want uint, what string) {
	r.t.Helper()
	if e, _ := o.Error(); e.Code != want {
		r.t.Fatalf("%s: %s, want code %d", what, o, want)
	}
}

// add is an ADD's one address.
func (r *userRig) add(o cniexec.Out, what string) string {
	r.t.Helper()
	r.ok(o, what)
	addrs := o.Addrs(r.t)
	if len(addrs) != 1 {
		r.t.Fatalf("%s gave %v, want one address", what, addrs)
	}
	p, err := netip.ParsePrefix(addrs[0])
	if err != nil {
		r.t.Fatal(err)
	}
	return p.Addr().String()
}

// prev is a prevResult naming addr, for CHECK.
func prev(addr string) map[string]any {
	return map[string]any{"prevResult": map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": addr + "/24"}}}}
}

// gc is a GC that keeps the attachments "id" (on eth0).
func gc(ids ...string) map[string]any {
	var valid []map[string]string
	for _, id := range ids {
		valid = append(valid, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	return map[string]any{"cni.dev/valid-attachments": valid}
}

func (r *userRig) record(addr string) (string, bool) {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir(), addr))
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b), true
}

// chown gives the network directory and everything in it but .local-ipam to nobody.
func (r *userRig) chown() {
	r.t.Helper()
	ents, err := os.ReadDir(r.dir())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range append([]os.DirEntry{nil}, ents...) {
		p := r.dir()
		if e != nil {
			if e.Name() == ".local-ipam" {
				continue
			}
			p = filepath.Join(p, e.Name())
		}
		if err := os.Lchown(p, cniexec.Nobody, cniexec.Nobody); err != nil {
			r.t.Fatal(err)
		}
	}
}

// fill ADDs new containers as nobody until the range is full, and returns the addresses
// they got.
func (r *userRig) fill(prefix string) []string {
	r.t.Helper()
	var got []string
	for i := range 7 {
		id := fmt.Sprintf("%s%d", prefix, i)
		o := r.cni(true, false, "ADD", id, nil)
		if !o.OK() {
			r.code(o, 100, "ADD "+id)
			return got
		}
		got = append(got, r.add(o, "ADD "+id))
	}
	r.t.Fatalf("7 ADDs into a range of 6 succeeded: %v", got)
	return nil
}

// A record only root may read (root ran the plugin once on nobody's store) is held by an
// owner nobody cannot name: every call as nobody works, with that address never handed
// out and the record never removed (DEL, GC), as host-local leaves it; only freeOnReboot,
// which frees every record whatever it holds, removes it.
func TestRecordOfAnotherUser(t *testing.T) {
	r := newUserRig(t)
	if err := os.Mkdir(r.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(r.dir(), cniexec.Nobody, cniexec.Nobody); err != nil {
		t.Fatal(err)
	}
	a1 := r.add(r.cni(true, false, "ADD", "c1", nil), "nobody's ADD c1")
	rootAddr := r.add(r.cni(false, false, "ADD", "r1", nil), "root's ADD r1")
	rootRec, _ := r.record(rootAddr)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(r.dir(), rootAddr), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || st.Mode&0o077 != 0 {
		t.Fatalf("the premise: root's record %s is uid %d mode %o, want root's, readable by root only", rootAddr, st.Uid, st.Mode&0o777)
	}
	// The index, current (root's call committed), says r1 holds rootAddr: the record,
	// which CHECK and DEL read, says nothing to nobody.
	r.code(r.cni(true, false, "CHECK", "r1", prev(rootAddr)), 105, "CHECK r1 as nobody (its record unreadable)")
	if o := r.operator("list", "--json", "--data-dir", r.dataDir, "--network", r.net); !o.OK() {
		t.Fatalf("list as nobody: %s", o)
	} else if !json.Valid([]byte(o.Stdout)) || !strings.Contains(o.Stdout, a1) {
		t.Fatalf("list as nobody does not list c1's %s: %s", a1, o)
	}
	r.ok(r.cni(true, false, "DEL", "r1", nil), "DEL r1 as nobody")
	if got, ok := r.record(rootAddr); !ok || got != rootRec {
		t.Fatalf("DEL r1 as nobody changed root's record %s: %q, %v", rootAddr, got, ok)
	}
	// host-local, as nobody, adds one behind local-ipam's index: the next call rebuilds
	// the index from the records, root's included.
	h1 := r.add(r.cni(true, true, "ADD", "h1", nil), "host-local's ADD h1 as nobody")
	r.ok(r.cni(true, false, "GC", "", gc("c1", "h1")), "GC as nobody, r1 not valid")
	if got, ok := r.record(rootAddr); !ok || got != rootRec {
		t.Fatalf("GC as nobody changed root's record %s, which it cannot read: %q, %v", rootAddr, got, ok)
	}
	r.ok(r.cni(true, false, "STATUS", "", nil), "STATUS as nobody")
	r.ok(r.cni(true, false, "CHECK", "c1", prev(a1)), "CHECK c1 as nobody")

	// The rest of the range, and no more: never root's address.
	got := r.fill("f")
	taken := map[string]bool{a1: true, h1: true, rootAddr: true}
	for _, a := range got {
		if taken[a] {
			t.Fatalf("nobody's ADDs got %v: %s was taken already (root's record: %s)", got, a, rootAddr)
		}
		taken[a] = true
	}
	if len(taken) != 6 {
		t.Fatalf("nobody's ADDs got %v: with c1 %s, h1 %s and root's %s, %d of the 6 addresses are held", got, a1, h1, rootAddr, len(taken))
	}

	// freeOnReboot, after a reboot: every record goes, root's too.
	reboot := map[string]any{"freeOnReboot": true}
	r.ok(r.cni(true, false, "CHECK", "c1", map[string]any{"freeOnReboot": true, "prevResult": prev(a1)["prevResult"]}), "CHECK with freeOnReboot (the boot ID noted)")
	r.setBoot("boot-2")
	a := r.add(r.cni(true, false, "ADD", "after", reboot), "nobody's first ADD after the reboot")
	left := map[string]bool{}
	for held := range taken {
		if _, ok := r.record(held); ok {
			left[held] = true
		}
	}
	if len(left) != 1 || !left[a] {
		t.Errorf("after the reboot and one ADD (which got %s), the records of %v are left; root's was %s", a, left, rootAddr)
	}
}

// An index directory nobody may use (root's, left behind when the network directory was
// handed over to nobody): every call as nobody works from the records, with a note on
// stderr and a clean stdout; root's index, once back, notices what nobody changed.
func TestIndexOfAnotherUser(t *testing.T) {
	for _, c := range []struct {
		name        string
		meta, state os.FileMode
	}{
		{"index directory root's, mode 0700", 0o700, 0o600},
		{"index state root's, mode 0600", 0o755, 0o600},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newUserRig(t)
			root1 := r.add(r.cni(false, false, "ADD", "r1", nil), "root's ADD r1")
			root2 := r.add(r.cni(false, false, "ADD", "r2", nil), "root's ADD r2")
			r.chown()
			meta := filepath.Join(r.dir(), ".local-ipam")
			if err := os.Chmod(meta, c.meta); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(meta, "state"), c.state); err != nil {
				t.Fatal(err)
			}

			o := r.cni(true, false, "ADD", "c1", nil)
			a1 := r.add(o, "nobody's ADD c1")
			if !strings.Contains(o.Stderr, ".local-ipam") {
				t.Errorf("nobody's ADD said nothing on stderr about the index it could not use: %s", o)
			}
			r.ok(r.cni(true, false, "CHECK", "c1", prev(a1)), "CHECK c1 as nobody")
			r.ok(r.cni(true, false, "STATUS", "", nil), "STATUS as nobody")
			r.ok(r.cni(true, false, "DEL", "r1", nil), "DEL r1 as nobody")
			if _, ok := r.record(root1); ok {
				t.Fatalf("DEL r1 as nobody answered 0 and left its record %s", root1)
			}
			// freeOnReboot cannot keep the boot ID here: nothing is freed on its word.
			r.setBoot("boot-2")
			r.ok(r.cni(true, false, "STATUS", "", map[string]any{"freeOnReboot": true}), "STATUS with freeOnReboot as nobody")
			if _, ok := r.record(root2); !ok {
				t.Fatalf("freeOnReboot without its boot ID removed r2's record %s", root2)
			}

			got := r.fill("f")
			taken := map[string]bool{a1: true, root2: true}
			for _, a := range got {
				if taken[a] {
					t.Fatalf("nobody's ADDs got %v: %s was taken already", got, a)
				}
				taken[a] = true
			}
			if len(taken) != 6 {
				t.Fatalf("nobody's ADDs got %v: with c1's %s and r2's %s, %d of 6 addresses held", got, a1, root2, len(taken))
			}
			// root's index, behind which nobody changed the records, is rebuilt.
			r.ok(r.cni(false, false, "CHECK", "c1", prev(a1)), "root's CHECK of nobody's c1")
			r.code(r.cni(false, false, "ADD", "r3", nil), 100, "root's ADD into the full range")
			r.ok(r.cni(false, false, "DEL", "c1", nil), "root's DEL of nobody's c1")
			if _, ok := r.record(a1); ok {
				t.Fatalf("root's DEL c1 left its record %s", a1)
			}
		})
	}
}
