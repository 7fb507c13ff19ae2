package fsclock

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// On a ramfs (timestamps from the kernel's clock tick, never multigrain) the probe finds
// two changes with one timestamp, and leaves nothing behind.
func TestRamfsShares(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a ramfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("fsclock-test", dir, "ramfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		t.Skipf("cannot mount a ramfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	shared, err := SharedTimestamps(dir, 200)
	if err != nil {
		t.Fatal(err)
	}
	if !shared {
		t.Errorf("no two changes on a ramfs shared a timestamp in 200 tries")
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("the probe left %v (%v)", ents, err)
	}
}

func TestMissingDir(t *testing.T) {
	if _, err := SharedTimestamps(t.TempDir()+"/missing", 1); err == nil {
		t.Errorf("no error for a directory that does not exist")
	}
}
