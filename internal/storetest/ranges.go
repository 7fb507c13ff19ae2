package storetest

import (
	"net/netip"
	"testing"

	"github.com/local-ipam/local-ipam/pkg/ranges"
)

// Range is ranges.New of a test's literals: the subnet, and rangeStart, rangeEnd and gateway
// ("" for the default of each). It fails the test on an error.
func Range(t testing.TB, subnet, start, end, gw string) ranges.Range {
	t.Helper()
	addr := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	r, err := ranges.New(netip.MustParsePrefix(subnet), addr(start), addr(end), addr(gw))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
