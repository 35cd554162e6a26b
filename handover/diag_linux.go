//go:build linux

package handover

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/clonebot/clonebot/internal/sockdiag"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel socket states (include/net/tcp_states.h).
const (
	tcpListen = 10
	tcpClose  = 7 // an unconnected UDP socket
)

// diagReq is struct inet_diag_req_v2 with an empty socket id: a dump of
// every socket of one family and protocol in the given states.
type diagReq struct {
	family, protocol uint8
	ext              uint8 // idiag_ext: the extensions asked for
	states           uint32
}

func (r diagReq) Len() int { return 56 }

func (r diagReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1], b[2] = r.family, r.protocol, r.ext
	binary.NativeEndian.PutUint32(b[4:8], r.states)
	return b
}

// diagSocket is what clonebot needs of an inet_diag_msg.
type diagSocket struct {
	inode uint64
	local netip.AddrPort
	state uint8
	// rqueue is the accept queue of a listener, the unread bytes of a
	// connection.
	rqueue uint32
	// wqueue is a listener's backlog.
	wqueue uint32
	// dataSegsIn is tcp_info's tcpi_data_segs_in (-1 when not asked or
	// not known): 0 for a connection whose peer has sent nothing yet.
	dataSegsIn int64
	// dataSegsOut is tcpi_data_segs_out: 0 for a connection that never
	// answered.
	dataSegsOut int64
	// lastDataSent and lastDataRecv are tcp_info's ms since the
	// connection last sent and received data (jiffies: a few ms apart at
	// least to tell which came last).
	lastDataSent, lastDataRecv uint32
}

// INET_DIAG_INFO: struct tcp_info, asked for with idiag_ext bit 1<<(2-1).
const (
	inetDiagInfo        = 2
	tcpInfoDataSegsIn   = 152 // offsetof(struct tcp_info, tcpi_data_segs_in)
	tcpInfoDataSegsOut  = 156 // tcpi_data_segs_out
	tcpInfoLastDataSent = 44  // tcpi_last_data_sent
	tcpInfoLastDataRecv = 52  // tcpi_last_data_recv
	inetDiagMsgLen      = 72
	diagExtInfo         = 1 << (inetDiagInfo - 1)
)

// bound returns the bound sockets of the network namespace of pid: TCP and
// MPTCP listeners and unconnected UDP sockets, by inode, with their
// protocol. It asks sock_diag for those states only, so its cost follows
// the number of listeners, not of connections (reading /proc/net/tcp on a
// busy host means formatting every connection and TIME_WAIT socket).
func bound(pid int) (map[uint64]int, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("network namespace of PID %d: %w", pid, err)
	}
	defer ns.Close()
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket in the network namespace of PID %d: %w", pid, err)
	}
	defer s.Close()
	out := map[uint64]int{}
	for _, q := range []struct {
		proto  int
		states uint32
		opt    bool // the kernel may lack the diag module
	}{
		{unix.IPPROTO_TCP, 1 << tcpListen, false},
		{unix.IPPROTO_UDP, 1 << tcpClose, true},
		{IPPROTO_MPTCP, 1 << tcpListen, true},
	} {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			proto := q.proto
			socks, err := dump(s, diagReq{family: fam, protocol: uint8(proto), states: q.states}, proto)
			if err != nil {
				if q.opt {
					continue
				}
				return nil, err
			}
			for _, d := range socks {
				if _, known := out[d.inode]; d.inode == 0 || known {
					continue // a subflow without a file, or found as TCP already
				}
				out[d.inode] = proto
			}
		}
	}
	return out, nil
}

// dump sends one request and collects the answers. The request's protocol
// is a byte, so MPTCP (262) is asked for with the INET_DIAG_REQ_PROTOCOL
// attribute (Linux >= 5.9); kernels without mptcp_diag answer an error.
func dump(s *nl.NetlinkSocket, r diagReq, proto int) ([]diagSocket, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.AddData(r)
	if proto > 0xff {
		req.AddData(nl.NewRtAttr(4 /* INET_DIAG_REQ_PROTOCOL */, nl.Uint32Attr(uint32(proto))))
	}
	var out []diagSocket
	err := sockdiag.Dump(s, req, func(b []byte) error {
		if d, ok := parseDiag(b); ok {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseDiag decodes struct inet_diag_msg.
func parseDiag(b []byte) (diagSocket, bool) {
	if len(b) < 72 {
		return diagSocket{}, false
	}
	port := binary.BigEndian.Uint16(b[4:6])
	var addr netip.Addr
	switch b[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		return diagSocket{}, false
	}
	d := diagSocket{inode: uint64(binary.NativeEndian.Uint32(b[68:72])), local: netip.AddrPortFrom(addr, port),
		state: b[1], rqueue: binary.NativeEndian.Uint32(b[56:60]),
		wqueue: binary.NativeEndian.Uint32(b[60:64]), dataSegsIn: -1, dataSegsOut: -1}
	// The attributes that follow: struct rtattr {u16 len; u16 type}, 4-aligned.
	for a := b[inetDiagMsgLen:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a[0:2]))
		if l < 4 || l > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:4]) == inetDiagInfo && l >= 4+tcpInfoDataSegsOut+4 {
			info := a[4:l]
			d.dataSegsIn = int64(binary.NativeEndian.Uint32(info[tcpInfoDataSegsIn:]))
			d.dataSegsOut = int64(binary.NativeEndian.Uint32(info[tcpInfoDataSegsOut:]))
			d.lastDataSent = binary.NativeEndian.Uint32(info[tcpInfoLastDataSent:])
			d.lastDataRecv = binary.NativeEndian.Uint32(info[tcpInfoLastDataRecv:])
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return d, true
}
