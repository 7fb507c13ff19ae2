// Package plugin is local-ipam's CNI plugin and operator's tool, shared by the two
// binaries: local-ipam (disk store only, so that its start-up stays that of a small
// program) and local-ipam-etcd (the same, plus the etcd store). A call of local-ipam for
// an etcd network is handed to local-ipam-etcd (handoff.go).
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// Network is one network's store, opened for one call or command: the allocator's
// store.Store, what GC and STATUS need, and the listing and counting of the operator's
// commands. Both stores (disk and etcd) implement all of it.
type Network interface {
	store.Store
	Lister
	Counter
	// GC releases every reservation whose attachment is not in valid (a cluster store:
	// only this machine's reservations).
	GC(valid []types.GCAttachment) ([]netip.Addr, error)
	// Writable tells whether a reservation could be written now.
	Writable() error
	String() string
}

// Lister lists a network's reservations.
type Lister interface {
	// List calls fn with each reservation, or with those of container id only when id
	// is not "".
	List(id string, fn func(store.Entry) error) error
}

// Counter counts a network's reservations in [from, to] without listing them.
type Counter interface {
	CountReserved(from, to netip.Addr) (int, error)
}

// NodeReleaser is a Network that releases everything one node reserved (a cluster store),
// in batches: each one reported before it is sent (releasing), and what it released as
// soon as it is released (freed).
type NodeReleaser interface {
	// ReleaseNode returns how many it released, and whether it cleared the node's
	// binding to its machine.
	ReleaseNode(node string, releasing, freed func([]store.Entry)) (n int, cleared bool, err error)
}

// Caller is who opens a network's store, which decides what opening it may do.
type Caller int

const (
	// CNICall is a CNI call on this machine: the disk store is created if need be and
	// locked, and freeOnReboot frees what was reserved before this machine rebooted.
	CNICall Caller = iota
	// Operator is an operator's command that changes reservations (release). It may run
	// on any machine, so it never frees on reboot (its machine's boot ID says nothing of
	// the network's), and it writes nothing it was not asked to: it creates no network.
	Operator
	// OperatorRead is an operator's command that only reads (list, usage): as Operator,
	// and the disk store's records are read without its lock (disk.Reader).
	OperatorRead
)

// Options are what a binary plugs in.
type Options struct {
	// Name is the binary's name in messages.
	Name    string
	Version string
	// OpenEtcd opens a network kept in etcd for who; nil in the node-local binary, which
	// hands such calls to local-ipam-etcd instead.
	OpenEtcd func(c *config.Config, who Caller) (Network, error)
}

// Plugin is one run of a binary: a CNI call or an operator's command, each a method.
type Plugin struct {
	opts Options
	// stdin is the config as read: the CNI call's stdin, or an operator's --conf.
	stdin []byte
	// argv is what a hand-off passes as arguments; nil passes this process's own.
	argv []string
}

// New makes the plugin of the binary o describes.
func New(o Options) *Plugin {
	if o.Name == "" {
		o.Name = "local-ipam"
	}
	return &Plugin{opts: o}
}

// Main runs a CNI call (CNI_COMMAND set) or an operator's command, and exits.
func Main(o Options) {
	p := New(o)
	growStack()
	if os.Getenv("CNI_COMMAND") == "" && len(os.Args) > 1 {
		os.Exit(p.runCLI(os.Args[1:], os.Stdout, os.Stderr))
	}
	stdin, realStdin := captureStdin()
	p.stdin = stdin
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    p.cmdAdd,
		Del:    p.cmdDel,
		Check:  p.cmdCheck,
		GC:     p.cmdGC,
		Status: p.cmdStatus,
	}, version.All, p.opts.Name+" "+p.opts.Version+" (CNI IPAM plugin; run '"+p.opts.Name+" --help' for the operator's commands)")
	runtime.KeepAlive(realStdin) // until the call is done: see captureStdin
	if e != nil {
		printError(e, stdin)
		os.Exit(1)
	}
}

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

// errNoNetwork: an operator's command named a disk network that has no directory (it
// creates none).
var errNoNetwork = errors.New("no such network")

