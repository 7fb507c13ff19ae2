package memory_test

import (
	"testing"

	"github.com/local-ipam/local-ipam/pkg/store"
	"github.com/local-ipam/local-ipam/pkg/store/memory"
	"github.com/local-ipam/local-ipam/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		s := memory.New()
		return func(t *testing.T) store.Store { return s.Reopen() }
	})
}
