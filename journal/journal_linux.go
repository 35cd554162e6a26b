//go:build linux

package journal

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ConnectTimeout bounds the connect and the header write of Connect (a
// journald that does not accept).
const ConnectTimeout = 5 * time.Second

// Connect opens a new stream to the journald listening at path (""
// means DefaultStdoutSocket) and sends h. The stream is shut down for
// reading, as systemd does for a service's stdout, and is blocking with no
// send timeout, as a process expects of its stdout. journald takes the
// stream's identity from the caller's credentials (PID, cgroup) at
// connect time (newer versions from each writer's): call it from a
// process whose identity the lines should carry. The file is
// close-on-exec.
func Connect(path string, h StreamHeader) (*os.File, error) {
	if path == "" {
		path = DefaultStdoutSocket
	}
	hdr, err := h.Marshal()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("journal stream socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "journal-stream:"+path)
	fail := func(what string, err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("journal stream to %s: %s: %w", path, what, err)
	}
	tv := unix.NsecToTimeval(ConnectTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fail("set a send timeout", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail("connect", err)
	}
	for off := 0; off < len(hdr); {
		n, err := unix.Write(fd, hdr[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail("write the header", err)
		}
		off += n
	}
	var zero unix.Timeval
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &zero); err != nil {
		return fail("clear the send timeout", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
		return fail("shut down reading", err)
	}
	return f, nil
}
