// Package handover finds the listening sockets of a process tree and prepares
// them to be shared with a clone (Linux >= 5.6 for pidfd_getfd).
//
// A restored clone binds its listeners anew (CRIU cannot hand a TCP socket to
// a restored process), which succeeds beside the running original only when
// both sockets have SO_REUSEPORT. Most servers do not set it; this package
// sets it from outside: pidfd_open + pidfd_getfd give a duplicate of the
// target's socket, and setsockopt on the duplicate changes the shared socket.
package handover

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrUnsupported is returned on systems without pidfd_getfd.
var ErrUnsupported = errors.New("handover: not supported on this OS")

// IPPROTO_MPTCP is Multipath TCP's protocol number (Go >= 1.24 listens with it
// by default); CRIU cannot dump such sockets.
const IPPROTO_MPTCP = 262

// Socket is a bound socket of the tree that a clone will bind anew.
type Socket struct {
	// PID and FD locate one holder of the socket (the first found; nginx
	// workers share their master's listeners).
	PID, FD int
	Inode   uint64
	// Holders counts the fds across the tree that refer to this socket.
	Holders  int
	Family   int // unix.AF_INET or unix.AF_INET6
	Type     int // unix.SOCK_STREAM or unix.SOCK_DGRAM
	Protocol int // unix.IPPROTO_TCP, IPPROTO_MPTCP, unix.IPPROTO_UDP
	// Listening is true for a stream socket in listen state.
	Listening bool
	// ReusePort is SO_REUSEPORT as found.
	ReusePort bool
	Local     netip.AddrPort
}

// MPTCP reports whether the socket is Multipath TCP.
func (s Socket) MPTCP() bool { return s.Protocol == IPPROTO_MPTCP }

func (s Socket) String() string {
	kind := "tcp"
	switch {
	case s.MPTCP():
		kind = "mptcp"
	case s.Type != 1: // SOCK_STREAM
		kind = "udp"
	}
	return fmt.Sprintf("%s %s (PID %d fd %d, inode %d)", kind, s.Local, s.PID, s.FD, s.Inode)
}
