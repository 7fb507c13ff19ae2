package storetest

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/local-ipam/local-ipam/pkg/store"
)

// Fill makes reservations as that many machines at once do, for the tests and the
// benchmark that need a large network quickly: writers goroutines, each with a store of
// its own from open, writer w reserving at(w, 0), at(w, 1), ... until at says it is done.
// It returns the first failure: an error, or an address found taken.
func Fill(open ConcurrentOpener, writers int, at func(w, i int) (a netip.Addr, o store.Owner, ok bool)) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := open()
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			for i := 0; ; i++ {
				a, o, ok := at(w, i)
				if !ok {
					return
				}
				if ok, err := s.Reserve(a, o); err != nil || !ok {
					errs <- fmt.Errorf("Reserve(%s) = %v, %v", a, ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
