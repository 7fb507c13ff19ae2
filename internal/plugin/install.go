package plugin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// `local-ipam install` and `local-ipam uninstall`: put the binaries into a CNI plugin
// directory, under their own names or with local-ipam also under another plugin's name
// (host-local), the way a runtime that may start a plugin at any moment needs it: each file
// written beside its name, synced and renamed over it, so that a plugin started meanwhile
// is the old binary or the new one, never a part of one.

// DefaultInstallDir is the plugin directory of most runtimes' defaults.
const DefaultInstallDir = "/opt/cni/bin"

const (
	selfName    = "local-ipam"
	metricsName = "local-ipam-metrics"
	origSuffix  = ".orig"
	// ourPackages starts the main package path, in a binary's Go build info, of every
	// binary of this project: what tells local-ipam from another plugin of the same name.
	ourPackages = "github.com/local-ipam/local-ipam/cmd/"
)

// companion is a binary installed with local-ipam, from the directory local-ipam runs
// from, before local-ipam itself (which may hand calls to it).
type companion struct {
	name     string
	required bool
}

var companions = []companion{{EtcdBinary, true}, {metricsName, false}}

// installFlags parses install's and uninstall's flags.
func installFlags(cmd string, args []string) (dir, as string, err error) {
	fs := newFlags(cmd)
	fs.StringVar(&dir, "dir", DefaultInstallDir, "")
	fs.StringVar(&as, "as", selfName, "")
	if err := parse(fs, args); err != nil {
		return "", "", err
	}
	switch {
	case as == "." || as == ".." || strings.ContainsRune(as, '/'):
		return "", "", errUsage{fmt.Sprintf("%s: --as %q is not a file name", cmd, as)}
	case !pluginName(as):
		return "", "", errUsage{fmt.Sprintf("%s: --as %q is not a plugin name: letters, digits, '.', '_', '+' and '-', not starting with '.'", cmd, as)}
	case as == EtcdBinary || as == metricsName || strings.HasSuffix(as, origSuffix):
		return "", "", errUsage{fmt.Sprintf("%s: --as %q: that name is local-ipam's own or keeps an original", cmd, as)}
	}
	return dir, as, nil
}

// pluginName: a name a config's "type" can give, and no hidden file (install's own
// temporary copies start with '.').
func pluginName(as string) bool {
	if as == "" || as[0] == '.' {
		return false
	}
	for _, r := range as {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-", r)
		if !ok {
			return false
		}
	}
	return true
}

// pluginDir is an open, locked plugin directory.
type pluginDir struct {
	path string
	f    *os.File
}

// openPluginDir opens dir and takes its lock: one install or uninstall at a time.
func openPluginDir(dir string) (*pluginDir, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: create the plugin directory first (mkdir -p %s)", dir, dir)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a directory", dir)
		}
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot lock %s: %v", dir, err)
	}
	return &pluginDir{path: dir, f: f}, nil
}

func (d *pluginDir) close()                  { d.f.Close() } // also drops the lock
func (d *pluginDir) join(name string) string { return filepath.Join(d.path, name) }

// sync makes the directory's renames durable.
func (d *pluginDir) sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %v", d.path, err)
	}
	return nil
}

// tempPattern is the name place gives a copy before renaming it over name.
func tempPattern(name string) string { return "." + name + ".new-*" }

// removeInterrupted removes the copies that an install killed while copying left beside
// names (a partial file each, of any size): with the directory locked, no copy of a
// running install can be among them. Another plugin's files are not touched.
func (d *pluginDir) removeInterrupted(names []string, stdout io.Writer) error {
	var removed []string
	for _, name := range names {
		matches, err := filepath.Glob(filepath.Join(d.path, tempPattern(name)))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if fi, err := os.Lstat(m); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = append(removed, m)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	slices.Sort(removed)
	fmt.Fprintf(stdout, "removed %s (left by an interrupted install)\n", strings.Join(removed, ", "))
	return d.sync()
}

// place puts a copy of src in the directory as name: written to a new file beside it,
// synced, made executable, renamed over name, and the directory synced.
func (d *pluginDir) place(src, name string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(d.path, tempPattern(name))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot write in %s: %v", d.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		return fmt.Errorf("cannot write %s: %v", tmp.Name(), err)
	}
	if err = tmp.Chmod(0o755); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %v", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), d.join(name)); err != nil {
		return err
	}
	return d.sync()
}

