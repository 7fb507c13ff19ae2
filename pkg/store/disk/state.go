package disk

import (
	"encoding/binary"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The state file (.local-ipam/state) says which index generation is current and what the
// network directory looked like when that index last matched the records: its inode,
// mtime and ctime. Every change to the records (create, link, unlink, rename in the
// directory) moves the directory's mtime and ctime (but a rename on exFAT through FUSE:
// see docs/RELIABILITY.md), and the state is written only after the index has caught
// up. So at the start of every call one fstat tells whether anyone changed the records
// behind the index (host-local, a person with rm, one of our own calls killed half-way),
// and then the index is rebuilt from the records.
//
// A timestamp has the file system's granularity and, without multigrain timestamps, the
// kernel's clock tick, so two changes can get the same one: a change right after a
// commit could leave the very pair the commit recorded. So the state records only a pair
// no later change can leave. A change of a directory entry sets mtime and ctime to one
// instant, the current time. Right after a change the pair is equal, and the mtime is
// then set one step back (stampDir: the mtime minus 1 ns, which the file system
// truncates to its granularity); the pair that results is recorded when either
//
//   - mtime != ctime (the ctime became the time of the stamp): a later change leaves
//     them equal, whatever the clock does. This is every file system with a real ctime,
//     multigrain or not: the stamp's ctime is never earlier than the change's time;
//   - or mtime == ctime but the mtime went back, to before the last change's timestamp,
//     which was not in the future: a file system whose ctime only mirrors the mtime (exFAT
//     through FUSE). A later change stamps the current time, never earlier (unless the
//     clock is set back), so it cannot leave the set-back value either. A commit that
//     stamps again without a change in between (a rebuild) only moves it further back.
//
// A pair that a valid state recorded and the directory still shows needs no new stamp
// (sealed): nothing changed since a commit accepted it. ctime cannot be set from user
// space, so a "touch -d" can fake a recorded pair only within the timestamp step of the
// commit's stamp (its own ctime must be the recorded one), or at any time where the ctime
// mirrors the mtime. When the mtime cannot be set (utimensat refused: not the directory's
// owner, say) or did not go back, the state is written only once the file system's clock
// has moved past the pair (waitClock), with the lock held: any later change then leaves
// a later one. A change made during a call by someone who does not take the lock (rm)
// can still fall before the recorded pair and be missed.
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

// stampDir sets the atime and mtime of the directory open as fd (futimens). Both are
// given: FUSE file systems built on libfuse 2 (exfat-fuse) ignore a new mtime that comes
// with UTIME_OMIT for the atime, and answer success. A variable so that tests can make it
// fail as it does for a non-owner.
var stampDir = func(fd int, atime, mtime unix.Timespec) error {
	ts := [2]unix.Timespec{atime, mtime}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// statDir fstats the network directory for the state to record (see the top of this
// file): when its mtime equals its ctime, the mtime is first set one step back. distinct
// is false when the pair is still one a later change could leave (the mtime could not
// be set back): the state may then be trusted only after waitClock.
func (s *Store) statDir(st *unix.Stat_t) (distinct bool, err error) {
	if err := unix.Fstat(s.netfd, st); err != nil {
		return false, err
	}
	if st.Mtim != st.Ctim || s.sealed != nil && s.sealed.matches(st) {
		s.seal(st)
		return true, nil
	}
	was := st.Mtim
	back := was
	if back.Nsec--; back.Nsec < 0 {
		back.Sec, back.Nsec = back.Sec-1, 999_999_999
	}
	if stampDir(s.netfd, st.Atim, back) != nil {
		return false, nil
	}
	if err := unix.Fstat(s.netfd, st); err != nil {
		return false, err
	}
	now := unix.NsecToTimespec(time.Now().UnixNano())
	if st.Mtim != st.Ctim || later(was, st.Mtim) && !later(was, now) {
		s.seal(st)
		return true, nil
	}
	return false, nil
}

// seal notes a pair of the directory that no later change can leave: a commit may
// record it again without a new stamp.
func (s *Store) seal(st *unix.Stat_t) {
	s.sealed = &state{}
	s.sealed.observe(st)
}

// clockWaits counts waitClock's runs in this process (tests tell by it which way a
// commit went).
var clockWaits atomic.Int64

// clockWait bounds waitClock: the coarsest timestamps in use are a second or two.
var clockWait = 3 * time.Second

// waitClock waits, with the lock held, until the file system's clock has moved past the
// directory's timestamps in dir, so that any later change to the directory gets other
// ones. The probe is a change in .local-ipam: a write of the state file's first byte,
// which also keeps the state invalid meanwhile, and that file's new ctime. It reports
// false when the clock did not move within clockWait.
func (s *Store) waitClock(dir *unix.Stat_t) (bool, error) {
	clockWaits.Add(1)
	deadline := time.Now().Add(clockWait)
	pause := 100 * time.Microsecond
	for {
		if err := pwriteAll(s.stfd, []byte{'x'}, 0); err != nil {
			return false, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(s.stfd, &st); err != nil {
			return false, err
		}
		if later(st.Ctim, dir.Mtim) && later(st.Ctim, dir.Ctim) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

func later(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}
