// Package disk is local-ipam's node-local store, in host-local's on-disk format:
// <dataDir>/<network>/<ip> files holding "<containerID>\r\n<ifname>", last_reserved_ip.<set>
// and a flock'ed "lock" file, so that either plugin can take over the other's directory.
// Beside the records it keeps an index in .local-ipam/ (see index.go and state.go) so that
// no call reads the store in proportion to its size.
//
// A call, in the order it runs: open.go and lock.go (Open: the directory, the lock, the
// index made current, with prepare.go's records written before the lock), reserve.go (the
// store.Store operations), commit.go (Commit and Close: index changes, then the state).
// The index: index.go (bitmap pages, and reading the index), owners.go (the owner table
// and its checksums), state.go (whether the index matches the records), rebuild.go (a new
// index from the records). fs.go writes files atomically; records.go walks the records;
// gc.go and reboot.go free them.
package disk

import (
	"fmt"
	"net/netip"
	"time"

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
	// sealed: a pair of the directory's timestamps no later change can leave (statDir),
	// nil until one is known.
	sealed *state

	pages    map[pageKey]*page
	table    *ownerTable             // opened on first use
	owners   map[string][]netip.Addr // owners looked up or changed, by key
	dirty    map[string]bool         // owners to write back
	overflow map[string]bool         // owners whose addresses are in an overflow file

	lastLen map[int]int // length of last_reserved_ip.<set> as read, -1 when absent

	// index is what this call's index is: where it lives and what may be done with it.
	index indexMode
	// What the commit does with the state file (commit.go). These matter when the index
	// is on disk and writable (indexCurrent, indexRebuilt), where each takes either value
	// whatever the others are: flags beside the mode, not modes.
	// changed: the records changed since the last commit, so the state must be renewed;
	// marked: the state file on disk says "a call is changing the records" (beginChange),
	// or is otherwise invalid, until saveState writes it;
	// stale: the index disagreed with a record, so the commit spoils the state and the
	// next call rebuilds.
	changed bool
	marked  bool
	stale   bool

	// prepared: anonymous record files of preparedKey, written before the lock (see
	// Options.Records), each linked into place by a Reserve of that owner.
	prepared    []int
	preparedKey string
	// refused: the ways of creating a record this file system refused (see linkRecord).
	refused refusals
	// lockTimeout bounds the wait for the lock (Options.LockTimeout).
	lockTimeout time.Duration

	rebuilds int // index rebuilds done by this call
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
	// costliest file operation of an ADD, and under the lock it delays every other call
	// of the network (figures in docs/PERFORMANCE.md).
	Records int
	Owner   store.Owner
	// LockTimeout bounds the wait for the network's lock (DefaultLockTimeout when 0).
	LockTimeout time.Duration
}

func (s *Store) String() string { return fmt.Sprintf("disk store %s", s.dir) }

// indexMode is what a call's index is: where it lives (on disk, or in this process only),
// whether it may be written, and whether the space it takes on disk is this call's to give
// back to a record (spaceFor). In the modes kept in memory, the owners and pages in memory
// are the whole index (once the rebuild that entered the mode has filled them): nothing
// of it is read from disk or written there, and the state is never made valid, so the
// next call rebuilds.
//
// Transitions, within one call (the mode itself is not saved):
//
//	Open:     indexCurrent when the state matches the directory, indexReadOnly when it
//	          matches on a read-only file system, indexMemDenied (rebuilt in memory) when
//	          this user may not open the index; otherwise a rebuild.
//	rebuild:  to the in-memory mode of the same kind (rebuilding), filled from the
//	          records; then, if writable, written as a new generation: indexMemWrote
//	          from the removal of the old generations on, indexRebuilt once written.
//	spaceFor: indexRebuilt or indexMemWrote -> indexDropped (rebuilt in memory).
//
// Whatever the mode, a change to the records is made first and the index follows it; the
// state file guards the crash in between (beginChange, Commit).
type indexMode uint8

const (
	// indexCurrent: the index on disk is current, as Open found it: read as needed, its
	// changes written at commit.
	indexCurrent indexMode = iota
	// indexRebuilt: the index on disk is current, written by this call (a rebuild).
	indexRebuilt
	// indexReadOnly: the file system is read-only and the index on disk current: it is
	// read, never written, and any change to the store fails with code 5.
	indexReadOnly
	// indexMemReadOnly: the file system is read-only and the index on disk was not
	// current: it is rebuilt in memory. Changes fail as in indexReadOnly.
	indexMemReadOnly
	// indexMemory: in memory only (being rebuilt, or it could not be written); an index
	// left on disk was not written by this call.
	indexMemory
	// indexMemWrote: in memory only, after this call began writing the index on disk (a
	// rebuild whose write failed, or a second rebuild under way): what it wrote is this
	// call's to give back.
	indexMemWrote
	// indexDropped: in memory only, the index on disk removed to give its space to a
	// record (spaceFor).
	indexDropped
	// indexMemDenied: in memory only, because this user may not open or create the
	// index (indexDenied): rebuilt from the records at every call, never written; the
	// records are changed as in any other mode.
	indexMemDenied
)

// inMemory: the owners and pages in memory are the whole index; nothing of it is read
// from disk.
func (m indexMode) inMemory() bool {
	switch m {
	case indexMemReadOnly, indexMemory, indexMemWrote, indexDropped, indexMemDenied:
		return true
	}
	return false
}

// readOnly: the file system is read-only; nothing is written, and changes fail.
func (m indexMode) readOnly() bool { return m == indexReadOnly || m == indexMemReadOnly }

// writable: a rebuild writes the index to disk in this mode.
func (m indexMode) writable() bool {
	return !m.readOnly() && m != indexDropped && m != indexMemDenied
}

// ownsSpace: the index on disk was written by this call, so spaceFor may remove it to
// make room for a record. An index this call did not write is left alone.
func (m indexMode) ownsSpace() bool { return m == indexRebuilt || m == indexMemWrote }

// rebuilding is the mode a rebuild starts in: in memory, of the same kind.
func (m indexMode) rebuilding() indexMode {
	switch m {
	case indexReadOnly, indexMemReadOnly:
		return indexMemReadOnly
	case indexRebuilt, indexMemWrote:
		return indexMemWrote
	case indexDropped, indexMemDenied:
		return m
	}
	return indexMemory
}
