// Package unixdiag lists the unix sockets of a network namespace with
// sock_diag (NETLINK_SOCK_DIAG, AF_UNIX; Linux >= 3.3): each socket's inode,
// type, state, bound name and the inode of its connected peer, which
// /proc/net/unix does not give. clonebot uses it to find the unix stream
// connections of a target tree whose other end lives outside the tree
// (CRIU cannot dump those) and to tell which of them are journald streams.
package unixdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupported is returned on systems without sock_diag.
var ErrUnsupported = errors.New("unixdiag: not supported on this OS")

// Socket types (SOCK_*), as the kernel reports them.
const (
	Stream    = 1
	Dgram     = 2
	SeqPacket = 5
)

// States (include/net/tcp_states.h) a unix socket can be in.
const (
	Established = 1
	Close       = 7
	Listen      = 10
)

// Socket is one unix socket.
type Socket struct {
	Inode uint64
	Type  int // Stream, Dgram or SeqPacket
	State int // Established, Close or Listen
	// Name is the bound address: a path, "@name" for an abstract one, or ""
	// for an unnamed socket. A connection accepted by a listener has the
	// listener's name (journald's streams are "/run/systemd/journal/stdout").
	Name string
	// Peer is the inode of the connected peer, 0 if none.
	Peer uint64
	// VFSInode is the inode of the socket file of a path-bound socket (and
	// of the connections its listener accepted), 0 otherwise.
	VFSInode uint64
}

// TypeName is "stream", "dgram", "seqpacket" or the number.
func (s Socket) TypeName() string {
	switch s.Type {
	case Stream:
		return "stream"
	case Dgram:
		return "dgram"
	case SeqPacket:
		return "seqpacket"
	}
	return fmt.Sprintf("type %d", s.Type)
}

// Connected reports whether s is a connection-oriented socket (stream or
// seqpacket) with a peer: the kind CRIU cannot dump when the peer is not
// dumped with it.
func (s Socket) Connected() bool {
	return (s.Type == Stream || s.Type == SeqPacket) && s.Peer != 0
}

// Attribute types of a unix_diag_msg (include/uapi/linux/unix_diag.h).
const (
	attrName = 0
	attrVFS  = 1
	attrPeer = 2
)

// Show flags of a unix_diag_req.
const (
	showName = 1 << 0
	showVFS  = 1 << 1
	showPeer = 1 << 2
)

// msgLen is sizeof(struct unix_diag_msg).
const msgLen = 16

// ParseMessage decodes one unix_diag_msg and its attributes (the payload of
// one netlink message of a SOCK_DIAG_BY_FAMILY answer for AF_UNIX).
func ParseMessage(b []byte) (Socket, error) {
	var s Socket
	if len(b) < msgLen {
		return s, fmt.Errorf("unix_diag_msg: %d bytes; want at least %d", len(b), msgLen)
	}
	if b[0] != 1 { // AF_UNIX
		return s, fmt.Errorf("unix_diag_msg: family %d; want AF_UNIX", b[0])
	}
	s.Type, s.State = int(b[1]), int(b[2])
	s.Inode = uint64(binary.NativeEndian.Uint32(b[4:8]))
	rest := b[msgLen:]
	for len(rest) >= 4 {
		l := int(binary.NativeEndian.Uint16(rest[0:2]))
		typ := binary.NativeEndian.Uint16(rest[2:4]) & 0x3fff // NLA_TYPE_MASK
		if l < 4 || l > len(rest) {
			return s, fmt.Errorf("unix_diag_msg of inode %d: attribute %d has length %d of %d bytes left", s.Inode, typ, l, len(rest))
		}
		val := rest[4:l]
		switch typ {
		case attrName:
			s.Name = decodeName(val)
		case attrVFS:
			if len(val) >= 4 {
				s.VFSInode = uint64(binary.NativeEndian.Uint32(val[0:4]))
			}
		case attrPeer:
			if len(val) >= 4 {
				s.Peer = uint64(binary.NativeEndian.Uint32(val[0:4]))
			}
		}
		// Attributes are aligned on 4 bytes.
		next := (l + 3) &^ 3
		if next > len(rest) {
			break
		}
		rest = rest[next:]
	}
	return s, nil
}

// decodeName turns a sun_path as the kernel reports it (without the family,
// not NUL-terminated for paths, a leading NUL for abstract names) into a
// path or "@name".
func decodeName(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if b[0] == 0 {
		return "@" + string(b[1:])
	}
	return strings.TrimRight(string(b), "\x00")
}
