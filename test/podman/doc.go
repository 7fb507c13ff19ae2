// Package podman runs local-ipam under a real container runtime: Debian's podman 4 with its
// CNI backend (rootful, runc, vfs storage), a dozen busybox containers at a time, in three
// set-ups a user meets:
//
//   - a conflist written by hand that names local-ipam as the bridge plugin's IPAM;
//   - an unchanged conflist that names host-local, with local-ipam installed as host-local
//     by `local-ipam install --as host-local` over the reference host-local (kept as
//     host-local.orig, never run, and put back by `local-ipam uninstall --as host-local`);
//   - a network made by `podman network create` (it always writes host-local), again with
//     local-ipam installed as host-local.
//
// Each checks what a user of podman sees: distinct addresses, containers that ping each
// other, `podman inspect` agreeing with the container's own interface, `podman restart`,
// and `podman rm -f` leaving no record behind; and that every IPAM call was served by
// local-ipam, never by a host-local binary.
//
// Everything podman keeps (storage, run state, network configs, the CNI plugin directory)
// lives in a temporary directory, and podman runs inside a network namespace the test
// creates, so the bridges, their addresses and the firewall rules of the CNI plugins stay
// in it. A network made by `podman network create` keeps its records where host-local's
// default puts them, /var/lib/cni/networks/<network>; the test's network names are its own
// (lipam-podman-<pid>-...) and it removes them at the end.
//
// Needs root, podman 4 (apt-get install podman runc busybox-static) and the binaries of
// `make build peers` in LOCAL_IPAM_BIN_DIR (default <repo root>/bin); without root or
// podman the tests skip, saying why.
package podman
