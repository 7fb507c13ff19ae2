// Package compat holds exec-level tests that run the local-ipam binary side by side with the
// reference host-local plugin (containernetworking/plugins, pinned in go.mod) and require
// identical behaviour: the same addresses, the same result JSON and the same on-disk store.
//
// The binaries are taken from $LOCAL_IPAM_BIN_DIR (default: <repo root>/bin, filled by
// `make build peers`). The binary under test is $COMPAT_PLUGIN (default <bindir>/local-ipam);
// the reference is <bindir>/host-local. Pointing COMPAT_PLUGIN at host-local itself must pass
// every test except TestDeliberateDifferences, which is skipped then.
//
//	COMPAT_PLUGIN=$PWD/bin/host-local LOCAL_IPAM_BIN_DIR=$PWD/bin go test -race -count=1 ./test/compat/
//
// Tests:
//   - TestDifferential: a table of scenarios (config + sequence of ADD/DEL/CHECK/GC/STATUS);
//     after every step both binaries agree on success, result JSON and the store's files.
//   - TestTakeover*: one binary builds a store, the other carries on with it.
//   - TestConcurrent*: many processes at once against the plugin under test.
//   - TestDeliberateDifferences: where local-ipam intentionally departs from host-local.
package compat
