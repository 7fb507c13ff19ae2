package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/local-ipam/local-ipam/internal/cniexec"
)

// Exec-level tests of `local-ipam install` and `local-ipam uninstall`: the built binaries,
// copied into a directory of their own as `make build` leaves them, put into a plugin
// directory of the test's. The name test and the install-during-calls test are in
// install_run_test.go.

// buildDir is a directory that anyone may read, holding copies of the built local-ipam and
// local-ipam-etcd (and, with metrics, local-ipam-metrics).
func buildDir(t *testing.T, metrics bool) string {
	t.Helper()
	dir := openTempDir(t, "local-ipam-build-")
	cniexec.CopyExecutable(t, cniexec.Bin(t, "local-ipam"), filepath.Join(dir, "local-ipam"))
	cniexec.CopyExecutable(t, cniexec.Bin(t, "local-ipam-etcd"), filepath.Join(dir, "local-ipam-etcd"))
	if metrics {
		cniexec.CopyExecutable(t, cniexec.Bin(t, "local-ipam-metrics"), filepath.Join(dir, "local-ipam-metrics"))
	}
	return dir
}

// pluginDirWith is a build directory (without local-ipam-metrics) and a plugin directory
// holding copies of the given peer binaries (name -> path).
func pluginDirWith(t *testing.T, peers map[string]string) (build, dir string) {
	t.Helper()
	build, dir = buildDir(t, false), t.TempDir()
	for name, path := range peers {
		cniexec.CopyExecutable(t, path, filepath.Join(dir, name))
	}
	return build, dir
}

// openTempDir is a temporary directory of mode 0755 (t.TempDir's are 0700), removed at the
// end of the test.
func openTempDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chmod(dir, 0o755)
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// install runs <build>/local-ipam with args (install or uninstall and their flags).
func install(t testing.TB, build string, args ...string) cniexec.Out {
	t.Helper()
	return cniexec.Run(t, filepath.Join(build, "local-ipam"), nil, nil, args...)
}

// wantInstallOK requires exit 0, nothing on stderr, and exactly the lines want on stdout
// (with DIR standing for dir).
func wantInstallOK(t testing.TB, o cniexec.Out, dir string, want ...string) {
	t.Helper()
	got := strings.ReplaceAll(strings.TrimRight(o.Stdout, "\n"), dir, "DIR")
	if o.Exit != 0 || o.Stderr != "" || got != strings.Join(want, "\n") {
		t.Fatalf("got %s\nwant exit 0 and stdout:\n%s", o, strings.Join(want, "\n"))
	}
}

// wantInstallFail requires exit code with a one-line "local-ipam: ..." message on stderr
// that contains each of msgs, and nothing on stdout.
func wantInstallFail(t testing.TB, o cniexec.Out, code int, msgs ...string) {
	t.Helper()
	noPanic(t, o)
	if o.Exit != code || o.Stdout != "" || !strings.HasPrefix(o.Stderr, "local-ipam: ") {
		t.Fatalf("want exit %d and a message on stderr only, got %s", code, o)
	}
	for _, m := range msgs {
		if !strings.Contains(o.Stderr, m) {
			t.Errorf("message does not say %q: %s", m, o.Stderr)
		}
	}
}

// wantPluginDir requires the plugin directory to hold exactly want: name -> the file whose
// copy it must be, as an executable of mode 0755.
func wantPluginDir(t testing.TB, dir string, want map[string]string, when string) {
	t.Helper()
	w := map[string]string{}
	for name, src := range want {
		w[name] = "-rwxr-xr-x " + mustRead(t, src)
	}
	got := treeFiles(t, dir)
	delete(got, ".")
	if len(got) != len(w) {
		var names []string
		for n := range got {
			names = append(names, n)
		}
		t.Fatalf("%s: %s holds %v, want %d files", when, dir, names, len(w))
	}
	for name, content := range w {
		if g, ok := got[name]; !ok {
			t.Fatalf("%s: %s missing", when, name)
		} else if g != content {
			t.Fatalf("%s: %s is not a copy of %s", when, name, want[name])
		}
	}
}

