// This file is copied next to host-local's own spec files (plugins/ipam/host-local of the
// pinned containernetworking/plugins module) in place of host-local's main.go. It gives
// the specs the functions they call in process, each of which execs the binary named by
// HOSTLOCALSUITE_PLUGIN as a runtime does (libcni's invoke.RawExec), so that the same specs
// judge host-local and local-ipam.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// pluginEnv names the environment variable holding the binary under test.
const pluginEnv = "HOSTLOCALSUITE_PLUGIN"

// execVerb runs the plugin with verb and args as libcni does. Its stdout is copied to
// os.Stdout, where the specs' helpers (testutils.CmdAdd) read a result; a failure comes
// back as the *types.Error the plugin printed.
func execVerb(verb string, args *skel.CmdArgs) error {
	bin := os.Getenv(pluginEnv)
	if bin == "" {
		return fmt.Errorf("%s is not set", pluginEnv)
	}
	path := args.Path
	if path == "" {
		path = filepath.Dir(bin)
	}
	env := []string{
		"CNI_COMMAND=" + verb,
		"CNI_CONTAINERID=" + args.ContainerID,
		"CNI_NETNS=" + args.Netns,
		"CNI_IFNAME=" + args.IfName,
		"CNI_ARGS=" + args.Args,
		"CNI_PATH=" + path,
	}
	out, err := (&invoke.RawExec{Stderr: os.Stderr}).ExecPlugin(context.Background(), bin, args.StdinData, env)
	if len(out) > 0 {
		if _, werr := os.Stdout.Write(out); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func cmdAdd(args *skel.CmdArgs) error    { return execVerb("ADD", args) }
func cmdDel(args *skel.CmdArgs) error    { return execVerb("DEL", args) }
func cmdCheck(args *skel.CmdArgs) error  { return execVerb("CHECK", args) }
func cmdGC(args *skel.CmdArgs) error     { return execVerb("GC", args) }
func cmdStatus(args *skel.CmdArgs) error { return execVerb("STATUS", args) }

// parseResolvConf stands for host-local's in-process parser: it runs an ADD whose ipam
// section names the file as resolvConf and returns the result's DNS, which is what a
// runtime sees of the parsing.
func parseResolvConf(filename string) (*types.DNS, error) {
	dataDir, err := os.MkdirTemp("", "hostlocalsuite-dns")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dataDir)
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "resolvconf",
		"type":       "ipvlan",
		"ipam": map[string]any{
			"type":       "host-local",
			"subnet":     "10.1.2.0/24",
			"dataDir":    dataDir,
			"resolvConf": filename,
		},
	})
	if err != nil {
		return nil, err
	}
	args := &skel.CmdArgs{ContainerID: "resolvconf", Netns: "/some/where", IfName: "eth0", StdinData: conf}
	r, _, err := testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
	if err != nil {
		return nil, err
	}
	res, err := types100.GetResult(r)
	if err != nil {
		return nil, err
	}
	return &res.DNS, nil
}
