package memory_test

import (
	"testing"

	"github.com/local-ipam/local-ipam/internal/storetest"
	"github.com/local-ipam/local-ipam/internal/storetest/memory"
	"github.com/local-ipam/local-ipam/pkg/store"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		s := memory.New()
		return func(t *testing.T) store.Store { return s.Reopen() }
	})
}