func TestInstall(t *testing.T) {
	t.Parallel()
	hostLocal := cniexec.Bin(t, "host-local")
	bridge := cniexec.Bin(t, "bridge")

	t.Run("own name: local-ipam-etcd and local-ipam-metrics first, uninstall leaves other plugins", func(t *testing.T) {
		t.Parallel()
		b := buildDir(t, true)
		dir := t.TempDir()
		cniexec.CopyExecutable(t, bridge, filepath.Join(dir, "bridge"))
		for i := 0; i < 2; i++ { // a second install replaces the files with the same
			wantInstallOK(t, install(t, b, "install", "--dir", dir), dir,
				"installed DIR/local-ipam-etcd", "installed DIR/local-ipam-metrics", "installed DIR/local-ipam")
			wantPluginDir(t, dir, map[string]string{
				"bridge": bridge, "local-ipam": filepath.Join(b, "local-ipam"),
				"local-ipam-etcd": filepath.Join(b, "local-ipam-etcd"), "local-ipam-metrics": filepath.Join(b, "local-ipam-metrics"),
			}, "after install")
		}
		// The installed local-ipam runs, and installs from where it is.
		wantInstallOK(t, install(t, dir, "install", "--dir", dir), dir,
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam-metrics", "installed DIR/local-ipam")
		o := cniexec.Run(t, filepath.Join(dir, "local-ipam"), nil, nil, "version")
		if o.Exit != 0 || !strings.HasPrefix(o.Stdout, "local-ipam ") {
			t.Fatalf("installed local-ipam version: %s", o)
		}
		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir), dir,
			"removed DIR/local-ipam", "removed DIR/local-ipam-metrics", "removed DIR/local-ipam-etcd")
		wantPluginDir(t, dir, map[string]string{"bridge": bridge}, "after uninstall")
		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir), dir, "nothing of local-ipam's to remove in DIR")
	})

	t.Run("without local-ipam-metrics beside it", func(t *testing.T) {
		t.Parallel()
		b := buildDir(t, false)
		dir := t.TempDir()
		wantInstallOK(t, install(t, b, "install", "--dir", dir), dir, "installed DIR/local-ipam-etcd", "installed DIR/local-ipam")
		wantPluginDir(t, dir, map[string]string{"local-ipam": filepath.Join(b, "local-ipam"), "local-ipam-etcd": filepath.Join(b, "local-ipam-etcd")}, "after install")
	})

	t.Run("as host-local over the reference host-local, kept once as host-local.orig and put back", func(t *testing.T) {
		t.Parallel()
		b, dir := pluginDirWith(t, map[string]string{"host-local": hostLocal, "bridge": bridge})
		self, etcd := filepath.Join(b, "local-ipam"), filepath.Join(b, "local-ipam-etcd")
		installed := map[string]string{"bridge": bridge, "host-local.orig": hostLocal, "host-local": self, "local-ipam": self, "local-ipam-etcd": etcd}

		o := install(t, b, "install", "--dir", dir, "--as", "host-local")
		wantInstallOK(t, o, dir, "installed DIR/local-ipam-etcd", "installed DIR/local-ipam",
			"kept DIR/host-local (github.com/containernetworking/plugins/plugins/ipam/host-local "+goVersion(t)+") as DIR/host-local.orig",
			"installed DIR/host-local (local-ipam)")
		wantPluginDir(t, dir, installed, "after install --as host-local")

		// Again: host-local is local-ipam now, and host-local.orig stays the original.
		wantInstallOK(t, install(t, b, "install", "--dir", dir, "--as", "host-local"), dir,
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam", "installed DIR/host-local (local-ipam)")
		wantPluginDir(t, dir, installed, "after a second install --as host-local")

		// A plain uninstall would take local-ipam-etcd from under host-local.
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir), 1, dir+"/host-local is local-ipam", "uninstall --as host-local")
		wantPluginDir(t, dir, installed, "after the refused uninstall")

		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), dir,
			"put DIR/host-local.orig back as DIR/host-local", "removed DIR/local-ipam", "removed DIR/local-ipam-etcd")
		wantPluginDir(t, dir, map[string]string{"bridge": bridge, "host-local": hostLocal}, "after uninstall --as host-local")
		// Done already: nothing to put back, the reference host-local untouched.
		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), dir,
			"no DIR/host-local.orig to put back, and DIR/host-local is not local-ipam: left as it is",
			"nothing of local-ipam's to remove in DIR")
		wantPluginDir(t, dir, map[string]string{"bridge": bridge, "host-local": hostLocal}, "after a second uninstall")
	})

	t.Run("as host-local again after another host-local replaced it: host-local.orig is never overwritten", func(t *testing.T) {
		t.Parallel()
		b, dir := pluginDirWith(t, map[string]string{"host-local": hostLocal})
		self, etcd := filepath.Join(b, "local-ipam"), filepath.Join(b, "local-ipam-etcd")
		wantInstallOK(t, install(t, b, "install", "--dir", dir, "--as", "host-local"), dir,
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam",
			"kept DIR/host-local (github.com/containernetworking/plugins/plugins/ipam/host-local "+goVersion(t)+") as DIR/host-local.orig",
			"installed DIR/host-local (local-ipam)")
		// A package upgrade puts another plugin's binary there (bridge stands in for it).
		cniexec.CopyExecutable(t, bridge, filepath.Join(dir, "host-local"))
		installed := map[string]string{"host-local.orig": hostLocal, "host-local": bridge, "local-ipam": self, "local-ipam-etcd": etcd}

		// uninstall --as host-local refuses to put the original over it.
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), 1,
			dir+"/host-local is not local-ipam", "plugins/main/bridge", "nothing changed")
		wantPluginDir(t, dir, installed, "after the refused uninstall")

		wantInstallOK(t, install(t, b, "install", "--dir", dir, "--as", "host-local"), dir,
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam",
			"kept DIR/host-local.orig, the original from an earlier install; DIR/host-local (github.com/containernetworking/plugins/plugins/main/bridge "+goVersion(t)+") is replaced",
			"installed DIR/host-local (local-ipam)")
		installed["host-local"] = self
		wantPluginDir(t, dir, installed, "after the second install")
	})

	t.Run("as host-local where there was none: uninstall --as host-local has nothing to put back", func(t *testing.T) {
		t.Parallel()
		b := buildDir(t, false)
		dir := t.TempDir()
		self, etcd := filepath.Join(b, "local-ipam"), filepath.Join(b, "local-ipam-etcd")
		wantInstallOK(t, install(t, b, "install", "--dir", dir, "--as", "host-local"), dir,
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam", "installed DIR/host-local (local-ipam)")
		installed := map[string]string{"host-local": self, "local-ipam": self, "local-ipam-etcd": etcd}
		wantPluginDir(t, dir, installed, "after install")
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), 1,
			dir+"/host-local is local-ipam and there is no "+dir+"/host-local.orig to put back", "nothing changed", "delete "+dir+"/host-local yourself")
		wantPluginDir(t, dir, installed, "after the refused uninstall")
	})

	t.Run("copies left by a killed install or uninstall are removed by the next one", func(t *testing.T) {
		t.Parallel()
		b, dir := pluginDirWith(t, map[string]string{"host-local": hostLocal, "bridge": bridge})
		// What install leaves when killed during a copy: the part written, mode 0600,
		// named as place names it. Another plugin's dot file is not install's.
		partial := []string{".local-ipam-etcd.new-1986181206", ".local-ipam.new-42", ".host-local.new-7"}
		for _, name := range partial {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("\x7fELF part"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cniexec.CopyExecutable(t, bridge, filepath.Join(dir, ".bridge.new-1"))
		self, etcd := filepath.Join(b, "local-ipam"), filepath.Join(b, "local-ipam-etcd")
		o := install(t, b, "install", "--dir", dir, "--as", "host-local")
		wantInstallOK(t, o, dir, "removed DIR/.host-local.new-7, DIR/.local-ipam-etcd.new-1986181206, DIR/.local-ipam.new-42 (left by an interrupted install)",
			"installed DIR/local-ipam-etcd", "installed DIR/local-ipam",
			"kept DIR/host-local (github.com/containernetworking/plugins/plugins/ipam/host-local "+goVersion(t)+") as DIR/host-local.orig",
			"installed DIR/host-local (local-ipam)")
		wantPluginDir(t, dir, map[string]string{"bridge": bridge, ".bridge.new-1": bridge, "host-local.orig": hostLocal,
			"host-local": self, "local-ipam": self, "local-ipam-etcd": etcd}, "after install")

		if err := os.WriteFile(filepath.Join(dir, partial[0]), []byte("part"), 0o600); err != nil {
			t.Fatal(err)
		}
		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), dir,
			"put DIR/host-local.orig back as DIR/host-local",
			"removed DIR/.local-ipam-etcd.new-1986181206 (left by an interrupted install)",
			"removed DIR/local-ipam", "removed DIR/local-ipam-etcd")
		wantPluginDir(t, dir, map[string]string{"bridge": bridge, ".bridge.new-1": bridge, "host-local": hostLocal}, "after uninstall")
	})

	t.Run("uninstall as host-local after an install killed once it kept the original", func(t *testing.T) {
		t.Parallel()
		b, dir := pluginDirWith(t, map[string]string{"host-local": hostLocal})
		wantInstallOK(t, install(t, b, "install", "--dir", dir), dir, "installed DIR/local-ipam-etcd", "installed DIR/local-ipam")
		// install --as host-local links host-local.orig to host-local before it
		// replaces host-local: killed in between, both are the original.
		if err := os.Link(filepath.Join(dir, "host-local"), filepath.Join(dir, "host-local.orig")); err != nil {
			t.Fatal(err)
		}
		wantInstallOK(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), dir,
			"DIR/host-local.orig is DIR/host-local itself (kept by an install that did not finish): removed it; DIR/host-local left as it is",
			"removed DIR/local-ipam", "removed DIR/local-ipam-etcd")
		wantPluginDir(t, dir, map[string]string{"host-local": hostLocal}, "after uninstall")
	})

	t.Run("uninstall leaves local-ipam-etcd while another name is local-ipam", func(t *testing.T) {
		t.Parallel()
		b, dir := pluginDirWith(t, map[string]string{"host-local": hostLocal})
		self, etcd := filepath.Join(b, "local-ipam"), filepath.Join(b, "local-ipam-etcd")
		if o := install(t, b, "install", "--dir", dir, "--as", "host-local"); o.Exit != 0 {
			t.Fatalf("install: %s", o)
		}
		if o := install(t, b, "install", "--dir", dir, "--as", "my-ipam"); o.Exit != 0 {
			t.Fatalf("install: %s", o)
		}
		installed := map[string]string{"host-local.orig": hostLocal, "host-local": self, "my-ipam": self, "local-ipam": self, "local-ipam-etcd": etcd}
		// A mistyped --as (or a plain uninstall) would take local-ipam-etcd from under
		// host-local and my-ipam, which hand etcd networks to it.
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir, "--as", "hostlocal"), 1, dir+"/host-local is local-ipam", "uninstall --as host-local")
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir, "--as", "host-local"), 1, dir+"/my-ipam is local-ipam", "uninstall --as my-ipam")
		wantInstallFail(t, install(t, b, "uninstall", "--dir", dir), 1, dir+"/host-local is local-ipam", "uninstall --as host-local")
		wantPluginDir(t, dir, installed, "after the refused uninstalls")
	})

	t.Run("concurrent installs and uninstalls as host-local: the original is never lost", func(t *testing.T) {
		t.Parallel()
		b := buildDir(t, true)
		dir := t.TempDir()
		cniexec.CopyExecutable(t, hostLocal, filepath.Join(dir, "host-local"))
		self := filepath.Join(b, "local-ipam")
		installed := map[string]string{
			"host-local.orig": hostLocal, "host-local": self, "local-ipam": self,
			"local-ipam-etcd": filepath.Join(b, "local-ipam-etcd"), "local-ipam-metrics": filepath.Join(b, "local-ipam-metrics"),
		}
		for round := 0; round < 3; round++ {
			var wg sync.WaitGroup
			outs := make([]cniexec.Out, 8)
			for i := range outs {
				cmd := []string{"install", "uninstall"}[i%2]
				wg.Add(1)
				go func() {
					defer wg.Done()
					outs[i], _ = cniexec.Exec(context.Background(), self, cniexec.Options{Args: []string{cmd, "--dir", dir, "--as", "host-local"}})
				}()
			}
			wg.Wait()
			for _, o := range outs {
				if o.Exit != 0 || o.Stderr != "" {
					t.Fatalf("round %d: concurrent install or uninstall: %s", round, o)
				}
			}
			// Installed or not, as one whole: the last one decides.
			if o := install(t, b, "install", "--dir", dir, "--as", "host-local"); o.Exit != 0 {
				t.Fatalf("install: %s", o)
			}
			wantPluginDir(t, dir, installed, "after concurrent installs and uninstalls")
		}
	})
}

