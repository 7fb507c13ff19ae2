// Package plugin is local-ipam's CNI plugin and operator's tool, shared by the two
// binaries: local-ipam (disk store only, so that its start-up stays that of a small
// program) and local-ipam-etcd (the same, plus the etcd store). A call of local-ipam for
// an etcd network is handed to local-ipam-etcd (handoff.go).
package plugin

import (
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"golang.org/x/sys/unix"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// Network is one network's store, opened for one call: the allocator's store.Store plus
// what GC and STATUS need.
type Network interface {
	store.Store
	// GC releases every reservation whose attachment is not in valid (a cluster store:
	// only this machine's reservations).
	GC(valid []types.GCAttachment) ([]netip.Addr, error)
	// Writable tells whether a reservation could be written now.
	Writable() error
	String() string
}

// Entry is one reservation, for the operator's commands.
type Entry struct {
	Addr    netip.Addr
	Owner   store.Owner
	Node    string // the machine that made it (cluster stores only)
	Created time.Time
}

// Lister is a Network that can list its reservations (the etcd store; the disk store's
// are read without its lock, see cli.go).
type Lister interface {
	List(fn func(Entry) error) error
}

// Counter is a Network that counts reservations in [from, to] without reading them.
type Counter interface {
	CountReserved(from, to netip.Addr) (int, error)
}

// Options are what a binary plugs in.
type Options struct {
	// Name is the binary's name in messages.
	Name    string
	Version string
	// OpenEtcd opens a network kept in etcd; nil in the node-local binary, which hands
	// such calls to local-ipam-etcd instead. cni: for a CNI call, which acts for this
	// machine's node (freeOnReboot); false for an operator's command, which may run on
	// any machine and writes nothing it was not asked to.
	OpenEtcd func(c *config.Config, cni bool) (Network, error)
}

// NodeReleaser is a Network that releases everything one node reserved (a cluster store),
// reporting each batch as soon as it is released.
type NodeReleaser interface {
	// ReleaseNode returns how many it released, and whether it cleared the node's
	// binding to its machine.
	ReleaseNode(node string, freed func([]Entry)) (n int, cleared bool, err error)
}

var opts Options

// Main runs a CNI call (CNI_COMMAND set) or an operator's command, and exits.
func Main(o Options) {
	opts = o
	if opts.Name == "" {
		opts.Name = "local-ipam"
	}
	growStack()
	if os.Getenv("CNI_COMMAND") == "" && len(os.Args) > 1 {
		os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
	}
	stdin := captureStdin()
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.All, opts.Name+" "+opts.Version+" (CNI IPAM plugin; run '"+opts.Name+" --help' for the operator's commands)")
	if e != nil {
		printError(e, stdin)
		os.Exit(1)
	}
}

// growStack grows the main goroutine's stack to its working size in one step, while the
// stack is still shallow. Otherwise encoding/json's reflection (skel decodes the config
// into its structs) grows it several times, deep in the call chain, where each copy walks
// every frame: 15% of all the instructions of an ADD, measured with callgrind.
//
//go:noinline
func growStack() {
	var pad [96 << 10]byte
	stackSink(pad[:])
}

//go:noinline
func stackSink(b []byte) { _ = b[len(b)-1] }

// captureStdin reads the config before skel does and hands skel an identical stdin, so
// that an error found by skel itself can still be answered in the config's cniVersion.
func captureStdin() []byte {
	if os.Getenv("CNI_COMMAND") == "" {
		return nil
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil // skel reads the same stdin and reports the failure
	}
	// A plain blocking pipe (os.Pipe would register both ends with the poller: more
	// system calls on every CNI call). Up to the pipe's 64 KiB it is written right here.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return data
	}
	r, w := os.NewFile(uintptr(p[0]), "stdin"), os.NewFile(uintptr(p[1]), "stdin-w")
	write := func() {
		_, _ = w.Write(data)
		w.Close()
	}
	if len(data) < 60<<10 {
		write()
	} else {
		go write()
	}
	// Keep the real stdin reachable: once unreferenced, its *os.File's finalizer would
	// close descriptor 0 at some garbage collection, and the next file opened (the
	// hand-off's memfd, say) would become descriptor 0 by surprise.
	realStdin = os.Stdin
	os.Stdin = r
	return data
}

var realStdin *os.File

