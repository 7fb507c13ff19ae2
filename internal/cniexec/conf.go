package cniexec

// What every harness builds around a plugin call: the network config sent on stdin, and
// the binary under test with the environment it inherits.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Merge returns a new map with the keys of every map of ms, a later map's value replacing
// an earlier one's. Nested maps are shared, not copied.
func Merge(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// Conf encodes the config m, with the top-level keys of extra merged over it, as sent on
// stdin. It panics on a value encoding/json refuses (a harness's mistake, not an input).
func Conf(m map[string]any, extra ...map[string]any) []byte {
	b, err := json.Marshal(Merge(append([]map[string]any{m}, extra...)...))
	if err != nil {
		panic(fmt.Sprintf("network config: %v", err))
	}
	return b
}

// NetConf is the config a runtime sends to the IPAM plugin of a bridge network: name,
// version and the ipam section, with the top-level keys of extra merged over them.
func NetConf(version, name string, ipam map[string]any, extra ...map[string]any) []byte {
	return Conf(map[string]any{"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam}, extra...)
}

// AbsExecutable is the absolute path of bin, the binary a harness runs in the role named,
// or why it cannot run it.
func AbsExecutable(role, bin string) (string, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	if err := Executable(abs); err != nil {
		return "", fmt.Errorf("%s binary: %w", role, err)
	}
	return abs, nil
}

// PluginEnv is this process's environment as a plugin under test inherits it: without the
// CNI_* variables (each call sets its own), the middleman switch and the boot-id override
// the exec-level tests set.
func PluginEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CNI_") || strings.HasPrefix(kv, MiddlemanEnv+"=") || strings.HasPrefix(kv, "LOCAL_IPAM_BOOT_ID_FILE=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