// openNetwork opens c's network in its store for who: the one place that chooses the
// store (disk or etcd) and what opening it may do. diskOpts are a verb's wishes for the
// disk store (ADD's records prepared before the lock, STATUS's shorter wait for it);
// whether it frees on reboot is decided here.
func (p *Plugin) openNetwork(c *config.Config, who Caller, diskOpts disk.Options) (Network, error) {
	if p.handsOff(c) {
		return nil, execEtcd(p.stdin, p.argv) // returns only on failure
	}
	if c.Store.Type == config.StoreEtcd {
		return p.opts.OpenEtcd(c, who)
	}
	diskOpts.FreeOnReboot = who == CNICall && c.FreeOnReboot
	switch who {
	case OperatorRead:
		r, err := disk.OpenReader(c.DataDir, c.Name)
		if err != nil {
			return nil, err
		}
		return r, nil
	case Operator:
		// Never create a network (or a data dir) by mistyping its name.
		if fi, err := os.Lstat(filepath.Join(c.DataDir, c.Name)); err != nil || !fi.IsDir() {
			return nil, errNoNetwork
		}
	}
	st, err := disk.Open(c.DataDir, c.Name, diskOpts)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// diskNetwork is the config of a disk network an operator's command names by data dir
// and name.
func diskNetwork(dataDir, name string) *config.Config {
	return &config.Config{Name: name, DataDir: dataDir, Store: config.StoreConf{Type: config.StoreDisk}}
}

// handsOff tells whether c's network is kept in etcd and this binary has no etcd store:
// the call is then local-ipam-etcd's (handoff).
func (p *Plugin) handsOff(c *config.Config) bool {
	return c.Store.Type == config.StoreEtcd && p.opts.OpenEtcd == nil
}

func owner(args *skel.CmdArgs) store.Owner {
	return store.Owner{ID: args.ContainerID, IfName: args.IfName}
}

// load reads the config, and hands the call to local-ipam-etcd when the network is kept
// in etcd and this binary has no etcd store (never returns then, unless it fails).
func (p *Plugin) load(args *skel.CmdArgs) (*config.Config, error) {
	c, err := config.Load(args.StdinData, args.Args)
	if err != nil {
		return nil, err
	}
	if p.handsOff(c) {
		return nil, handoff(args.StdinData)
	}
	warnTypos(c)
	return c, nil
}

// open loads the config and opens the network's store, for DEL and CHECK.
func (p *Plugin) open(args *skel.CmdArgs) (*config.Config, Network, error) {
	c, err := p.load(args)
	if err != nil {
		return nil, nil, err
	}
	st, err := p.openNetwork(c, CNICall, disk.Options{})
	if err != nil {
		return nil, nil, err
	}
	return c, st, nil
}

// selfType is the plugin type this binary answers to in a chained list: the name it runs
// as, except host-local, which names the plugin local-ipam stands in for (run as
// host-local, it behaves exactly as run as local-ipam).
func selfType() string {
	if name := filepath.Base(os.Args[0]); name != "host-local" {
		return name
	}
	return selfName
}

func (p *Plugin) cmdAdd(args *skel.CmdArgs) error {
	c, err := config.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if c.Chained(selfType()) {
		warnTypos(c)
		// The main plugin before us got its addresses from local-ipam already.
		prev, err := parsePrev(c)
		if err != nil {
			return err
		}
		return types.PrintResult(prev, c.CNIVersion)
	}
	if p.handsOff(c) {
		return handoff(args.StdinData)
	}
	warnTypos(c)
	dns, err := c.DNS()
	if err != nil {
		return err
	}
	o := owner(args)
	st, err := p.openNetwork(c, CNICall, disk.Options{Records: len(c.Pool.Sets), Owner: o})
	if err != nil {
		return err
	}
	defer st.Close()
	allocs, err := allocator.Allocate(st, c.Pool, o, c.Requested)
	if err != nil {
		return noFreeDetails(err, c, st)
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

func (p *Plugin) cmdDel(args *skel.CmdArgs) error {
	c, st, err := p.open(args)
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
func (p *Plugin) cmdCheck(args *skel.CmdArgs) error {
	c, st, err := p.open(args)
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
// cni.dev/valid-attachments (or the older cni.dev/attachments). A config without a list,
// or with null, lists nothing valid and releases everything, as host-local does: libcni
// sends null for a runtime with no live attachment, and `cnitool gc` sends no list to
// collect all.
func (p *Plugin) cmdGC(args *skel.CmdArgs) error {
	c, err := p.load(args)
	if err != nil {
		return err
	}
	if c.AttachmentsErr != nil {
		return cnierr.New(cnierr.InvalidConfig, c.AttachmentsErr.Error(), "GC: cannot read the valid attachments")
	}
	st, err := p.openNetwork(c, CNICall, disk.Options{})
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

// statusLockTimeout bounds STATUS's wait for a disk network's lock, shorter than a call's:
// past it STATUS answers that the network is not available (code 50).
const statusLockTimeout = 10 * time.Second

// cmdStatus answers whether an ADD could succeed now: the store can be locked and
// written, and every range set has an address to give. Otherwise code 50.
func (p *Plugin) cmdStatus(args *skel.CmdArgs) error {
	c, err := p.load(args)
	if err != nil {
		return err
	}
	st, err := p.openNetwork(c, CNICall, disk.Options{LockTimeout: statusLockTimeout})
	if err != nil {
		err = unready("store unusable: "+errText(err), storeAdvice(c, err, false))
	} else {
		defer st.Close()
		var avail []bool
		if avail, err = allocator.Available(st, c.Pool); err != nil {
			err = unready("store unusable: "+errText(err), storeAdvice(c, err, false))
		} else {
			err = ready(c, st, avail)
		}
	}
	if err != nil {
		details := ""
		var nr *notReady
		if errors.As(err, &nr) {
			details = nr.details()
		}
		return cnierr.New(cnierr.PluginNotAvailable, details, "network %s: %s", c.Name, err)
	}
	return nil
}

// ready tells whether an ADD could succeed now on c's network, open in st, whose range
// sets have a free address where avail says so (STATUS's answer, also given by usage):
// nil, or why not (a *notReady).
func ready(c *config.Config, st Network, avail []bool) error {
	if err := st.Writable(); err != nil {
		return unready(fmt.Sprintf("%s cannot be written: %s", st, errText(err)), storeAdvice(c, err, true))
	}
	var full []string
	for i, ok := range avail {
		if !ok {
			full = append(full, c.Pool.Sets[i].String())
		}
	}
	if len(full) > 0 {
		return &notReady{"no free address in range set(s) " + strings.Join(full, "; "), func() string { return fullDetails(c, st, avail) }}
	}
	return nil
}

func errText(err error) string {
	if te, ok := err.(*types.Error); ok && te.Details != "" {
		return te.Msg + ": " + te.Details
	}
	return err.Error()
}
