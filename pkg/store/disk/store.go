// Package disk is local-ipam's node-local store, in host-local's on-disk format:
// <dataDir>/<network>/<ip> files holding "<containerID>\r\n<ifname>", last_reserved_ip.<set>
// and a flock'ed "lock" file, so that either plugin can take over the other's directory.
// Beside the records it keeps an index in .local-ipam/ (see index.go and state.go) so that
// no call reads the store in proportion to its size.
package disk

import (
	"fmt"
	"net/netip"

	"github.com/local-ipam/local-ipam/pkg/store"
)

const (
	lockName   = "lock"
	lastPrefix = "last_reserved_ip."
	metaName   = ".local-ipam"
	idxPrefix  = "idx."
	// maxRecord bounds what we read of one record. Real ones are under 300 bytes, but
	// skel puts no limit on a container ID short of the environment's (128 KiB a string),
	// and a record we cannot read whole never matches its owner. Buffers are sized by the
	// file, so the bound costs nothing.
	maxRecord = 1 << 20
)

// Store is one network's directory, locked for the duration of one call.
type Store struct {
	dir    string
	lockfd int // the flock'ed lock file
	netfd  int
	metafd int
	idxfd  int
	stfd   int
	st     state

	pages    map[pageKey]*page
	table    *ownerTable             // opened on first use
	owners   map[string][]netip.Addr // owners looked up or changed, by key
	dirty    map[string]bool         // owners to write back
	overflow map[string]bool         // owners whose addresses are in an overflow file

	lastLen map[int]int // length of last_reserved_ip.<set> as read, -1 when absent

	// memOnly: the index lives in this process only (being rebuilt, or it could not be
	// written): owners and pages are complete in memory and nothing of the index is
	// read or written; the state stays stale, so the next call rebuilds.
	memOnly bool
	// IndexErr is why the index could not be written, when memOnly.
	IndexErr error
	// ro: the file system is read-only. Reads work as usual, the index included when it is
	// current (otherwise it is rebuilt in memory only); any change fails with code 5.
	ro bool
	// dropped: the index on disk was removed to give its space to a record (dropIndex);
	// this call keeps it in memory only.
	dropped bool
	// wroteIndex: this call (re)wrote the index on disk (a rebuild), so its space is this
	// call's to give back (spaceFor).
	wroteIndex bool

	changed bool // the records changed: the state must be renewed at Close
	// marked: the state file says "a call is changing the records" (see beginChange).
	marked bool
	stale  bool // the index disagreed with a record: rebuild at the next call

	// prepared: anonymous record files of preparedKey, written before the lock (see
	// Options.Records), each linked into place by a Reserve of that owner.
	prepared    []int
	preparedKey string
	// refused: the ways of creating a record this file system refused (see linkRecord).
	refused refusals

	// Rebuilds counts index rebuilds done by this call (tests and `list` report it).
	Rebuilds int
	// FreedOnReboot counts records freed because the machine rebooted.
	FreedOnReboot int
}

var _ store.Store = (*Store)(nil)

// Options change how a network's store is opened.
type Options struct {
	// FreeOnReboot: at the first call after the machine rebooted, free every record
	// (see freeOnReboot).
	FreeOnReboot bool
	// Records > 0: the call will likely reserve that many addresses for Owner (an ADD:
	// one per range set). Their record files are written before the lock is taken, as
	// anonymous files that Reserve only links into place: creating an inode is the
	// costliest file operation of an ADD (20 µs to over 1 ms on ext4), and under the lock
	// it delays every other call of the network.
	Records int
	Owner   store.Owner
}

// Dir is the network's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) String() string { return fmt.Sprintf("disk store %s", s.dir) }
