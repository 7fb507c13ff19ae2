package config

import (
	"encoding/json"
	"errors"
	"strings"
)

// PluginConf turns a network config or a conflist into what a runtime would send the IPAM
// plugin: a config as it is; for a conflist, the first plugin with an ipam section, given
// the list's name and cniVersion (as libcni does). The operator's commands read network
// config files through it; a CNI call never does.
func PluginConf(raw []byte) ([]byte, error) {
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	if list.Plugins == nil {
		return raw, nil
	}
	for _, p := range list.Plugins {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		// As a plugin decodes it: any case, null for none.
		for k, v := range m {
			if strings.EqualFold(k, "ipam") && v != nil {
				m["name"], m["cniVersion"] = list.Name, list.CNIVersion
				return json.Marshal(m)
			}
		}
	}
	return nil, errors.New("no plugin of the conflist has an ipam section")
}
