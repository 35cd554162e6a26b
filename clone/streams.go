package clone

import (
	"fmt"
	"path"
	"strings"

	"github.com/clonebot/clonebot/proc"
	"github.com/clonebot/clonebot/unixdiag"
)

// OutsideStream is a connected unix stream or seqpacket socket of the
// target tree whose peer no process of the tree holds. CRIU cannot dump
// one end of such a connection; a journald stream (Journal) can be
// replaced in the clone by a new one, anything else is refused.
type OutsideStream struct {
	Socket unixdiag.Socket
	// Peer is the other end as sock_diag reports it; when it was not found
	// (PeerFound false) only Peer.Inode is set.
	Peer      unixdiag.Socket
	PeerFound bool
	// PID and FD are its first holder in tree order; Where names every
	// holder ("PID 12 fd 1").
	PID, FD int
	Where   []string
	// Journal is true when the peer is journald's stdout socket.
	Journal bool
}

// Key is CRIU's name for the tree's end of the connection, for
// --inherit-fd.
func (o OutsideStream) Key() string { return fmt.Sprintf("socket:[%d]", o.Socket.Inode) }

// External is CRIU's --external spec that lets it dump the tree's end
// without its peer.
func (o OutsideStream) External() string { return fmt.Sprintf("unix[%d]", o.Socket.Inode) }

// PeerString describes the other end: its address and inode.
func (o OutsideStream) PeerString() string {
	switch {
	case !o.PeerFound:
		return fmt.Sprintf("socket:[%d], which sock_diag does not list (another network namespace?)", o.Peer.Inode)
	case o.Peer.Name == "":
		return fmt.Sprintf("an unnamed socket (socket:[%d], one end of a socketpair?)", o.Peer.Inode)
	}
	return fmt.Sprintf("%s (socket:[%d])", o.Peer.Name, o.Peer.Inode)
}

// FindOutsideStreams returns, in the order the tree holds them (process,
// then fd number), the connected unix stream and seqpacket sockets of the
// tree whose peer no fd of the tree refers to. socks are the unix sockets
// sock_diag lists (the tree's network namespace, and the one a peer may
// live in); isJournal tells whether a peer is journald's stdout socket.
// Sockets sock_diag does not list are left out: they are not unix ones.
func FindOutsideStreams(tree []ProcInfo, socks map[uint64]unixdiag.Socket, isJournal func(unixdiag.Socket) bool) []OutsideStream {
	held := map[uint64]bool{}
	for _, p := range tree {
		for _, fd := range p.FDs {
			if fd.Kind == proc.FDSocket {
				held[fd.Inode] = true
			}
		}
	}
	var out []OutsideStream
	index := map[uint64]int{}
	for _, p := range tree {
		for _, fd := range p.FDs {
			if fd.Kind != proc.FDSocket {
				continue
			}
			where := fmt.Sprintf("PID %d fd %d", p.PID, fd.Num)
			if i, ok := index[fd.Inode]; ok {
				out[i].Where = append(out[i].Where, where)
				continue
			}
			s, ok := socks[fd.Inode]
			if !ok || !s.Connected() || held[s.Peer] {
				continue
			}
			o := OutsideStream{Socket: s, PID: p.PID, FD: fd.Num, Where: []string{where}}
			o.Peer, o.PeerFound = socks[s.Peer]
			if !o.PeerFound {
				o.Peer = unixdiag.Socket{Inode: s.Peer}
			}
			o.Journal = o.PeerFound && isJournal != nil && isJournal(o.Peer)
			index[fd.Inode] = len(out)
			out = append(out, o)
		}
	}
	return out
}

// UnitOf returns the systemd unit a cgroup v2 path belongs to, as systemd
// names it: the first component below the slices ("/system.slice/
// web.service/sub" is web.service), or "" when there is none.
func UnitOf(cgroupPath string) string {
	for _, c := range strings.Split(strings.Trim(cgroupPath, "/"), "/") {
		if strings.HasSuffix(c, ".slice") {
			continue
		}
		for _, suf := range []string{".service", ".scope", ".socket", ".mount", ".swap"} {
			if strings.HasSuffix(c, suf) && len(c) > len(suf) {
				return c
			}
		}
		return ""
	}
	return ""
}

// JournalIdentifier is the SYSLOG_IDENTIFIER of a clone's journal stream:
// the program's name as systemd would use it (the base name of argv[0],
// else comm), with the clone's ID, so that `journalctl -t` tells the
// copies apart.
func JournalIdentifier(argv0, comm, cloneID string) string {
	base := path.Base(argv0)
	if argv0 == "" || base == "." || base == "/" {
		base = comm
	}
	base = strings.Map(func(r rune) rune {
		if r == '\n' || r == 0 || r == ' ' {
			return '_'
		}
		return r
	}, base)
	if base == "" {
		base = "clone"
	}
	return base + "-clone-" + cloneID
}
