//go:build linux

package handover

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"

	"github.com/clonebot/clonebot/proc"
	"golang.org/x/sys/unix"
)

// FindSockets returns the bound inet sockets (TCP listeners, MPTCP sockets,
// bound UDP sockets) held by pids, one entry per socket inode, sorted by
// inode. sock_diag names the bound sockets of the tree's network namespace
// (its cost follows the number of listeners, not of connections); each fd
// of the tree that holds one is duplicated with pidfd_getfd to read its
// options. Where sock_diag is unavailable, every socket fd not known from
// /proc/PID/net/tcp{,6} as a connection is inspected instead.
func FindSockets(fs proc.FS, pids []int) ([]Socket, error) {
	if len(pids) == 0 {
		return nil, nil
	}
	interesting, err := bound(pids[0])
	if err != nil {
		interesting = nil // fall back to the fd-by-fd look below
	}
	skip := map[uint64]bool{}
	if interesting == nil {
		if table, err := fs.NetTCP(pids[0]); err == nil {
			for _, s := range table {
				if s.State != proc.TCPListen {
					skip[s.Inode] = true
				}
			}
		}
	}
	byInode := map[uint64]*Socket{}
	for _, pid := range pids {
		fds, err := fs.FDs(pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // exited meanwhile
			}
			return nil, fmt.Errorf("list fds of PID %d: %w", pid, err)
		}
		var pidfd = -1
		for _, fd := range fds {
			if fd.Kind != proc.FDSocket || skip[fd.Inode] {
				continue
			}
			if _, ok := interesting[fd.Inode]; interesting != nil && !ok {
				continue
			}
			if s, ok := byInode[fd.Inode]; ok {
				s.Holders++
				continue
			}
			if pidfd < 0 {
				pidfd, err = unix.PidfdOpen(pid, 0)
				if err != nil {
					if errors.Is(err, unix.ESRCH) {
						break
					}
					return nil, fmt.Errorf("pidfd_open PID %d: %w", pid, err)
				}
			}
			s, err := inspect(pidfd, pid, fd.Num)
			if err != nil {
				if errors.Is(err, unix.EBADF) {
					continue // closed meanwhile
				}
				unix.Close(pidfd)
				return nil, err
			}
			if s == nil {
				skip[fd.Inode] = true
				continue
			}
			s.Inode = fd.Inode
			s.Holders = 1
			byInode[fd.Inode] = s
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}
	out := make([]Socket, 0, len(byInode))
	for _, s := range byInode {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Inode < out[j].Inode })
	return out, nil
}

// inspect duplicates fd of pid and reads what a clone needs to know; nil for
// sockets a clone does not rebind (unix, netlink, connected or unbound inet).
func inspect(pidfd, pid, fd int) (*Socket, error) {
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd fd %d of PID %d: %w", fd, pid, err)
	}
	defer unix.Close(dup)
	family, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, nil // not a socket we understand
	}
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, nil
	}
	typ, _ := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_TYPE)
	protocol, _ := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	acc, _ := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	rp, _ := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	sa, err := unix.Getsockname(dup)
	if err != nil {
		return nil, nil
	}
	local := addrPort(sa)
	if local.Port() == 0 {
		return nil, nil // unbound
	}
	s := &Socket{PID: pid, FD: fd, Family: family, Type: typ, Protocol: protocol,
		Listening: acc == 1, ReusePort: rp == 1, Local: local}
	if typ == unix.SOCK_STREAM && !s.Listening && !s.MPTCP() {
		return nil, nil // a connection
	}
	if _, err := unix.Getpeername(dup); err == nil && typ == unix.SOCK_DGRAM {
		return nil, nil // connected UDP: a client, bound to an ephemeral port
	}
	return s, nil
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// dupSocket returns a duplicate of s's fd in its holder.
func dupSocket(s Socket) (int, error) {
	pidfd, err := unix.PidfdOpen(s.PID, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open PID %d: %w", s.PID, err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, s.FD, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd fd %d of PID %d: %w", s.FD, s.PID, err)
	}
	// The fd number may have been reused since FindSockets: check the inode.
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil || st.Ino != s.Inode {
		unix.Close(dup)
		return -1, fmt.Errorf("fd %d of PID %d is no longer socket inode %d", s.FD, s.PID, s.Inode)
	}
	return dup, nil
}

// SetReusePort sets SO_REUSEPORT to on for the target's socket s, through a
// duplicate, and reads it back.
func SetReusePort(s Socket, on bool) error {
	dup, err := dupSocket(s)
	if err != nil {
		return err
	}
	defer unix.Close(dup)
	v := 0
	if on {
		v = 1
	}
	if err := unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_REUSEPORT, v); err != nil {
		return fmt.Errorf("set SO_REUSEPORT=%d on %s: %w", v, s, err)
	}
	got, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	if err != nil {
		return fmt.Errorf("read back SO_REUSEPORT on %s: %w", s, err)
	}
	if got != v {
		return fmt.Errorf("SO_REUSEPORT on %s: wrote %d, read back %d", s, v, got)
	}
	return nil
}

// Shutdown stops the target's listener s from outside (shutdown(2) on a
// duplicate): it leaves the listen state, so no new connection reaches it,
// and with net.ipv4.tcp_migrate_req=1 the connections queued in it move to
// another listener of its SO_REUSEPORT group. It reads back SO_ACCEPTCONN.
func Shutdown(s Socket) error {
	dup, err := dupSocket(s)
	if err != nil {
		return err
	}
	defer unix.Close(dup)
	if err := unix.Shutdown(dup, unix.SHUT_RD); err != nil && !errors.Is(err, unix.ENOTCONN) {
		return fmt.Errorf("shutdown %s: %w", s, err)
	}
	if acc, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && acc != 0 {
		return fmt.Errorf("%s still listens after shutdown", s)
	}
	return nil
}

// Dup returns a duplicate of the target's socket s (close-on-exec), checked
// to still be the same socket.
func Dup(s Socket) (*os.File, error) {
	fd, err := dupSocket(s)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "socket:"+s.Local.String()), nil
}
