// Package hostlocalsuite runs host-local's own test suite (the ginkgo specs of
// plugins/ipam/host-local in the containernetworking/plugins module pinned in go.mod)
// against the built binaries, each verb exec'd as a runtime execs it: once against
// host-local, once against local-ipam. Every spec that passes for host-local must pass for
// local-ipam.
//
// The spec files are not part of this repository: the test copies them from the module
// cache into a temporary module, with testdata/exec_shim.go in place of host-local's
// main.go, builds that and runs it twice.
//
// Specs may fail for both binaries when exec'd though they pass in process: the
// "ignores whitespace in disk files" specs send the container ID "   dummy\n ", which
// skel refuses in CNI_CONTAINERID (code 4) before the plugin's own code runs; in process
// the spec calls cmdAdd past skel. The test logs such specs with both failures.
package hostlocalsuite
