//go:build linux

package unixdiag

import (
	"encoding/binary"
	"fmt"

	"github.com/clonebot/clonebot/internal/sockdiag"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// request is struct unix_diag_req: every socket, in every state, with its
// name, VFS inode and peer.
type request struct{}

func (request) Len() int { return 24 }

func (request) Serialize() []byte {
	b := make([]byte, 24)
	b[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(b[4:8], ^uint32(0)) // udiag_states: all
	binary.NativeEndian.PutUint32(b[12:16], showName|showVFS|showPeer)
	binary.NativeEndian.PutUint32(b[16:20], ^uint32(0)) // no cookie
	binary.NativeEndian.PutUint32(b[20:24], ^uint32(0))
	return b
}

// Dump returns the unix sockets of the network namespace pid lives in (the
// caller's when pid is 0), by inode. Unix sockets belong to the namespace
// of the process that created them; a connection to a daemon of another
// namespace has its peer in that one.
func Dump(pid int) (map[uint64]Socket, error) {
	ns := netns.None()
	if pid > 0 {
		h, err := netns.GetFromPid(pid)
		if err != nil {
			return nil, fmt.Errorf("network namespace of PID %d: %w", pid, err)
		}
		defer h.Close()
		ns = h
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket in the network namespace of PID %d: %w", pid, err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.AddData(request{})
	out := map[uint64]Socket{}
	err = sockdiag.Dump(s, req, func(b []byte) error {
		sk, err := ParseMessage(b)
		if err != nil {
			return err
		}
		out[sk.Inode] = sk
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag for unix sockets (is unix_diag loaded?): %w", err)
	}
	return out, nil
}
