package clone

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/clonebot/clonebot/proc"
	"github.com/clonebot/clonebot/unixdiag"
)

func sockFD(num int, ino uint64) proc.FD {
	return proc.ClassifyFD(num, "socket:["+strconv.FormatUint(ino, 10)+"]")
}

func TestFindOutsideStreams(t *testing.T) {
	const journal = "/run/systemd/journal/stdout"
	socks := map[uint64]unixdiag.Socket{
		// The service's journal stream, on fds 1 and 2, and journald's end.
		100: {Inode: 100, Type: unixdiag.Stream, State: unixdiag.Established, Peer: 101},
		101: {Inode: 101, Type: unixdiag.Stream, State: unixdiag.Established, Name: journal, Peer: 100},
		// A connection to a database outside.
		200: {Inode: 200, Type: unixdiag.Stream, State: unixdiag.Established, Peer: 201},
		201: {Inode: 201, Type: unixdiag.Stream, State: unixdiag.Established, Name: "/run/pg.sock", Peer: 200},
		// A socketpair between the parent and its child: inside.
		300: {Inode: 300, Type: unixdiag.Stream, State: unixdiag.Established, Peer: 301},
		301: {Inode: 301, Type: unixdiag.Stream, State: unixdiag.Established, Peer: 300},
		// A listener and a datagram socket to syslog: not connections.
		400: {Inode: 400, Type: unixdiag.Stream, State: unixdiag.Listen, Name: "/run/app.sock"},
		500: {Inode: 500, Type: unixdiag.Dgram, State: unixdiag.Established, Peer: 501},
		// A seqpacket connection whose peer sock_diag does not list.
		600: {Inode: 600, Type: unixdiag.SeqPacket, State: unixdiag.Established, Peer: 601},
	}
	tree := []ProcInfo{
		{PID: 10, FDs: []proc.FD{proc.ClassifyFD(0, "/dev/null"), sockFD(1, 100), sockFD(2, 100), sockFD(3, 200), sockFD(4, 300), sockFD(5, 400), sockFD(6, 500), sockFD(7, 600), sockFD(8, 9999)}},
		{PID: 11, FDs: []proc.FD{sockFD(1, 100), sockFD(3, 301)}},
	}
	got := FindOutsideStreams(tree, socks, func(s unixdiag.Socket) bool { return s.Name == journal })
	want := []OutsideStream{
		{Socket: socks[100], Peer: socks[101], PeerFound: true, PID: 10, FD: 1, Where: []string{"PID 10 fd 1", "PID 10 fd 2", "PID 11 fd 1"}, Journal: true},
		{Socket: socks[200], Peer: socks[201], PeerFound: true, PID: 10, FD: 3, Where: []string{"PID 10 fd 3"}},
		{Socket: socks[600], Peer: unixdiag.Socket{Inode: 601}, PID: 10, FD: 7, Where: []string{"PID 10 fd 7"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
	if k, e := got[0].Key(), got[0].External(); k != "socket:[100]" || e != "unix[100]" {
		t.Errorf("Key, External: got %s, %s; want socket:[100], unix[100]", k, e)
	}
	for i, w := range []string{
		"/run/systemd/journal/stdout (socket:[101])",
		"/run/pg.sock (socket:[201])",
		"socket:[601], which sock_diag does not list (another network namespace?)",
	} {
		if s := got[i].PeerString(); s != w {
			t.Errorf("PeerString %d: got %q; want %q", i, s, w)
		}
	}
	unnamed := OutsideStream{Peer: unixdiag.Socket{Inode: 7}, PeerFound: true}
	if s := unnamed.PeerString(); s != "an unnamed socket (socket:[7], one end of a socketpair?)" {
		t.Errorf("PeerString of an unnamed peer: got %q", s)
	}
	if got := FindOutsideStreams(tree[1:], socks, nil); len(got) != 2 || got[0].Journal || got[1].Socket.Inode != 301 {
		t.Errorf("the child alone (its socketpair's other end outside, no journal matcher): got %+v", got)
	}
}

func TestUnitOf(t *testing.T) {
	for in, want := range map[string]string{
		"/system.slice/web.service":                           "web.service",
		"/system.slice/web.service/worker":                    "web.service",
		"/user.slice/user-0.slice/session-3.scope":            "session-3.scope",
		"/system.slice/system-getty.slice/getty@tty1.service": "getty@tty1.service",
		"/clonebot.slice/0123456789ab":                        "",
		"/":                                                   "",
		"":                                                    "",
		"/.service":                                           "",
	} {
		if got := UnitOf(in); got != want {
			t.Errorf("UnitOf(%q): got %q; want %q", in, got, want)
		}
	}
}

func TestJournalIdentifier(t *testing.T) {
	for _, tc := range []struct{ argv0, comm, want string }{
		{"/usr/local/bin/goserver", "goserver", "goserver-clone-0123456789ab"},
		{"/usr/bin/python3", "python3", "python3-clone-0123456789ab"},
		{"", "nginx", "nginx-clone-0123456789ab"},
		{"nginx: master process", "nginx", "nginx:_master_process-clone-0123456789ab"},
		{"/", "", "clone-clone-0123456789ab"},
	} {
		if got := JournalIdentifier(tc.argv0, tc.comm, "0123456789ab"); got != tc.want {
			t.Errorf("JournalIdentifier(%q, %q): got %q; want %q", tc.argv0, tc.comm, got, tc.want)
		}
	}
}
