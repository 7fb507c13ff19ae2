package store_test

import (
	"fmt"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/store"
)

func TestCheckNetworkName(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "../x", "/", "net\x00", "\x00"} {
		err := store.CheckNetworkName(n)
		if cnierr.Code(err) != cnierr.InvalidConfig || err.Error() != fmt.Sprintf("invalid network name %q", n) {
			t.Errorf("CheckNetworkName(%q) = %v, want code 7", n, err)
		}
	}
	for _, n := range []string{"net", "...", "a..b", ".net", "net.", "my net", "net\\1", "ünï"} {
		if err := store.CheckNetworkName(n); err != nil {
			t.Errorf("CheckNetworkName(%q) = %v, want nil", n, err)
		}
	}
}
