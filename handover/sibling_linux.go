//go:build linux

package handover

import (
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sibling opens a new TCP listener where the target's listener s listens,
// in s's SO_REUSEPORT group: in s's network namespace, owned by s's owner
// (the group admits only sockets of one uid), with s's SO_REUSEADDR,
// IPV6_V6ONLY and backlog. s must have SO_REUSEPORT (SetReusePort).
//
// An upgrade hands the new process a sibling rather than s itself: the two
// then are distinct sockets of one group, and new connections can be sent
// to the new process alone (Steer) before the original is told to drain.
// With net.ipv4.tcp_migrate_req=1 the connections still queued in s when
// the original closes it move to the sibling.
func Sibling(s Socket) (*os.File, error) {
	if !s.Listening || s.MPTCP() {
		return nil, fmt.Errorf("sibling: %s is not a TCP listener", s)
	}
	dup, err := dupSocket(s)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dup)
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", s, err)
	}
	if rp, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || rp == 0 {
		return nil, fmt.Errorf("sibling of %s: it has no SO_REUSEPORT", s)
	}
	reuseAddr, _ := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_REUSEADDR)
	v6only := -1
	if s.Family == unix.AF_INET6 {
		v6only, _ = unix.GetsockoptInt(dup, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	}
	ns, err := netns.GetFromPid(s.PID)
	if err != nil {
		return nil, fmt.Errorf("network namespace of PID %d: %w", s.PID, err)
	}
	defer ns.Close()
	backlog := listenBacklog(ns, s)

	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread takes the target's network namespace and fsuid and
		// is never handed back: Go ends it with this goroutine.
		runtime.LockOSThread()
		fd, err := openSibling(ns, int(st.Uid), s, reuseAddr, v6only, backlog)
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("open a listener beside %s: %w", s, r.err)
	}
	return os.NewFile(uintptr(r.fd), "socket:"+s.Local.String()), nil
}

func openSibling(ns netns.NsHandle, uid int, s Socket, reuseAddr, v6only, backlog int) (int, error) {
	self, err := netns.Get()
	if err != nil {
		return -1, err
	}
	same := self.Equal(ns)
	self.Close()
	if !same {
		if err := netns.Set(ns); err != nil {
			return -1, fmt.Errorf("enter the network namespace: %w", err)
		}
	}
	unix.Setfsuid(uid)
	fd, err := unix.Socket(s.Family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	err = func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, reuseAddr); err != nil {
			return err
		}
		var sa unix.Sockaddr
		if s.Family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
				return err
			}
			sa = &unix.SockaddrInet6{Port: int(s.Local.Port()), Addr: s.Local.Addr().As16()}
		} else {
			sa = &unix.SockaddrInet4{Port: int(s.Local.Port()), Addr: s.Local.Addr().As4()}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind (SO_REUSEPORT, uid %d): %w", uid, err)
		}
		return unix.Listen(fd, backlog)
	}()
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// listenBacklog is the backlog s was given (sock_diag reports a listener's
// sk_max_ack_backlog as its write queue), or SOMAXCONN.
func listenBacklog(ns netns.NsHandle, s Socket) int {
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_INET_DIAG)
	if err != nil {
		return unix.SOMAXCONN
	}
	defer sock.Close()
	socks, err := dump(sock, diagReq{family: uint8(s.Family), protocol: unix.IPPROTO_TCP, states: 1 << tcpListen}, unix.IPPROTO_TCP)
	if err != nil {
		return unix.SOMAXCONN
	}
	for _, d := range socks {
		if d.inode == s.Inode && d.wqueue > 0 {
			return int(d.wqueue)
		}
	}
	return unix.SOMAXCONN
}
