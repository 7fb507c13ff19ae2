package mounttest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Under finds mounts at and below a directory whose name mountinfo escapes (a space),
// deepest first, and none once they are unmounted.
func TestUnder(t *testing.T) {
	root := filepath.Join(TempTmpfs(t, "size=1m"), "a b")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Tmpfs(root, "size=1m"); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(root, "c")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Ramfs(inner); err != nil {
		t.Fatal(err)
	}
	got, err := Under(root)
	if want := []string{inner, root}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Under(%q) = %q, %v; want %q", root, got, err, want)
	}
	for _, dir := range []string{inner, root} {
		if err := Unmount(dir); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := Under(root); err != nil || len(got) != 0 {
		t.Errorf("Under(%q) after unmounting = %q, %v; want none", root, got, err)
	}
}
