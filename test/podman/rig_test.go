package podman

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/internal/cniexec"
	"github.com/local-ipam/local-ipam/internal/mounttest"
)

const (
	// namePrefix starts the name of every rig directory, network namespace and network of
	// this package: lipam-podman-<pid>-<tag>, so that leftovers of a killed run are found.
	namePrefix    = "lipam-podman-"
	netnsDir      = "/run/netns"
	cniDataDir    = "/var/lib/cni/networks" // host-local's default dataDir
	cniResultsDir = "/var/lib/cni/results"  // libcni's result cache, which podman 4 uses
	image         = "localhost/lipam-busybox"
	podmanTimeout = 3 * time.Minute
)

// defaultPluginDirs are podman's built-in cni_plugin_dirs: where a runtime that ignored the
// rig's containers.conf would find another host-local.
var defaultPluginDirs = []string{"/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni", "/usr/lib/cni", "/opt/cni/bin"}

// peerPlugins are the CNI plugins a podman network needs besides the IPAM: the bridge, and
// the ones `podman network create` writes after it.
var peerPlugins = []string{"bridge", "portmap", "firewall", "tuning"}

var (
	pid     = os.Getpid()
	staleRe = regexp.MustCompile(`^` + namePrefix + `(\d+)-[a-z]+`)
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		sweepStale()
	}
	os.Exit(m.Run())
}

// sweepStale removes what an earlier run of this package left when it was killed before its
// cleanups ran: its containers, mounts and temporary directories, network namespaces, and
// its networks' records and result cache under /var/lib/cni. Only names of this package
// whose process is gone are touched.
func sweepStale() {
	dead := func(name string) (string, bool) {
		m := staleRe.FindStringSubmatch(name)
		if m == nil {
			return "", false
		}
		p, err := strconv.Atoi(m[1])
		if err != nil || p == pid {
			return "", false
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if errors.Is(err, os.ErrNotExist) {
			return m[0], true
		}
		i := bytes.LastIndexByte(stat, ')')
		return m[0], err == nil && i >= 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z"))
	}
	podman, _ := exec.LookPath("podman")
	nsenter, _ := exec.LookPath("nsenter")
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range entries {
			if name, ok := dead(e.Name()); ok && e.IsDir() {
				r := &rig{name: name, dir: filepath.Join(os.TempDir(), e.Name()), podmanBin: podman, nsenter: nsenter}
				r.teardown(func(string, ...any) {})
			}
		}
	}
	for _, dir := range []string{netnsDir, cniDataDir, cniResultsDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if _, ok := dead(e.Name()); !ok {
				continue
			}
			if dir == netnsDir {
				_ = exec.Command("ip", "netns", "del", e.Name()).Run()
			} else {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// rig is one podman installation of its own: storage, run state, network configs and CNI
// plugin directory in a temporary directory, and a network namespace that podman runs in
// (its bridges, their addresses and the plugins' firewall rules stay there). name is both
// the network namespace's and the podman network's.
type rig struct {
	t         *testing.T
	name      string
	dir       string
	podmanBin string
	nsenter   string
}

func (r *rig) path(elem ...string) string { return filepath.Join(append([]string{r.dir}, elem...)...) }
func (r *rig) conf() string               { return r.path("containers.conf") }
func (r *rig) pluginDir() string          { return r.path("cni-plugins") }
func (r *rig) netconfDir() string         { return r.path("cni-netconf") }
func (r *rig) dataDir() string            { return r.path("cni-data") } // for the conflists the test writes
func (r *rig) netns() string              { return filepath.Join(netnsDir, r.name) }

// newRig checks the prerequisites (skipping without root or podman 4), makes the rig with
// the peer plugins installed and the busybox image imported, and tears it all down when the
// test ends, whatever happened.
func newRig(t *testing.T, tag string) *rig {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Skipf("podman tests need root: rootful podman, network namespaces (running as uid %d)", uid)
	}
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skipf("podman not found (%v): apt-get install podman runc busybox-static (.ci/run does)", err)
	}
	// "podman version X.Y.Z"; --version reads no configuration and touches no state.
	out, err := exec.Command(podman, "--version").Output()
	if err != nil {
		t.Fatalf("podman --version: %v", err)
	}
	version := strings.TrimPrefix(strings.TrimSpace(string(out)), "podman version ")
	if major, _, _ := strings.Cut(version, "."); major != "4" {
		t.Skipf("podman %s: these tests need podman 4, the last one with a CNI backend", version)
	}
	for tool, pkg := range map[string]string{"nsenter": "util-linux", "runc": "runc", "ip": "iproute2", "iptables": "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found in PATH: install the Debian package %s (.ci/run does)", tool, pkg)
		}
	}
	nsenter, _ := exec.LookPath("nsenter")
	bbTar := busyboxRootfs(t)
	cniexec.Bin(t, "local-ipam")
	for _, p := range peerPlugins {
		cniexec.Bin(t, p)
	}

	name := fmt.Sprintf("%s%d-%s", namePrefix, pid, tag)
	dir, err := os.MkdirTemp("", name+"-")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, name: name, dir: dir, podmanBin: podman, nsenter: nsenter}
	t.Cleanup(func() { r.teardown(t.Logf) })
	for _, d := range []string{r.pluginDir(), r.netconfDir(), r.path("tmp"), r.path("home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("ip", "netns", "add", r.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", r.name, err, out)
	}
	if out, err := exec.Command("ip", "-n", r.name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", r.name, err, out)
	}
	conf := fmt.Sprintf(`[containers]
# podman's defaults (nofile 1048576, nproc 4194304) exceed the hard limits a root without
# CAP_SYS_RESOURCE may set.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
events_logger = "file"

[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q
`, r.pluginDir(), r.netconfDir())
	if err := os.WriteFile(r.conf(), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range peerPlugins {
		r.installPlugin(cniexec.Bin(t, p), p)
	}
	if backend, err := r.podman(nil, "info", "--format", "{{.Host.NetworkBackend}}"); err != nil || strings.TrimSpace(backend) != "cni" {
		t.Fatalf("podman does not use the CNI backend of %s: %q %v", r.conf(), backend, err)
	}
	if _, err := r.podman(bbTar, "import", "-", image); err != nil {
		t.Fatalf("importing the busybox image: %v", err)
	}
	return r
}

