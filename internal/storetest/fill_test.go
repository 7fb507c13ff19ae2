package storetest_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

func TestFill(t *testing.T) {
	dir := t.TempDir()
	open := func() (store.Store, error) { return disk.Open(dir, "net", disk.Options{}) }
	at := func(w, i int) (netip.Addr, store.Owner, bool) {
		return netip.AddrFrom4([4]byte{10, 0, byte(w), byte(i + 1)}), store.Owner{ID: fmt.Sprintf("c%d-%d", w, i), IfName: "eth0"}, i < 20
	}
	if err := storetest.Fill(open, 4, at); err != nil {
		t.Fatal(err)
	}
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	for w := range 4 {
		for i := range 21 {
			a, want, _ := at(w, i)
			if got, held, err := s.Holder(a); err != nil || held != (i < 20) || (held && got != want) {
				t.Errorf("Holder(%s) = %v, %v, %v; want %v held: %v", a, got, held, err, want, i < 20)
			}
		}
	}
	s.Close()
	// Filling again finds the addresses taken.
	if err := storetest.Fill(open, 2, at); err == nil || !strings.Contains(err.Error(), "Reserve(10.0.") {
		t.Errorf("a second Fill = %v, want the Reserve that found its address taken", err)
	}
}
