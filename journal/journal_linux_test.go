//go:build linux

package journal

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConnect sends a header to a stand-in journald, which sees our
// credentials; the stream carries lines after it and cannot be read from.
func TestConnect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := Connect(path, ServiceHeader("test-clone"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer f.Close()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := c.File()
	cred, err := unix.GetsockoptUcred(int(raw.Fd()), unix.SOL_SOCKET, unix.SO_PEERCRED)
	raw.Close()
	if err != nil || int(cred.Pid) != os.Getpid() {
		t.Errorf("peer credentials: got %+v, %v; want our PID %d", cred, err, os.Getpid())
	}
	if _, err := f.WriteString("hello\n"); err != nil {
		t.Fatalf("write a line: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	h, err := ReadStreamHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if h != ServiceHeader("test-clone") {
		t.Errorf("header: got %+v; want %+v", h, ServiceHeader("test-clone"))
	}
	line, err := r.ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Errorf("first line: got %q, %v; want %q", line, err, "hello\n")
	}
	// Shut down for reading, as systemd leaves a service's stream.
	n, err := f.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Errorf("read from the stream: got %d, %v; want 0, EOF", n, err)
	}
	var tv unix.Timeval
	if err := getTimeval(f, &tv); err != nil || tv.Sec != 0 || tv.Usec != 0 {
		t.Errorf("SO_SNDTIMEO left at %+v (%v); want none", tv, err)
	}
	if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Error("the stream is not close-on-exec")
	}
}

func getTimeval(f *os.File, tv *unix.Timeval) error {
	v, err := unix.GetsockoptTimeval(int(f.Fd()), unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err == nil {
		*tv = *v
	}
	return err
}

func TestConnectNoListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing")
	if f, err := Connect(path, ServiceHeader("x")); err == nil {
		f.Close()
		t.Fatal("got a stream to a path without a listener; want an error")
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}