// goVersion is the Go release the peers were built with, as their build info says it.
func goVersion(t testing.TB) string {
	t.Helper()
	o, err := cniexec.Exec(context.Background(), "go", cniexec.Options{Args: []string{"version", cniexec.Bin(t, "host-local")}})
	if err != nil || o.Exit != 0 {
		t.Fatalf("go version: %v %s", err, o)
	}
	// "<path>: go1.x.y"
	_, v, _ := strings.Cut(strings.TrimSpace(o.Stdout), ": ")
	return v
}

func TestInstallErrors(t *testing.T) {
	t.Parallel()
	b := buildDir(t, false)

	t.Run("plugin directory missing", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "no-such-dir")
		for _, cmd := range []string{"install", "uninstall"} {
			wantInstallFail(t, install(t, b, cmd, "--dir", dir), 1, cmd+": "+dir+" does not exist", "mkdir -p "+dir)
		}
		if pathExists(dir) {
			t.Errorf("%s was created", dir)
		}
	})

	t.Run("plugin directory is a file", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "file")
		writeIn(t, filepath.Dir(file), "file", "x")
		wantInstallFail(t, install(t, b, "install", "--dir", file), 1, file+" is not a directory")
	})

	t.Run("plugin directory not writable", func(t *testing.T) {
		t.Parallel()
		dir := openTempDir(t, "local-ipam-ro-")
		opts := cniexec.Options{Args: []string{"install", "--dir", dir}}
		if os.Geteuid() == 0 {
			// Root writes anywhere: install as nobody into root's directory.
			opts.Cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		} else if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		o, err := cniexec.Exec(context.Background(), filepath.Join(b, "local-ipam"), opts)
		if err != nil {
			t.Fatal(err)
		}
		wantInstallFail(t, o, 1, "install: "+dir+"/local-ipam-etcd: cannot write in "+dir+": permission denied")
		wantPluginDir(t, dir, nil, "after the failed install")
	})

	t.Run("local-ipam-etcd not beside local-ipam", func(t *testing.T) {
		t.Parallel()
		lone := openTempDir(t, "local-ipam-lone-")
		cniexec.CopyExecutable(t, filepath.Join(b, "local-ipam"), filepath.Join(lone, "local-ipam"))
		dir := t.TempDir()
		wantInstallFail(t, install(t, lone, "install", "--dir", dir), 1,
			"install: local-ipam-etcd must be beside "+lone+"/local-ipam", "no such file or directory")
		// Another program under that name is no better.
		cniexec.CopyExecutable(t, cniexec.Bin(t, "bridge"), filepath.Join(lone, "local-ipam-etcd"))
		wantInstallFail(t, install(t, lone, "install", "--dir", dir), 1,
			"install: local-ipam-etcd must be beside "+lone+"/local-ipam", "plugins/main/bridge")
		wantPluginDir(t, dir, nil, "after the failed installs")
	})

	t.Run("run by local-ipam-etcd", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		o := cniexec.Run(t, filepath.Join(b, "local-ipam-etcd"), nil, nil, "install", "--dir", dir)
		wantInstallFail(t, o, 1, "run it with local-ipam")
		wantPluginDir(t, dir, nil, "after the refused install")
	})

	t.Run("command line", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		for _, c := range []struct {
			args []string
			msg  string
		}{
			{[]string{"install", "--dri", dir}, "install: unknown flag --dri"},
			{[]string{"uninstall", "--force"}, "uninstall: unknown flag --force"},
			{[]string{"install", "--dir", dir, "extra"}, `install: unexpected argument "extra"`},
			{[]string{"install", "--dir", ""}, "install: --dir needs a value"},
			{[]string{"install", "--dir", dir, "--as", "a/b"}, `install: --as "a/b" is not a file name`},
			{[]string{"install", "--dir", dir, "--as", ".."}, `install: --as ".." is not a file name`},
			{[]string{"install", "--dir", dir, "--as", " "}, `install: --as " " is not a plugin name`},
			{[]string{"install", "--dir", dir, "--as", ".local-ipam.new-1"}, `install: --as ".local-ipam.new-1" is not a plugin name`},
			{[]string{"uninstall", "--dir", dir, "--as", "host local"}, `uninstall: --as "host local" is not a plugin name`},
			{[]string{"install", "--dir", dir, "--as", "local-ipam-etcd"}, `install: --as "local-ipam-etcd"`},
			{[]string{"uninstall", "--dir", dir, "--as", "host-local.orig"}, `uninstall: --as "host-local.orig"`},
		} {
			o := install(t, b, c.args...)
			wantInstallFail(t, o, 2, c.msg, "Operator's commands:")
		}
		wantPluginDir(t, dir, nil, "after the refused commands")
	})
}
