package store_test

import (
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/store"
)

func TestGCKeeps(t *testing.T) {
	keeps := store.GCKeeps([]types.GCAttachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: " b ", IfName: "net1"}})
	for content, want := range map[string]bool{
		"a\r\neth0": true,  // valid
		"a\r\neth1": false, // the container is valid, not this attachment
		"a":         true,  // ID-only record of a container with a valid attachment
		"b\r\nnet1": true,  // the ID is trimmed, as host-local does
		"b":         true,
		"c\r\neth0": false,
		"c":         false,
		"":          false,
	} {
		if got := keeps(content); got != want {
			t.Errorf("keeps(%q) = %v, want %v", content, got, want)
		}
	}
	if store.GCKeeps(nil)("a\r\neth0") {
		t.Error("an empty list keeps something")
	}
}
