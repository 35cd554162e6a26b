//go:build linux

package clone

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/journal"
	"github.com/clonebot/clonebot/nsinit"
	"github.com/clonebot/clonebot/proc"
	"github.com/clonebot/clonebot/unixdiag"
	"golang.org/x/sys/unix"
)

// planStreams finds the tree's unix connections to processes outside it.
// journald streams are returned, to be replaced in the clone; any other is
// refused, naming the holder, the fd, the peer and who holds the peer.
func (m *Manager) planStreams(pid int, tree []ProcInfo) ([]OutsideStream, error) {
	hasSocket := false
	for _, pi := range tree {
		for _, fd := range pi.FDs {
			hasSocket = hasSocket || fd.Kind == proc.FDSocket
		}
	}
	if !hasSocket {
		return nil, nil
	}
	socks, err := unixdiag.Dump(pid)
	if err != nil {
		// A target gone meanwhile is preflight's 404.
		return nil, fault.New(fault.Internal, fmt.Sprintf("list the unix sockets of the network namespace of PID %d", pid),
			"load the unix_diag module (modprobe unix_diag)", err)
	}
	isJournal := m.journalMatcher()
	streams := FindOutsideStreams(tree, socks, isJournal)
	if missingPeers(streams) && !sameNetNS(pid) {
		// A peer in another network namespace: ours (journald's) is the
		// likely one.
		if own, err := unixdiag.Dump(0); err == nil {
			for ino, s := range own {
				if _, ok := socks[ino]; !ok {
					socks[ino] = s
				}
			}
			streams = FindOutsideStreams(tree, socks, isJournal)
		}
	}
	for _, s := range streams {
		if s.Journal {
			continue
		}
		name := ""
		for _, pi := range tree {
			if pi.PID == s.PID {
				name = " (" + pi.Status.Name + ")"
			}
		}
		return nil, refuse(pid, fmt.Sprintf("PID %d%s fd %d is a unix %s connection (socket:[%d]) to %s%s, outside its tree; CRIU cannot copy one end of a connection",
			s.PID, name, s.FD, s.Socket.TypeName(), s.Socket.Inode, s.PeerString(), m.peerHolders(s.Peer.Inode)),
			fmt.Sprintf("close the connection before cloning, or clone the process at the other end with it (one tree); the only such connections clonebot replaces are journald streams (clonebotd --journal-socket, now %s)", m.opts.JournalSocket))
	}
	if len(streams) > 0 {
		var st unix.Stat_t
		if err := unix.Stat(m.opts.JournalSocket, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, refuse(pid, fmt.Sprintf("PID %d fd %d is a journald stream, and the clone needs a new one, but %s is not a socket (%v)", streams[0].PID, streams[0].FD, m.opts.JournalSocket, err),
				"start systemd-journald, or point clonebotd --journal-socket at journald's stdout socket")
		}
	}
	return streams, nil
}

func missingPeers(streams []OutsideStream) bool {
	for _, s := range streams {
		if !s.PeerFound {
			return true
		}
	}
	return false
}

// sameNetNS reports whether pid shares the daemon's network namespace.
func sameNetNS(pid int) bool {
	a, err1 := os.Readlink("/proc/self/ns/net")
	b, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return err1 == nil && err2 == nil && a == b
}

// journalMatcher tells journald's end of a stream: the accepted socket
// carries the listener's path and socket file, compared with the journal
// socket the daemon was given (by path, or by inode when the path differs,
// e.g. through a symlink such as /var/run).
func (m *Manager) journalMatcher() func(unixdiag.Socket) bool {
	want := filepath.Clean(m.opts.JournalSocket)
	var ino uint64
	var st unix.Stat_t
	if err := unix.Stat(want, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		ino = st.Ino
	}
	return func(s unixdiag.Socket) bool {
		if s.Type != unixdiag.Stream {
			return false
		}
		return s.Name == want || (ino != 0 && s.VFSInode == ino)
	}
}

// peerHolders names the processes holding a peer socket, for a refusal.
func (m *Manager) peerHolders(ino uint64) string {
	pids, err := m.opts.Proc.SocketHolders(ino, 3)
	if err != nil || len(pids) == 0 {
		return ""
	}
	var names []string
	for _, p := range pids {
		n := "PID " + strconv.Itoa(p)
		if st, err := m.opts.Proc.Status(p); err == nil {
			n += " (" + st.Name + ")"
		}
		names = append(names, n)
	}
	return ", held by " + strings.Join(names, ", ")
}

// streamInherits makes, for each journald stream of the plan, the new
// stream the clone's init opens in its place, what the record says of
// it, and CRIU's --external specs for the dump.
func (c *making) streamInherits() (inherit []nsinit.InheritSpec, recs []api.Stream, external []string, warnings []string) {
	m, p := c.m, c.p
	unit := ""
	if cg, err := m.opts.Proc.Cgroup(p.pid); err == nil {
		if path, ok := proc.UnifiedPath(cg); ok {
			unit = UnitOf(path)
		}
	}
	for _, s := range p.streams {
		comm, argv0 := "", ""
		for _, pi := range p.tree {
			if pi.PID == s.PID {
				comm = pi.Status.Name
			}
		}
		if args, err := m.opts.Proc.Cmdline(s.PID); err == nil && len(args) > 0 {
			argv0 = args[0]
		}
		ident := JournalIdentifier(argv0, comm, c.id)
		hdr := journal.ServiceHeader(ident)
		inherit = append(inherit, nsinit.InheritSpec{Key: s.Key(), Path: m.opts.JournalSocket, Journal: &hdr})
		external = append(external, s.External())
		where := strings.Join(s.Where, ", ")
		recs = append(recs, api.Stream{Kind: api.StreamJournal, FDs: where, Inode: s.Socket.Inode, Peer: m.opts.JournalSocket,
			Identifier: ident, Unit: unit})
		warnings = append(warnings, fmt.Sprintf("the original's journal stream %s (%s) is a new journal stream in the clone, identifier %s", s.Key(), where, ident))
	}
	return inherit, recs, external, warnings
}

// fillStreamInodes records the clone's new socket for each replaced
// stream: the clone process that has the original holder's PID in its
// namespace, on the same fd.
func fillStreamInodes(pfs proc.FS, cloneTree []int, streams []api.Stream, plan []OutsideStream) error {
	if len(streams) == 0 {
		return nil
	}
	byNS := map[int]int{}
	for _, h := range cloneTree {
		if st, err := pfs.Status(h); err == nil && len(st.NSpid) > 0 {
			byNS[st.NSpid[len(st.NSpid)-1]] = h
		}
	}
	var errs []error
	for i := range streams {
		if i >= len(plan) {
			break
		}
		host, ok := byNS[plan[i].PID]
		if !ok {
			errs = append(errs, fmt.Errorf("no process of the clone has PID %d in its namespace", plan[i].PID))
			continue
		}
		fds, err := pfs.FDs(host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, fd := range fds {
			if fd.Num == plan[i].FD && fd.Kind == proc.FDSocket {
				streams[i].CloneInode = fd.Inode
			}
		}
		if streams[i].CloneInode == 0 {
			errs = append(errs, fmt.Errorf("the clone (PID %d) has no socket on fd %d", host, plan[i].FD))
		}
	}
	return errors.Join(errs...)
}
