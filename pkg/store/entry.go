package store

import (
	"net/netip"
	"time"
)

// Entry is one reservation as the operator's commands list it.
type Entry struct {
	Addr  netip.Addr
	Owner Owner
	// Node is the machine that made it (a cluster store; "" on disk).
	Node string
	// Created is when it was made (on disk: when its record was last written).
	Created time.Time
}
