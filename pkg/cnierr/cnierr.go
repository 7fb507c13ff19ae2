// Package cnierr holds the CNI error codes local-ipam returns, so that every layer answers
// with a code a runtime can act on instead of the generic 999.
package cnierr

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Codes reserved by the CNI spec (SPEC.md, "Error").
const (
	IncompatibleVersion = types.ErrIncompatibleCNIVersion      // 1
	UnsupportedField    = types.ErrUnsupportedField            // 2
	UnknownContainer    = types.ErrUnknownContainer            // 3
	InvalidEnvironment  = types.ErrInvalidEnvironmentVariables // 4
	IOFailure           = types.ErrIOFailure                   // 5
	DecodingFailure     = types.ErrDecodingFailure             // 6
	InvalidConfig       = types.ErrInvalidNetworkConfig        // 7
	TryAgainLater       = types.ErrTryAgainLater               // 11
	PluginNotAvailable  = types.ErrPluginNotAvailable          // 50
)

// local-ipam's own codes (100 and up, as the spec asks). Documented in README.md.
const (
	// NoFreeAddress: a range set has no address left to give.
	NoFreeAddress uint = 100
	// AddressInUse: a requested address is reserved for another attachment.
	AddressInUse uint = 101
	// AddressNotAllowed: a requested address is outside every range set, is a gateway, or
	// is excluded.
	AddressNotAllowed uint = 102
	// DuplicateAllocation: ADD for an attachment that already holds an address in the range
	// set (a runtime must DEL before it ADDs again).
	DuplicateAllocation uint = 103
	// StoreCorrupt: the store holds something local-ipam will not touch (for example a
	// symlink where the network directory should be).
	StoreCorrupt uint = 104
	// NotReserved: CHECK found an address of prevResult that is not reserved for this
	// attachment, or a range set without an address.
	NotReserved uint = 105
)

// New returns a *types.Error, which skel prints as the CNI error JSON with this code.
func New(code uint, details string, format string, a ...any) *types.Error {
	return &types.Error{Code: code, Msg: fmt.Sprintf(format, a...), Details: details}
}

// IO wraps a store failure as code 5 with the OS error as details.
func IO(err error, format string, a ...any) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return &types.Error{Code: IOFailure, Msg: fmt.Sprintf(format, a...), Details: err.Error()}
}

// Code returns the CNI code of err (999 for plain errors).
func Code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return types.ErrInternal
}
