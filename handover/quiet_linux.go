//go:build linux

package handover

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpNewSynRecv  = 12
)

// Unsettled counts what a draining server could still fail if it were told
// to stop now: handshakes under way on its ports, connections waiting in
// the accept queues of its listeners,
// and connections it holds (held: socket inodes of its tree) on their ports
// that have unread data, whose peer has sent nothing yet, or that received
// data later than they last sent some (a request not answered yet). Once
// new connections go elsewhere (Steer), this falls to 0 as the server
// answers what it accepted; idle keep-alive connections count as settled.
func Unsettled(pid int, listeners []Socket, held map[uint64]bool) (int, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return 0, fmt.Errorf("network namespace of PID %d: %w", pid, err)
	}
	defer ns.Close()
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_INET_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket in the network namespace of PID %d: %w", pid, err)
	}
	defer s.Close()
	mine, ports := map[uint64]bool{}, map[uint16]bool{}
	for _, l := range listeners {
		mine[l.Inode] = true
		ports[l.Local.Port()] = true
	}
	n := 0
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := dump(s, diagReq{family: fam, protocol: unix.IPPROTO_TCP, ext: diagExtInfo,
			states: 1<<tcpListen | 1<<tcpEstablished | 1<<tcpSynRecv | 1<<tcpNewSynRecv}, unix.IPPROTO_TCP)
		if err != nil {
			return 0, fmt.Errorf("sock_diag in the network namespace of PID %d: %w", pid, err)
		}
		n += unsettled(socks, mine, ports, held)
	}
	return n, nil
}

func unsettled(socks []diagSocket, listeners map[uint64]bool, ports map[uint16]bool, held map[uint64]bool) int {
	n := 0
	for _, d := range socks {
		switch {
		case d.state == tcpListen && listeners[d.inode]:
			n += int(d.rqueue)
		case (d.state == tcpSynRecv || d.state == tcpNewSynRecv) && ports[d.local.Port()]:
			// A handshake begun before the steering ends in the listener
			// that answered the SYN, maybe the original's; which one is not
			// reported, so any on the port waits (they last microseconds).
			n++
		case d.state == tcpEstablished && held[d.inode] && ports[d.local.Port()]:
			// Unread; nothing received yet; a first request not answered;
			// a later one received after the last answer.
			if d.rqueue > 0 || d.dataSegsIn == 0 || d.dataSegsOut == 0 || d.lastDataRecv < d.lastDataSent {
				n++
			}
		}
	}
	return n
}
