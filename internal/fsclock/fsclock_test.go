package fsclock

import (
	"os"
	"testing"

	"github.com/local-ipam/local-ipam/internal/mounttest"
)

// On a ramfs (timestamps from the kernel's clock tick, never multigrain) the probe finds
// two changes with one timestamp, and leaves nothing behind.
func TestRamfsShares(t *testing.T) {
	dir := mounttest.TempRamfs(t)
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