// installPlugin puts the binary src into the rig's CNI plugin directory as name, the way
// an administrator replaces a plugin: a new file beside it, then a rename over the name.
func (r *rig) installPlugin(src, name string) {
	r.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		r.t.Fatal(err)
	}
	tmp := filepath.Join(r.pluginDir(), "."+name+".new")
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(r.pluginDir(), name)); err != nil {
		r.t.Fatal(err)
	}
}

// env is podman's whole environment: the rig's containers.conf, nothing from the machine's
// user configuration, and the sbin directories the firewall plugins' iptables lives in.
func (r *rig) env() []string {
	return []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"HOME=" + r.path("home"),
		"TMPDIR=" + r.path("tmp"),
		"CONTAINERS_CONF=" + r.conf(),
	}
}

// podman runs podman with the rig's global flags inside the rig's network namespace and
// returns its stdout; the error carries stderr.
func (r *rig) podman(stdin []byte, args ...string) (string, error) {
	full := []string{"--net=" + r.netns(), r.podmanBin,
		"--root", r.path("root"), "--runroot", r.path("run"), "--tmpdir", r.path("tmp"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
		"--network-config-dir", r.netconfDir(), "--runtime", "runc"}
	full = append(full, args...)
	o, err := cniexec.Exec(context.Background(), r.nsenter, cniexec.Options{Args: full, Env: r.env(), Stdin: stdin, Timeout: podmanTimeout})
	if err != nil {
		return o.Stdout, err
	}
	if o.Exit != 0 {
		return o.Stdout, fmt.Errorf("podman %s: exit status %d: %s", strings.Join(args, " "), o.Exit, strings.TrimSpace(o.Stderr))
	}
	return o.Stdout, nil
}

// teardown removes the rig's containers (podman's own DEL of their networks), any mount
// left under the rig, the network namespace, the directory, and what the network left in
// /var/lib/cni. Every step runs whatever the earlier ones did.
func (r *rig) teardown(logf func(string, ...any)) {
	if _, err := os.Stat(filepath.Join(r.dir, "containers.conf")); err == nil && r.podmanBin != "" && r.nsenter != "" {
		if _, err := os.Stat(r.netns()); err != nil {
			// Containers' networks are torn down from the namespace they were set up in.
			_ = exec.Command("ip", "netns", "add", r.name).Run()
		}
		if _, err := r.podman(nil, "rm", "--all", "--force", "--time", "0"); err != nil {
			logf("teardown: %v", err)
		}
	}
	// conmon runs `podman container cleanup` when a container exits, after podman rm has
	// returned: let those finish before removing the storage they lock.
	if left := waitProcessesGone(r.dir, 30*time.Second); len(left) > 0 {
		logf("teardown: processes still using %s: %v", r.dir, left)
	}
	unmountUnder(r.dir, logf)
	if _, err := os.Stat(r.netns()); err == nil {
		if out, err := exec.Command("ip", "netns", "del", r.name).CombinedOutput(); err != nil {
			logf("teardown: ip netns del %s: %v: %s", r.name, err, out)
		}
	}
	if err := os.RemoveAll(r.dir); err != nil {
		logf("teardown: %v", err)
	}
	_ = os.RemoveAll(filepath.Join(cniDataDir, r.name))
	results, _ := filepath.Glob(filepath.Join(cniResultsDir, r.name+"-*"))
	for _, f := range results {
		_ = os.Remove(f)
	}
}

// waitProcessesGone waits until no process has dir in its command line, and returns the
// ones that still do after the timeout.
func waitProcessesGone(dir string, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			cmdline, err := os.ReadFile(p)
			if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) {
				n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				left = append(left, n)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string, logf func(string, ...any)) {
	points, _ := mounttest.Under(dir)
	for _, mp := range points {
		if mp == dir {
			continue
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			logf("teardown: umount %s: %v", mp, err)
		}
	}
}

// busyboxRootfs is a root file system as a tar stream: a static busybox (Debian's
// busybox-static) and a link for each of its applets in /bin.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	path, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found (%v): apt-get install busybox-static (.ci/run does)", err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			ef.Close()
			t.Fatalf("%s is dynamically linked and cannot run alone in a container: apt-get install busybox-static", path)
		}
	}
	ef.Close()
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(path, "--list").Output()
	if err != nil {
		t.Fatalf("%s --list: %v", path, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(h *tar.Header, data []byte) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	write(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	write(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			write(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// execWatch counts, through inotify, the opens of a few files: an exec of a binary opens
// it. It tells which plugin binaries the runtime ran. Consecutive identical events may be
// merged by the kernel, so a count is a lower bound of at least 1 per file opened.
type execWatch struct {
	fd    int
	files map[int32]string
}

// watchOpens watches every file of files that exists.
func watchOpens(t *testing.T, files ...string) *execWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify_init1: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	w := &execWatch{fd: fd, files: map[int32]string{}}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			continue
		}
		wd, err := unix.InotifyAddWatch(fd, f, unix.IN_OPEN)
		if err != nil {
			t.Fatalf("inotify_add_watch %s: %v", f, err)
		}
		w.files[int32(wd)] = f
	}
	return w
}

// watched lists the files under watch.
func (w *execWatch) watched() []string {
	var fs []string
	for _, f := range w.files {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	return fs
}

// opens drains the events so far: opens per watched file (absent: none).
func (w *execWatch) opens() (map[string]int, error) {
	n := map[string]int{}
	buf := make([]byte, 64<<10)
	for {
		k, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := binary.NativeEndian.Uint32(buf[off+12:])
			if mask&unix.IN_Q_OVERFLOW != 0 {
				return n, errors.New("inotify queue overflow")
			}
			if mask&unix.IN_OPEN != 0 {
				n[w.files[wd]]++
			}
			off += unix.SizeofInotifyEvent + int(nameLen)
		}
	}
}

// parallel runs f for every item at once and returns the errors, each prefixed with its item.
func parallel(items []string, f func(string) error) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(it); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", it, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}
