package disk

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The state file (.local-ipam/state) says which index generation is current and what the
// network directory looked like when that index last matched the records: its inode,
// mtime and ctime. Every change to the records (create, unlink, rename in the directory)
// moves the directory's mtime and ctime, and the state is written only after the index
// has caught up. So at the start of every call one fstat tells whether anyone changed the
// records behind the index (host-local, a person with rm, one of our own calls killed
// half-way), and then the index is rebuilt from the records. ctime cannot be set from
// user space, so a "touch -d" does not hide a change. On Linux 6.13+ a change right
// after our fstat always gets a distinct timestamp (multigrain timestamps).
//
// Format 2 adds root: the checksum of the owner table's header, the root of the tree of
// checksums that covers every block of the index (owners.go). A state of format 1 does
// not decode, so an index of format 1 is rebuilt once.

const (
	stateName  = "state"
	stateMagic = "LIPAMv2\n"
	stateLen   = 8 + 8*6 + 4 + 4
)

type state struct {
	gen          uint64
	ino          uint64
	mtime, ctime unix.Timespec
	root         uint32 // checksum of the owner table's header
}

func (s state) encode() []byte {
	b := make([]byte, stateLen)
	copy(b, stateMagic)
	le := binary.LittleEndian
	le.PutUint64(b[8:], s.gen)
	le.PutUint64(b[16:], s.ino)
	le.PutUint64(b[24:], uint64(s.mtime.Sec))
	le.PutUint64(b[32:], uint64(s.mtime.Nsec))
	le.PutUint64(b[40:], uint64(s.ctime.Sec))
	le.PutUint64(b[48:], uint64(s.ctime.Nsec))
	le.PutUint32(b[56:], s.root)
	le.PutUint32(b[stateLen-4:], checksum(b[:stateLen-4]))
	return b
}

func decodeState(b []byte) (state, bool) {
	if len(b) != stateLen || string(b[:8]) != stateMagic {
		return state{}, false
	}
	le := binary.LittleEndian
	if checksum(b[:stateLen-4]) != le.Uint32(b[stateLen-4:]) {
		return state{}, false
	}
	return state{
		gen:   le.Uint64(b[8:]),
		ino:   le.Uint64(b[16:]),
		mtime: unix.Timespec{Sec: int64(le.Uint64(b[24:])), Nsec: int64(le.Uint64(b[32:]))},
		ctime: unix.Timespec{Sec: int64(le.Uint64(b[40:])), Nsec: int64(le.Uint64(b[48:]))},
		root:  le.Uint32(b[56:]),
	}, true
}

// matches reports whether the directory is as the state last saw it.
func (s state) matches(st *unix.Stat_t) bool {
	return s.ino == st.Ino && s.mtime == st.Mtim && s.ctime == st.Ctim
}

func (s *state) observe(st *unix.Stat_t) {
	s.ino, s.mtime, s.ctime = st.Ino, st.Mtim, st.Ctim
}

// checksum is FNV-1a: enough to tell a torn or foreign state file, and free of the table
// set-up crc32 pays on first use in every (short-lived) process.
func checksum(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}
