package main

// Snapshots of a directory tree, to prove that nothing outside <dataDir>/<network>/ was
// written, created, removed or followed into.

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// node is one path of a snapshot: its type, permissions and content (hash) or link target.
type node struct {
	kind   string
	perm   fs.FileMode
	size   int64
	sum    [32]byte
	target string
}

// treeSnapshot records every path under root, without following symlinks, except the
// inside of skip (a network directory, when it is a real directory).
func treeSnapshot(root, skip string) (map[string]node, error) {
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{perm: fi.Mode().Perm(), size: fi.Size()}
		switch t := fi.Mode().Type(); {
		case t&fs.ModeSymlink != 0:
			n.kind = "symlink"
			n.target, _ = os.Readlink(p)
		case t&fs.ModeDir != 0:
			n.kind, n.size = "dir", 0
		case t == 0:
			n.kind = "file"
			if fi.Size() <= 1<<20 {
				b, err := readNoFollow(p, 1<<20+1)
				if err != nil {
					return err
				}
				n.sum = sha256.Sum256(b)
			}
		default:
			n.kind = "special"
		}
		out[p] = n
		if p == skip && d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	return out, err
}

// diffTrees lists what changed between two snapshots.
func diffTrees(before, after map[string]node) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s (a %s) was removed", p, b.kind))
		case a.kind != b.kind:
			out = append(out, fmt.Sprintf("%s changed from a %s to a %s", p, b.kind, a.kind))
		case a.sum != b.sum || a.size != b.size:
			out = append(out, fmt.Sprintf("%s was written (%d bytes before, %d after)", p, b.size, a.size))
		case a.target != b.target:
			out = append(out, fmt.Sprintf("symlink %s now points to %s instead of %s", p, a.target, b.target))
		case a.perm != b.perm:
			out = append(out, fmt.Sprintf("%s changed mode from %v to %v", p, b.perm, a.perm))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			out = append(out, fmt.Sprintf("%s (a %s) was created", p, a.kind))
		}
	}
	sort.Strings(out)
	return out
}
