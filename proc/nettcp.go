package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// TCPState is the state of a TCP socket as numbered by the kernel
// (include/net/tcp_states.h) and printed in the "st" column of /proc/net/tcp.
type TCPState uint8

// TCP states.
const (
	TCPEstablished TCPState = 0x01
	TCPSynSent     TCPState = 0x02
	TCPSynRecv     TCPState = 0x03
	TCPFinWait1    TCPState = 0x04
	TCPFinWait2    TCPState = 0x05
	TCPTimeWait    TCPState = 0x06
	TCPClose       TCPState = 0x07
	TCPCloseWait   TCPState = 0x08
	TCPLastAck     TCPState = 0x09
	TCPListen      TCPState = 0x0A
	TCPClosing     TCPState = 0x0B
)

var tcpStateNames = [...]string{
	TCPEstablished: "ESTABLISHED",
	TCPSynSent:     "SYN_SENT",
	TCPSynRecv:     "SYN_RECV",
	TCPFinWait1:    "FIN_WAIT1",
	TCPFinWait2:    "FIN_WAIT2",
	TCPTimeWait:    "TIME_WAIT",
	TCPClose:       "CLOSE",
	TCPCloseWait:   "CLOSE_WAIT",
	TCPLastAck:     "LAST_ACK",
	TCPListen:      "LISTEN",
	TCPClosing:     "CLOSING",
}

// String returns the kernel's name for the state, such as "ESTABLISHED", or
// "TCPState(0x0c)" for a value it does not know.
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) && tcpStateNames[s] != "" {
		return tcpStateNames[s]
	}
	return fmt.Sprintf("TCPState(%#02x)", uint8(s))
}

// Socket is one line of /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	// Local and Remote are the socket's addresses. IPv4 sockets have 4-byte
	// addresses; tcp6 sockets keep 16-byte ones, including IPv4-mapped
	// addresses such as ::ffff:127.0.0.1. Remote is the unspecified address
	// with port 0 for a listener.
	Local, Remote netip.AddrPort
	// State is the TCP state.
	State TCPState
	// TxQueue and RxQueue are the bytes in the send and receive queues (for a
	// listener, RxQueue is the accept backlog).
	TxQueue, RxQueue uint32
	// UID is the owner's effective user ID.
	UID int
	// Inode is the socket inode, matching FD.Inode of socket:[N].
	Inode uint64
}

// ParseNetTCP parses /proc/net/tcp or /proc/net/tcp6 (also reached as
// /proc/PID/net/...). Each line's address width tells the two apart (8 hex
// digits for IPv4, 32 for IPv6). The kernel prints each 32-bit word of an
// address in host byte order, so the result is right on the host that wrote
// the file (all of clonebot's targets are little-endian). The header line is
// skipped.
func ParseNetTCP(r io.Reader) ([]Socket, error) {
	var out []Socket
	err := eachLine(r, func(line string) error {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "sl" {
			return nil
		}
		if len(f) < 10 {
			return fmt.Errorf("got %d fields; want at least 10", len(f))
		}
		var s Socket
		var err error
		if s.Local, err = parseHexAddrPort(f[1]); err != nil {
			return fmt.Errorf("local address: %w", err)
		}
		if s.Remote, err = parseHexAddrPort(f[2]); err != nil {
			return fmt.Errorf("remote address: %w", err)
		}
		if s.Local.Addr().BitLen() != s.Remote.Addr().BitLen() {
			return errors.New("local and remote address families differ")
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return fmt.Errorf("state: %w", err)
		}
		s.State = TCPState(st)
		tx, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return fmt.Errorf("queues %q; want tx:rx", f[4])
		}
		q, err := strconv.ParseUint(tx, 16, 32)
		if err != nil {
			return fmt.Errorf("tx_queue: %w", err)
		}
		s.TxQueue = uint32(q)
		if q, err = strconv.ParseUint(rx, 16, 32); err != nil {
			return fmt.Errorf("rx_queue: %w", err)
		}
		s.RxQueue = uint32(q)
		if s.UID, err = strconv.Atoi(f[7]); err != nil {
			return fmt.Errorf("uid: %w", err)
		}
		if s.Inode, err = strconv.ParseUint(f[9], 10, 64); err != nil {
			return fmt.Errorf("inode: %w", err)
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseHexAddrPort parses "0100007F:1F90" or a 32-digit IPv6 form.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q has no ':'", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port: %w", err)
	}
	var b [16]byte
	switch len(a) {
	case 8, 32:
	default:
		return netip.AddrPort{}, fmt.Errorf("address %q has %d hex digits; want 8 or 32", a, len(a))
	}
	for i := 0; i < len(a); i += 8 {
		w, err := strconv.ParseUint(a[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address: %w", err)
		}
		binary.NativeEndian.PutUint32(b[i/2:], uint32(w))
	}
	var addr netip.Addr
	if len(a) == 8 {
		addr = netip.AddrFrom4([4]byte(b[:4]))
	} else {
		addr = netip.AddrFrom16(b)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
