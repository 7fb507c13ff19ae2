// Command local-ipam is a CNI IPAM plugin: host-local's configuration, store format and
// addresses, at a cost that does not grow with the number of allocations.
package main

import (
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"

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

// version is set at build time (-ldflags -X main.buildVersion=...).
var buildVersion = "dev"

func main() {
	stdin := captureStdin()
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:   cmdAdd,
		Del:   cmdDel,
		Check: cmdCheck,
	}, version.All, "local-ipam "+buildVersion)
	if e != nil {
		printError(e, stdin)
		os.Exit(1)
	}
}

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
	r, w, err := os.Pipe()
	if err != nil {
		return data
	}
	go func() {
		_, _ = w.Write(data)
		w.Close()
	}()
	os.Stdin = r
	return data
}

// printError writes the spec's error object: cniVersion, code, msg and details.
func printError(e *types.Error, stdin []byte) {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(stdin, &conf) != nil || conf.CNIVersion == "" {
		conf.CNIVersion = version.Current()
	}
	out, _ := json.MarshalIndent(struct {
		CNIVersion string `json:"cniVersion"`
		Code       uint   `json:"code"`
		Msg        string `json:"msg"`
		Details    string `json:"details"`
	}{conf.CNIVersion, e.Code, e.Msg, e.Details}, "", "    ")
	_, _ = os.Stdout.Write(append(out, '\n'))
}

func owner(args *skel.CmdArgs) store.Owner {
	return store.Owner{ID: args.ContainerID, IfName: args.IfName}
}

// open loads the config and locks the network's store: every verb starts here.
func open(args *skel.CmdArgs) (*config.Config, *disk.Store, error) {
	c, err := config.Load(args.StdinData, args.Args)
	if err != nil {
		return nil, nil, err
	}
	st, err := disk.Open(c.DataDir, c.Name)
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
	dns, err := c.DNS()
	if err != nil {
		return err
	}
	st, err := disk.Open(c.DataDir, c.Name)
	if err != nil {
		return err
	}
	defer st.Close()
	o := owner(args)
	allocs, err := allocator.Allocate(st, c.Sets, o, c.Requested)
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
	return types.PrintResult(result, c.CNIVersion)
}

func ipOf(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

func cmdDel(args *skel.CmdArgs) error {
	_, st, err := open(args)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := allocator.Release(st, owner(args)); err != nil {
		return err
	}
	return st.Commit()
}

func cmdCheck(args *skel.CmdArgs) error {
	_, st, err := open(args)
	if err != nil {
		return err
	}
	defer st.Close()
	held, err := allocator.Held(st, owner(args))
	if err != nil {
		return err
	}
	if len(held) == 0 {
		return cnierr.New(cnierr.NotReserved, "", "local-ipam: Failed to find address added by container %v", args.ContainerID)
	}
	return nil
}
