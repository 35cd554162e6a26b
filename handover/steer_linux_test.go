//go:build linux

package handover

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// reusePortListeners opens n TCP listeners on one loopback port, all with
// SO_REUSEPORT, and returns them with their Sockets.
func reusePortListeners(t *testing.T, n int) ([]*net.TCPListener, []Socket) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
	}}
	lc.SetMultipathTCP(false)
	addr := "127.0.0.1:0"
	var lns []*net.TCPListener
	for i := 0; i < n; i++ {
		ln, err := lc.Listen(context.Background(), "tcp4", addr)
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		addr = ln.Addr().String()
		lns = append(lns, ln.(*net.TCPListener))
	}
	all, err := FindSockets(proc.Default, []int{os.Getpid()})
	require.NoError(t, err)
	var socks []Socket
	for _, ln := range lns {
		ino := inodeOf(t, ln)
		for _, s := range all {
			if s.Inode == ino {
				socks = append(socks, s)
			}
		}
	}
	require.Len(t, socks, n)
	return lns, socks
}

// queued reports how many connections wait in ln's accept queue, and
// accepts (and closes) them.
func queued(t *testing.T, ln *net.TCPListener) int {
	t.Helper()
	n := 0
	for {
		require.NoError(t, ln.SetDeadline(time.Now().Add(20*time.Millisecond)))
		c, err := ln.Accept()
		if err != nil {
			return n
		}
		c.Close()
		n++
	}
}

func dialN(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", addr)
		require.NoError(t, err)
		c.Close()
	}
}

func TestSteerSendsEveryConnectionToTheReplacement(t *testing.T) {
	testutil.RequireRoot(t)
	lns, socks := reusePortListeners(t, 3)
	addr := lns[0].Addr().String()
	// The original is lns[0]; the replacement holds lns[1] and lns[2].
	require.NoError(t, Steer(socks[1:]))
	dialN(t, addr, 60)
	time.Sleep(50 * time.Millisecond)
	a, b, c := queued(t, lns[0]), queued(t, lns[1]), queued(t, lns[2])
	require.Zero(t, a, "the original got connections while steered away")
	require.Equal(t, 60, b+c)
	require.NotZero(t, b, "the replacement's first socket got nothing: the hash should spread")
	require.NotZero(t, c, "the replacement's second socket got nothing: the hash should spread")

	// Once a replacement socket closes, the kernel's hash picks again for
	// the connections the program sent to it; nothing is lost.
	lns[1].Close()
	dialN(t, addr, 40)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 40, queued(t, lns[0])+queued(t, lns[2]))

	require.NoError(t, Unsteer(socks[2:]))
	require.NoError(t, Unsteer(socks[2:]), "a group without a program is not an error")
	dialN(t, addr, 60)
	time.Sleep(50 * time.Millisecond)
	a, c = queued(t, lns[0]), queued(t, lns[2])
	require.Equal(t, 60, a+c)
	require.NotZero(t, a, "the original gets connections again after Unsteer")
}

func TestSteerRefusesWhatItCannotSteer(t *testing.T) {
	require.Error(t, Steer(nil))
	require.Error(t, Steer([]Socket{{Local: mustAddrPort("127.0.0.1:1")}}), "not a listener")
}

func TestUnsettled(t *testing.T) {
	testutil.RequireRoot(t)
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	all, err := FindSockets(proc.Default, []int{os.Getpid()})
	require.NoError(t, err)
	var l []Socket
	for _, s := range all {
		if s.Inode == inodeOf(t, ln.(*net.TCPListener)) {
			l = append(l, s)
		}
	}
	require.Len(t, l, 1)
	count := func(held map[uint64]bool) int {
		n, err := Unsettled(os.Getpid(), l, held)
		require.NoError(t, err)
		return n
	}
	require.Zero(t, count(nil))

	client, err := net.Dial("tcp4", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	require.Eventually(t, func() bool { return count(nil) == 1 }, 2*time.Second, 5*time.Millisecond,
		"a connection waiting in the accept queue is unsettled")
	srv, err := ln.Accept()
	require.NoError(t, err)
	defer srv.Close()
	held := map[uint64]bool{inodeOf(t, srv.(*net.TCPConn)): true}
	require.Equal(t, 1, count(held), "an accepted connection whose peer sent nothing yet is unsettled")
	_, err = client.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return count(held) == 1 }, 2*time.Second, 5*time.Millisecond)
	buf := make([]byte, 64)
	_, err = srv.Read(buf)
	require.NoError(t, err)
	require.Equal(t, 1, count(held), "a request read but not answered is unsettled")
	_, err = srv.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	require.NoError(t, err)
	require.Zero(t, count(held), "an answered connection, idle, is settled")
	require.Zero(t, count(nil), "connections the server does not hold are not its concern")
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestSiblingSteeredTo opens a sibling of another user's listener, as an
// upgrade does, and steers every new connection to it.
func TestSiblingSteeredTo(t *testing.T) {
	testutil.RequireRoot(t)
	// Debian's, not a shim under /root that nobody may not run.
	py := testutil.RequireBinary(t, "/usr/bin/python3")
	cmd := exec.Command(py, "-c", "import socket,sys,time\ns=socket.socket(socket.AF_INET6); s.bind(('::1',0)); s.listen(77)\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 16)
	_, err = out.Read(buf)
	require.NoError(t, err)
	socks, err := FindSockets(proc.Default, []int{cmd.Process.Pid})
	require.NoError(t, err)
	require.Len(t, socks, 1)
	orig := socks[0]

	_, err = Sibling(orig)
	require.Error(t, err, "a listener without SO_REUSEPORT has no group to join")
	require.NoError(t, SetReusePort(orig, true))
	f, err := Sibling(orig)
	require.NoError(t, err)
	defer f.Close()
	var st syscall.Stat_t
	require.NoError(t, syscall.Fstat(int(f.Fd()), &st))
	require.EqualValues(t, 65534, st.Uid, "the sibling belongs to the original's owner")
	ln, err := net.FileListener(f)
	require.NoError(t, err)
	defer ln.Close()
	require.Equal(t, orig.Local.String(), ln.Addr().String())

	mine, err := FindSockets(proc.Default, []int{os.Getpid()})
	require.NoError(t, err)
	var sib []Socket
	for _, s := range mine {
		if s.Inode == st.Ino {
			sib = append(sib, s)
		}
	}
	require.Len(t, sib, 1)
	require.NoError(t, Steer(sib))
	defer func() { require.NoError(t, Unsteer(sib)) }()
	dialN6(t, orig.Local.String(), 30)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 30, queued(t, ln.(*net.TCPListener)), "every connection reaches the sibling")
	n, err := Unsettled(cmd.Process.Pid, socks, nil)
	require.NoError(t, err)
	require.Zero(t, n, "nothing waits in the original's accept queue")
}

func dialN6(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp6", addr)
		require.NoError(t, err)
		c.Close()
	}
}
