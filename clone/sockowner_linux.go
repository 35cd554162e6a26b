//go:build linux

package clone

// The owner of a restored listener.
//
// The kernel puts SO_REUSEPORT sockets in one group only when they have the
// same owner (sk_uid: the fsuid of the process that created the socket, or
// what fchown(2) on the socket last set; Linux >= 4.10). CRIU keeps no owner
// in its images and creates every restored socket as root, so the clone of a
// listener owned by another uid (a server started by a member of group
// clonebot, or as a service's User=) cannot bind beside the original: the
// restore fails with "Address already in use". The clone is made the way
// clonebot makes it for root's listeners by lending such a listener of the
// original to root for the restore only (fchown on a pidfd_getfd duplicate),
// then giving both the original's and the clone's the original's owner back.
// A socket's owner decides nothing else for a listener but uid-based routing
// and netfilter's owner match of what it sends; the connections the original
// accepts during the restore (a few hundred milliseconds) keep root as theirs.
// A daemon that dies in between gives the owner back at its next start
// (undoHalfMade), from the clone's stored journal.

import (
	"errors"
	"fmt"

	"github.com/clonebot/clonebot/handover"
	"golang.org/x/sys/unix"
)

// sockOwner is a listener of the original that is not root's, and its owner.
type sockOwner struct {
	PID   int    `json:"pid"`
	FD    int    `json:"fd"`
	Inode uint64 `json:"inode"`
	Addr  string `json:"addr"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
}

func (o sockOwner) socket() handover.Socket {
	return handover.Socket{PID: o.PID, FD: o.FD, Inode: o.Inode}
}

// listenerOwners returns the listeners among socks that root does not own.
func listenerOwners(socks []handover.Socket) ([]sockOwner, error) {
	var out []sockOwner
	for _, s := range socks {
		if !s.Listening {
			continue
		}
		f, err := handover.Dup(s)
		if err != nil {
			return nil, err
		}
		var st unix.Stat_t
		err = unix.Fstat(int(f.Fd()), &st)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("fstat %s of PID %d: %w", s.Local, s.PID, err)
		}
		if st.Uid != 0 {
			out = append(out, sockOwner{PID: s.PID, FD: s.FD, Inode: s.Inode, Addr: s.Local.String(), UID: st.Uid, GID: st.Gid})
		}
	}
	return out, nil
}

// chownSocket sets the owner of the socket s (through a duplicate) and reads
// it back.
func chownSocket(s handover.Socket, uid, gid uint32) error {
	f, err := handover.Dup(s)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fchown(int(f.Fd()), int(uid), int(gid)); err != nil {
		return fmt.Errorf("fchown %d:%d socket inode %d of PID %d: %w", uid, gid, s.Inode, s.PID, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("read back the owner of socket inode %d of PID %d: %w", s.Inode, s.PID, err)
	}
	if st.Uid != uid || st.Gid != gid {
		return fmt.Errorf("owner of socket inode %d of PID %d: wrote %d:%d, read back %d:%d", s.Inode, s.PID, uid, gid, st.Uid, st.Gid)
	}
	return nil
}

// lendListeners gives the original's listeners in owners to root for the
// restore. On error, the ones already lent are given back.
func lendListeners(owners []sockOwner) error {
	for i, o := range owners {
		if err := chownSocket(o.socket(), 0, 0); err != nil {
			return errors.Join(err, returnListeners(owners[:i]))
		}
	}
	return nil
}

// returnListeners gives the original's listeners in owners their owner
// back. A listener that is gone (the original exited) is not an error.
func returnListeners(owners []sockOwner) error {
	var errs []error
	for _, o := range owners {
		if err := chownSocket(o.socket(), o.UID, o.GID); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.EBADF) {
			errs = append(errs, fmt.Errorf("give listener %s of PID %d back to uid %d: %w", o.Addr, o.PID, o.UID, err))
		}
	}
	return errors.Join(errs...)
}

// ownClonesListeners gives the clone's listeners the owners of the
// original's on the same addresses; it returns warnings for those it could
// not.
func ownClonesListeners(owners []sockOwner, cloneSocks []handover.Socket) []string {
	var warns []string
	for _, o := range owners {
		for _, s := range cloneSocks {
			if !s.Listening || s.Local.String() != o.Addr {
				continue
			}
			if err := chownSocket(s, o.UID, o.GID); err != nil {
				warns = append(warns, fmt.Sprintf("the clone's listener %s stays owned by root, not uid %d like the original's: %v", o.Addr, o.UID, err))
			}
		}
	}
	return warns
}
