//go:build linux

package unixdiag

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func inodeOf(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// TestDumpLive connects to a listener of our own and finds both ends of the
// connection, each naming the other as its peer, the accepted end carrying
// the listener's path and socket file.
func TestDumpLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	ci, si := inodeOf(t, client), inodeOf(t, server)

	socks, err := Dump(0)
	if err != nil {
		t.Fatalf("Dump(0): %v", err)
	}
	c, ok := socks[ci]
	if !ok {
		t.Fatalf("client inode %d not in the dump of %d sockets", ci, len(socks))
	}
	if c.Type != Stream || c.State != Established || c.Peer != si || c.Name != "" {
		t.Errorf("client: got %+v; want an unnamed established stream with peer %d", c, si)
	}
	s := socks[si]
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Peer != ci || s.Name != path || s.VFSInode != fi.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("accepted end: got %+v; want peer %d, name %s, VFS inode %d", s, ci, path, fi.Sys().(*syscall.Stat_t).Ino)
	}

	// The same through our PID: our own network namespace.
	socks2, err := Dump(os.Getpid())
	if err != nil {
		t.Fatalf("Dump(own PID): %v", err)
	}
	if socks2[ci].Peer != si {
		t.Errorf("Dump(own PID): client got %+v; want peer %d", socks2[ci], si)
	}
}
