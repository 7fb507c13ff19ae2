// Package e2e holds end-to-end tests that run the IPAM plugin under real CNI main plugins
// (bridge, macvlan) driven by cnitool, in real network namespaces. They need root and the
// binaries built by `make build peers`; as non-root they skip.
//
// Environment:
//
//	LOCAL_IPAM_BIN_DIR  directory holding local-ipam, host-local, bridge, macvlan, cnitool
//	                    (default: <repo root>/bin)
//	E2E_IPAM            IPAM plugin type under test (default: local-ipam; host-local runs the
//	                    same suite against the reference plugin)
package e2e
