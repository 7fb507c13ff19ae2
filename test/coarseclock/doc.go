// Package coarseclock holds exec-level tests of local-ipam's index against changes made
// behind its back (by host-local, which takes the same lock, or by an operator's rm) in
// the same clock tick as local-ipam's last commit, on file systems where two changes to
// a directory can share its timestamps: ramfs, ext4 made with 128-byte inodes (1 s
// timestamps) on a loop device, tmpfs where it proves to be such a file system (an
// unlink there can repeat the directory's last timestamp, multigrain timestamps or not),
// and exFAT through FUSE (exfat-fuse: 1 s timestamps, and a ctime that only mirrors the
// mtime).
// Each file system is first shown to be coarse by behaviour (internal/fsclock); then
// host-local and local-ipam interleave, 30 rounds of each case:
//
//   - a: local-ipam ADD c1, host-local ADD c2, local-ipam DEL c2 must remove c2's record;
//   - b: local-ipam ADD c1, host-local ADD c2, local-ipam ADD c2 must fail with code 103;
//   - c: local-ipam ADD c2 and c1 fill a range of two, host-local DEL c2, then local-ipam
//     STATUS must succeed and ADD c3 must get c2's address back.
//
// The same again with both plugins run as a user that does not own the network directory
// (local-ipam cannot set its timestamps, and waits for the clock instead; 2 rounds on
// ext4 and exFAT, where that is a second a call).
//
// Needs root (mount, losetup, mkfs.ext4, mkfs.exfat and exfat-fuse) and the binaries from `make build peers`
// (LOCAL_IPAM_BIN_DIR, as the other exec-level tests).
package coarseclock
