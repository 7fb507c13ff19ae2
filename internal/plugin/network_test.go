package plugin

import "github.com/local-ipam/local-ipam/pkg/store/disk"

// The disk store is a Network (the verbs and the operator's commands use it through that
// interface alone); checked at compile time.
var _ Network = (*disk.Store)(nil)