// cmdInstall: local-ipam install [--dir DIR] [--as NAME].
func (p *Plugin) cmdInstall(args []string, stdout io.Writer) error {
	dir, as, err := installFlags("install", args)
	if err != nil {
		return err
	}
	if p.opts.Name != selfName {
		return fmt.Errorf("install: run it with %s, which installs itself and %s", selfName, EtcdBinary)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install: cannot find this program's file: %v", err)
	}
	// What goes where, in order: the companions first, so that a local-ipam in place
	// never lacks the binary it hands etcd networks to.
	type copyOf struct{ src, name string }
	var plan []copyOf
	for _, c := range companions {
		src := filepath.Join(filepath.Dir(self), c.name)
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) && !c.required {
			continue
		}
		if ours, what := ourBinary(src); !ours {
			return fmt.Errorf("install: %s must be beside %s (make build builds both): %s", c.name, self, what)
		}
		plan = append(plan, copyOf{src, c.name})
	}
	plan = append(plan, copyOf{self, selfName})
	if as != selfName {
		plan = append(plan, copyOf{self, as})
	}

	d, err := openPluginDir(dir)
	if err != nil {
		return fmt.Errorf("install: %v", err)
	}
	defer d.close()
	var names []string
	for _, c := range plan {
		names = append(names, c.name)
	}
	if err := d.removeInterrupted(names, stdout); err != nil {
		return fmt.Errorf("install: %v", err)
	}
	for _, c := range plan {
		if c.name == as && as != selfName {
			if err := d.keepOriginal(as, stdout); err != nil {
				return fmt.Errorf("install: %v", err)
			}
		}
		if err := d.place(c.src, c.name); err != nil {
			return fmt.Errorf("install: %s: %v", d.join(c.name), err)
		}
		what := ""
		if c.name == as && as != selfName {
			what = " (" + selfName + ")"
		}
		fmt.Fprintf(stdout, "installed %s%s\n", d.join(c.name), what)
	}
	return nil
}

// keepOriginal keeps a plugin named name that is not local-ipam as name.orig, once: a
// hard link, so that name never goes missing. An existing name.orig is never replaced.
func (d *pluginDir) keepOriginal(name string, stdout io.Writer) error {
	cur, orig := d.join(name), d.join(name+origSuffix)
	if _, err := os.Lstat(cur); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ours, what := ourBinary(cur)
	if ours {
		return nil
	}
	switch err := os.Link(cur, orig); {
	case err == nil:
		if err := d.sync(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "kept %s (%s) as %s\n", cur, what, orig)
	case errors.Is(err, fs.ErrExist):
		fmt.Fprintf(stdout, "kept %s, the original from an earlier install; %s (%s) is replaced\n", orig, cur, what)
	default:
		return fmt.Errorf("cannot keep %s as %s: %v", cur, orig, err)
	}
	return nil
}

// cmdUninstall: local-ipam uninstall [--dir DIR] [--as NAME].
func (p *Plugin) cmdUninstall(args []string, stdout io.Writer) error {
	dir, as, err := installFlags("uninstall", args)
	if err != nil {
		return err
	}
	d, err := openPluginDir(dir)
	if err != nil {
		return fmt.Errorf("uninstall: %v", err)
	}
	defer d.close()
	// Another name that is local-ipam would lose local-ipam-etcd, and the node that plugin.
	if other, err := d.otherInstall(as); err != nil {
		return fmt.Errorf("uninstall: %v", err)
	} else if other != "" {
		return fmt.Errorf("uninstall: %s is local-ipam: run uninstall --as %s, which puts the original back", d.join(other), other)
	}
	if as != selfName {
		if err := d.restoreOriginal(as, stdout); err != nil {
			return fmt.Errorf("uninstall: %v", err)
		}
	}
	if err := d.removeInterrupted([]string{as, selfName, metricsName, EtcdBinary}, stdout); err != nil {
		return fmt.Errorf("uninstall: %v", err)
	}
	// The reverse of install's order: local-ipam before what it hands calls to.
	removed := 0
	for _, name := range []string{selfName, metricsName, EtcdBinary} {
		path := d.join(name)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if ours, what := ourBinary(path); !ours {
			fmt.Fprintf(stdout, "left %s: not local-ipam's (%s)\n", path, what)
			continue
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("uninstall: %v", err)
		}
		if err := d.sync(); err != nil {
			return fmt.Errorf("uninstall: %v", err)
		}
		fmt.Fprintf(stdout, "removed %s\n", path)
		removed++
	}
	if removed == 0 {
		fmt.Fprintf(stdout, "nothing of local-ipam's to remove in %s\n", d.path)
	}
	return nil
}