// printError writes the spec's error object: cniVersion, code, msg and details. By hand,
// like the result (result.go): encoding/json's reflection would cost a failing ADD more
// than the allocation it reports on.
func printError(e *types.Error, stdin []byte) {
	v := configVersion(stdin)
	w := &jsonWriter{}
	w.open('{')
	w.key("cniVersion")
	w.str(v)
	w.key("code")
	w.num(int(e.Code))
	w.key("msg")
	w.str(e.Msg)
	w.key("details")
	w.str(e.Details)
	w.close('}')
	_, _ = os.Stdout.Write(append(w.b, '\n'))
}

// configVersion finds the config's cniVersion for an error report (the latest when the
// config cannot be read).
func configVersion(stdin []byte) string {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(stdin, &conf) != nil || conf.CNIVersion == "" {
		return version.Current()
	}
	return conf.CNIVersion
}

func owner(args *skel.CmdArgs) store.Owner {
	return store.Owner{ID: args.ContainerID, IfName: args.IfName}
}

// load reads the config, and hands the call to local-ipam-etcd when the network is kept
// in etcd and this binary has no etcd store (never returns then, unless it fails).
func load(args *skel.CmdArgs) (*config.Config, error) {
	c, err := config.Load(args.StdinData, args.Args)
	if err != nil {
		return nil, err
	}
	if c.Store.Type == config.StoreEtcd && opts.OpenEtcd == nil {
		return nil, handoff(args.StdinData)
	}
	return c, nil
}

// openStore opens the config's network in its store, locked (disk) for this CNI call.
// add: the owner an ADD allocates for, whose disk records are prepared before the lock.
func openStore(c *config.Config, add *store.Owner, lockTimeout time.Duration) (Network, error) {
	if c.Store.Type == config.StoreEtcd {
		return opts.OpenEtcd(c, true)
	}
	o := disk.Options{FreeOnReboot: c.FreeOnReboot, LockTimeout: lockTimeout}
	if add != nil {
		o.Records, o.Owner = len(c.Pool.Sets), *add
	}
	return disk.Open(c.DataDir, c.Name, o)
}

// open loads the config and opens the network's store: every verb starts here.
func open(args *skel.CmdArgs) (*config.Config, Network, error) {
	c, err := load(args)
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(c, nil, 0)
	if err != nil {
		return nil, nil, err
	}
	return c, st, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := config.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if c.Chained(filepath.Base(os.Args[0])) {
		// The main plugin before us got its addresses from local-ipam already.
		prev, err := parsePrev(c)
		if err != nil {
			return err
		}
		return types.PrintResult(prev, c.CNIVersion)
	}
	if c.Store.Type == config.StoreEtcd && opts.OpenEtcd == nil {
		return handoff(args.StdinData)
	}
	dns, err := c.DNS()
	if err != nil {
		return err
	}
	o := owner(args)
	st, err := openStore(c, &o, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	allocs, err := allocator.Allocate(st, c.Pool, o, c.Requested)
	if err != nil {
		return err
	}
	if err := st.Commit(); err != nil {
		// The index could not be written (a full disk, say): give the addresses back
		// rather than answer success on a store we could not update.
		for _, a := range allocs {
			_, _ = st.Release(a.Addr, o)
		}
		return err
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.Routes, DNS: dns}
	for _, a := range allocs {
		result.IPs = append(result.IPs, &current.IPConfig{
			Address: net.IPNet{IP: a.Addr.AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Addr.BitLen())},
			Gateway: ipOf(a.Gateway),
		})
	}
	return printResult(result, c.CNIVersion)
}

