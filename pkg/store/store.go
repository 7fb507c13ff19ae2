// Package store defines what the allocator needs from a place that keeps reservations:
// an exclusive reserve of one address, release by owner, lookup by owner, a free-address
// search and the round-robin cursor of each range set. Every backend passes the
// conformance suite in package internal/storetest.
package store

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// LineBreak separates container ID and ifname in a record, as host-local writes it.
const LineBreak = "\r\n"

// Owner is whoever holds a reservation: an attachment (container ID, ifname). A record
// written by host-local before it kept the ifname has IfName "" (a legacy owner).
type Owner struct {
	ID     string
	IfName string
}

// Key is the record content that names this owner, host-local's format.
func (o Owner) Key() string {
	if o.IfName == "" {
		return o.ID
	}
	return o.ID + LineBreak + o.IfName
}

// Legacy is the ID-only owner that old host-local records name.
func (o Owner) Legacy() Owner { return Owner{ID: o.ID} }

// ParseKey reads a record's content; surrounding white space is not part of it (host-local
// trims it too).
func ParseKey(content string) Owner {
	k := strings.TrimSpace(content)
	if i := strings.Index(k, LineBreak); i >= 0 {
		return Owner{ID: k[:i], IfName: k[i+len(LineBreak):]}
	}
	return Owner{ID: k}
}

// CheckNetworkName refuses, with code 7 (invalid configuration), a network name that
// cannot name one network's place in a store: each store uses the name as one path
// component (a directory of the data dir, a segment of a key), so it must not be empty,
// "." or "..", nor hold a '/' or a NUL.
func CheckNetworkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return cnierr.New(cnierr.InvalidConfig, "", "invalid network name %q", name)
	}
	return nil
}

// Store is one network's reservations, opened for one call. Implementations take their
// lock when opened and release it in Close; between the two the caller has the network
// to itself.
type Store interface {
	// Owned returns the addresses reserved for exactly this owner (an ID-only owner
	// matches only ID-only records).
	Owned(o Owner) ([]netip.Addr, error)
	// FirstFree returns the lowest address in [from, to] that is not reserved.
	FirstFree(from, to netip.Addr) (netip.Addr, bool, error)
	// Reserve takes a for o. It returns false, nil when a is already reserved.
	Reserve(a netip.Addr, o Owner) (bool, error)
	// Holder returns who holds a, reading the reservation itself (for CHECK).
	Holder(a netip.Addr) (Owner, bool, error)
	// Release frees a if it is reserved for o, and reports whether it was.
	Release(a netip.Addr, o Owner) (bool, error)
	// LastReserved is the cursor of range set idx (the zero Addr when there is none).
	LastReserved(set int) (netip.Addr, error)
	// SetLastReserved moves the cursor of range set idx.
	SetLastReserved(set int, a netip.Addr) error
	// Commit makes the call's changes durable; the lock stays held.
	Commit() error
	// Close commits and releases the lock.
	Close() error
}

// ErrOwnerChanged is returned by Reserve (or ReserveAt) of a store without a lock (etcd)
// when the owner's reservations changed since this Store's last Owned of it: another
// process reserved for the same owner meanwhile, and a duplicate check made on what Owned
// returned is stale. Nothing was reserved; the caller checks again.
var ErrOwnerChanged = errors.New("the owner's reservations changed since they were read")

// CursorReserver is a Store that can reserve an address and move a range set's cursor to
// it in one step (etcd: one transaction, one durable write, instead of two). The
// allocator uses it when a store has it; the outcome is that of Reserve followed, on
// success, by SetLastReserved.
type CursorReserver interface {
	ReserveAt(a netip.Addr, o Owner, set int) (bool, error)
}

// Stretch is the addresses [From, To].
type Stretch struct{ From, To netip.Addr }

// Blocks is a store that divides the pool into blocks, each held by one machine (the
// etcd store's node-affine blocks), so that machines allocating at once do not contend.
// The allocator takes an address from the machine's own blocks first, then from a block
// it claims, and only when no block is left unclaimed from anywhere (Borrow).
type Blocks interface {
	// OwnBlocks returns the stretches of this machine's blocks within [from, to] that
	// may have a free address, in round-robin order from the cursor last: the rest of
	// last's block, the machine's next blocks (wrapping), then the start of last's block.
	OwnBlocks(last, from, to netip.Addr) ([]Stretch, error)
	// ClaimStart is where this machine starts looking for a block to claim in [from, to]:
	// a point of its own, so that machines claiming at once do not collide.
	ClaimStart(from, to netip.Addr) netip.Addr
	// NextUnclaimed returns the part within [from, to] of the first block at or after
	// from's that no machine holds. A Reserve in it claims the block in the same step,
	// or fails with ErrBlockClaimed if another machine claimed it first.
	NextUnclaimed(from, to netip.Addr) (Stretch, bool, error)
	// Borrow says that no block is left to claim: what follows takes from other
	// machines' blocks (and may take over their empty ones).
	Borrow()
}

// ErrBlockClaimed: the block of the address to reserve was claimed by another machine
// since NextUnclaimed returned it. Nothing was reserved; the allocator tries another block.
var ErrBlockClaimed = errors.New("the block was claimed by another machine")

// GCKeeps returns GC's rule for the valid attachments of a GC call: whether the record
// with this (trimmed) content stays. host-local v1.10.0's outcome, which every store
// keeps: an attachment's record stays when it is valid; a record naming only a container
// ID (old host-local) stays when that container has any valid attachment.
func GCKeeps(valid []types.GCAttachment) func(content string) bool {
	keep := make(map[string]bool, 2*len(valid))
	keepLegacy := make(map[string]bool, len(valid))
	for _, a := range valid {
		id := strings.TrimSpace(a.ContainerID)
		keep[id+LineBreak+a.IfName] = true
		keepLegacy[id] = true
	}
	return func(content string) bool {
		return keep[content] || (!strings.Contains(content, LineBreak) && keepLegacy[content])
	}
}