// otherInstall names a file of the directory, other than local-ipam's own names and as,
// that is local-ipam (installed with --as): host-local first, then in name order; "" when
// there is none.
func (d *pluginDir) otherInstall(as string) (string, error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return "", err
	}
	names := []string{"host-local"}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, name := range names {
		switch {
		case name == as || name == selfName || name == metricsName || name == EtcdBinary,
			strings.HasPrefix(name, "."), strings.HasSuffix(name, origSuffix):
			continue
		}
		if fi, err := os.Stat(d.join(name)); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if ours, _ := ourBinary(d.join(name)); ours {
			return name, nil
		}
	}
	return "", nil
}

// restoreOriginal renames name.orig over name, which must be local-ipam (or absent). With
// no name.orig, a name that is local-ipam is an error (removing it would leave the node
// without that plugin), and any other name is left as it is.
func (d *pluginDir) restoreOriginal(name string, stdout io.Writer) error {
	cur, orig := d.join(name), d.join(name+origSuffix)
	_, err := os.Lstat(cur)
	curExists := err == nil
	ours, what := false, ""
	if curExists {
		ours, what = ourBinary(cur)
	}
	if _, err := os.Lstat(orig); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if ours {
			return fmt.Errorf("%s is local-ipam and there is no %s to put back (there was no other %s when it was installed): nothing changed; delete %s yourself if no %s is wanted there",
				cur, orig, name, cur, name)
		}
		fmt.Fprintf(stdout, "no %s to put back, and %s is not local-ipam: left as it is\n", orig, cur)
		return nil
	}
	if curExists && !ours && sameFile(cur, orig) {
		// An install killed between keeping the original and replacing it: name.orig is
		// a second link to name, which is still the original.
		if err := os.Remove(orig); err != nil {
			return err
		}
		if err := d.sync(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is %s itself (kept by an install that did not finish): removed it; %s left as it is\n", orig, cur, cur)
		return nil
	}
	if curExists && !ours {
		return fmt.Errorf("%s is not local-ipam (%s): it was replaced since the install; nothing changed (%s left as it is)", cur, what, orig)
	}
	if err := os.Rename(orig, cur); err != nil {
		return err
	}
	if err := d.sync(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "put %s back as %s\n", orig, cur)
	return nil
}

// sameFile tells whether the names a and b are links to one file (symlinks not followed).
func sameFile(a, b string) bool {
	fa, err1 := os.Lstat(a)
	fb, err2 := os.Lstat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// ourBinary tells whether the file at path (a symlink followed) is a build of this
// project, by the main package path in its Go build info; what describes it for messages.
func ourBinary(path string) (ours bool, what string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err.Error()
	}
	pkg, version, ok := goBuildInfo(data)
	switch {
	case !ok:
		return false, "not a Go program this version of Go can read"
	case strings.HasPrefix(pkg, ourPackages):
		return true, pkg
	default:
		return false, strings.TrimSpace(pkg + " " + version)
	}
}

// goBuildInfo finds the main package path and Go version in a Go executable's build info
// (the .go.buildinfo section: a 32-byte header with the strings inline after it, as every
// Go since 1.18 writes it). By hand rather than with debug/buildinfo: that package and its
// object-file readers would add their start-up to every CNI call.
func goBuildInfo(data []byte) (pkg, goVersion string, ok bool) {
	magic := []byte("\xff Go buildinf:")
	const flagsInline = 2
	for off := 0; ; {
		i := bytes.Index(data[off:], magic)
		if i < 0 {
			return "", "", false
		}
		off += i
		if off%16 != 0 || len(data)-off < 32 || data[off+15]&flagsInline == 0 {
			off++
			continue
		}
		rest := data[off+32:]
		ver, rest, ok1 := uvarintString(rest)
		mod, _, ok2 := uvarintString(rest)
		if !ok1 || !ok2 {
			return "", "", false
		}
		// The module info is framed by 16-byte sentinels.
		if len(mod) >= 33 && mod[len(mod)-17] == '\n' {
			mod = mod[16 : len(mod)-16]
		}
		for _, line := range strings.Split(mod, "\n") {
			if p, found := strings.CutPrefix(line, "path\t"); found {
				return p, ver, true
			}
		}
		return "", ver, true
	}
}

func uvarintString(b []byte) (s string, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}