func ipOf(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

func cmdDel(args *skel.CmdArgs) error {
	c, st, err := open(args)
	if err != nil {
		return err
	}
	defer st.Close()
	// host-local releases once per range set; from the second pass on, the attachment's
	// own records are gone and its container's ID-only records go too. Same outcome here.
	for range c.Pool.Sets {
		if _, _, err := allocator.Release(st, owner(args)); err != nil {
			return err
		}
	}
	return st.Commit()
}

// cmdCheck compares prevResult with the store: each of its addresses that lies in a
// configured range set must be reserved for this attachment, and each range set must
// hold one reservation of the attachment, which prevResult lists.
func cmdCheck(args *skel.CmdArgs) error {
	c, st, err := open(args)
	if err != nil {
		return err
	}
	defer st.Close()
	o := owner(args)
	prev, hasPrev, err := prevIPs(c)
	if err != nil {
		return err
	}
	held, err := allocator.Held(st, o)
	if err != nil {
		return err
	}
	mine := func(a netip.Addr) (bool, error) {
		h, ok, err := st.Holder(a)
		return ok && (h == o || h == o.Legacy()), err
	}
	for _, a := range prev {
		if !c.Pool.Contains(a) {
			continue
		}
		ok, err := mine(a)
		if err != nil {
			return err
		}
		if !ok {
			return cnierr.New(cnierr.NotReserved, "", "address %s of prevResult is not reserved for container %s, interface %s", a, args.ContainerID, args.IfName)
		}
	}
	for i, set := range c.Pool.Sets {
		var have []netip.Addr
		for _, a := range held {
			if !set.Contains(a) {
				continue
			}
			ok, err := mine(a)
			if err != nil {
				return err
			}
			if ok {
				have = append(have, a)
			}
		}
		if len(have) == 0 {
			return cnierr.New(cnierr.NotReserved, "", "container %s, interface %s holds no address in range set %d (%s)", args.ContainerID, args.IfName, i, set)
		}
		if hasPrev && !slices.ContainsFunc(have, func(a netip.Addr) bool { return slices.Contains(prev, a) }) {
			return cnierr.New(cnierr.NotReserved, "", "address %s reserved for container %s, interface %s in range set %d is missing from prevResult", have[0], args.ContainerID, args.IfName, i)
		}
	}
	return nil
}

// prevIPs reads the addresses of prevResult, whatever its version.
func prevIPs(c *config.Config) ([]netip.Addr, bool, error) {
	if len(c.RawPrevResult) == 0 || string(c.RawPrevResult) == "null" {
		return nil, false, nil
	}
	cur, err := parsePrev(c)
	if err != nil {
		return nil, false, err
	}
	var out []netip.Addr
	for _, ipc := range cur.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, true, nil
}

func parsePrev(c *config.Config) (*current.Result, error) {
	res, err := version.NewResult(c.CNIVersion, c.RawPrevResult)
	if err != nil {
		return nil, cnierr.New(cnierr.DecodingFailure, err.Error(), "cannot read prevResult")
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, cnierr.New(cnierr.DecodingFailure, err.Error(), "cannot convert prevResult")
	}
	return cur, nil
}

// cmdGC releases every reservation of the network whose attachment is not in
// cni.dev/valid-attachments. A config without the key is refused: host-local takes it as
// "nothing is valid" and empties the network, which is never what a runtime means.
func cmdGC(args *skel.CmdArgs) error {
	c, err := load(args)
	if err != nil {
		return err
	}
	if c.AttachmentsErr != nil {
		return cnierr.New(cnierr.InvalidConfig, c.AttachmentsErr.Error(), "GC: cannot read the valid attachments")
	}
	if !c.HasValidAttachments {
		return cnierr.New(cnierr.InvalidConfig, "", "GC needs cni.dev/valid-attachments (an empty list means every attachment is stale)")
	}
	st, err := openStore(c, nil, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	_, gcErr := st.GC(c.ValidAttachments)
	if err := st.Commit(); err != nil {
		return err
	}
	return gcErr
}

// cmdStatus answers whether an ADD could succeed now: the store can be locked and
// written, and every range set has an address to give. Otherwise code 50.
func cmdStatus(args *skel.CmdArgs) error {
	c, err := load(args)
	if err != nil {
		return err
	}
	unavailable := func(format string, a ...any) error {
		e := cnierr.New(cnierr.PluginNotAvailable, "", "network %s: "+format, append([]any{c.Name}, a...)...)
		return e
	}
	st, err := openStore(c, nil, 10*time.Second)
	if err != nil {
		return unavailable("store unusable: %s", errText(err))
	}
	defer st.Close()
	if err := st.Writable(); err != nil {
		return unavailable("%s cannot be written: %s", st, errText(err))
	}
	avail, err := allocator.Available(st, c.Pool)
	if err != nil {
		return unavailable("store unusable: %s", errText(err))
	}
	var full []string
	for i, ok := range avail {
		if !ok {
			full = append(full, c.Pool.Sets[i].String())
		}
	}
	if len(full) > 0 {
		return unavailable("no free address in range set(s) %s", strings.Join(full, "; "))
	}
	return nil
}

func errText(err error) string {
	if te, ok := err.(*types.Error); ok && te.Details != "" {
		return te.Msg + ": " + te.Details
	}
	return err.Error()
}
