//go:build linux

package handover

import (
	"context"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/require"
)

func inodeOf(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var ino uint64
	require.NoError(t, raw.Control(func(fd uintptr) {
		var st syscall.Stat_t
		require.NoError(t, syscall.Fstat(int(fd), &st))
		ino = st.Ino
	}))
	return ino
}

func TestBoundFindsListenersOnly(t *testing.T) {
	testutil.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer udp.Close()

	got, err := bound(os.Getpid())
	require.NoError(t, err, "sock_diag must work as root")
	lnIno := inodeOf(t, ln.(*net.TCPListener))
	require.Equal(t, syscall.IPPROTO_TCP, got[lnIno], "got %v; want the TCP listener %d", got, lnIno)
	require.Equal(t, syscall.IPPROTO_UDP, got[inodeOf(t, udp.(*net.UDPConn))])
	_, isConn := got[inodeOf(t, conn.(*net.TCPConn))]
	require.False(t, isConn, "a connection is not a bound socket")
}

func TestFindSocketsMPTCP(t *testing.T) {
	testutil.RequireRoot(t)
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	socks, err := FindSockets(proc.Default, []int{os.Getpid()})
	require.NoError(t, err)
	ino := inodeOf(t, ln.(*net.TCPListener))
	for _, s := range socks {
		if s.Inode == ino {
			if !s.MPTCP() {
				t.Skipf("this kernel gave Go a plain TCP socket for MPTCP (protocol %d)", s.Protocol)
			}
			return
		}
	}
	t.Fatalf("MPTCP listener %d not found in %v", ino, socks)
}

// TestReusePortAndShutdown sets SO_REUSEPORT on another process's listener
// from outside, then stops that listener from outside.
func TestReusePortAndShutdown(t *testing.T) {
	testutil.RequireRoot(t)
	py := testutil.RequireBinary(t, "python3")
	cmd := exec.Command(py, "-c", "import socket,sys,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 16)
	n, err := out.Read(buf)
	require.NoError(t, err)
	require.Greater(t, n, 0)

	socks, err := FindSockets(proc.Default, []int{cmd.Process.Pid})
	require.NoError(t, err)
	require.Len(t, socks, 1)
	s := socks[0]
	require.True(t, s.Listening)
	require.False(t, s.ReusePort)
	require.NoError(t, SetReusePort(s, true))
	again, err := FindSockets(proc.Default, []int{cmd.Process.Pid})
	require.NoError(t, err)
	require.True(t, again[0].ReusePort, "got SO_REUSEPORT off; want on after SetReusePort")
	// A second listener can now bind beside it.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf, 1) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", s.Local.String())
	require.NoError(t, err, "bind beside the original")
	ln.Close()

	require.NoError(t, Shutdown(s))
	after, err := FindSockets(proc.Default, []int{cmd.Process.Pid})
	require.NoError(t, err)
	for _, x := range after {
		require.False(t, x.Listening && x.Inode == s.Inode, "the listener still listens after Shutdown")
	}
}
