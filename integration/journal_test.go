//go:build linux

package integration

// A target whose stdout and stderr are journald streams, against a
// stand-in journald (this host has no systemd): clonebotd --journal-socket
// points at it. The systemd guest runs the same with the real journald
// (TestVMCloneJournaldService).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	sdjournal "github.com/clonebot/clonebot/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fakeJournald accepts journal streams at path and keeps, per connection in
// accept order, the header, the connecting PID and the lines.
type fakeJournald struct {
	path string
	ln   *net.UnixListener
	mu   sync.Mutex
	cond *sync.Cond
	// conns in accept order.
	conns []*journalConn
}

type journalConn struct {
	pid    int // SO_PEERCRED at connect
	header sdjournal.StreamHeader
	err    error
	lines  []string
}

func startFakeJournald(t *testing.T) *fakeJournald {
	t.Helper()
	// A short path: sun_path holds 108 bytes, t.TempDir() may be long.
	dir, err := os.MkdirTemp("", "cbj-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	j := &fakeJournald{path: filepath.Join(dir, "stdout")}
	j.cond = sync.NewCond(&j.mu)
	j.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: j.path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { j.ln.Close() })
	go func() {
		for {
			c, err := j.ln.AcceptUnix()
			if err != nil {
				return
			}
			jc := &journalConn{}
			if raw, err := c.File(); err == nil {
				if cred, err := unix.GetsockoptUcred(int(raw.Fd()), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					jc.pid = int(cred.Pid)
				}
				raw.Close()
			}
			j.mu.Lock()
			j.conns = append(j.conns, jc)
			j.mu.Unlock()
			go j.serve(c, jc)
		}
	}()
	return j
}

func (j *fakeJournald) serve(c *net.UnixConn, jc *journalConn) {
	defer c.Close()
	r := bufio.NewReader(c)
	h, err := sdjournal.ReadStreamHeader(r)
	j.mu.Lock()
	jc.header, jc.err = h, err
	j.cond.Broadcast()
	j.mu.Unlock()
	if err != nil {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			j.mu.Lock()
			jc.lines = append(jc.lines, strings.TrimSuffix(line, "\n"))
			j.cond.Broadcast()
			j.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// snapshot copies the connections as they are now.
func (j *fakeJournald) snapshot() []journalConn {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]journalConn, len(j.conns))
	for i, c := range j.conns {
		out[i] = *c
		out[i].lines = append([]string(nil), c.lines...)
	}
	return out
}

// waitFor polls until ok holds for the connections, or fails after 20s.
func (j *fakeJournald) waitFor(t *testing.T, what string, ok func([]journalConn) bool) []journalConn {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := j.snapshot()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stand-in journald: %s did not happen within 20s; connections: %+v", what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasLine(c journalConn, sub string) bool {
	for _, l := range c.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// startWithStream starts argv in its own session with stdout and stderr on
// one journal stream to path, opened as systemd opens a service's, and
// stdin on /dev/null.
func startWithStream(t *testing.T, path, ident string, argv ...string) *target {
	t.Helper()
	stream, err := sdjournal.Connect(path, sdjournal.ServiceHeader(ident))
	require.NoError(t, err)
	defer stream.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stream, stream
	cmd.Env = os.Environ()
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	return watchTarget(t, cmd)
}

func socketInode(t *testing.T, pid, fd int) uint64 {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	require.NoError(t, err)
	var ino uint64
	_, err = fmt.Sscanf(l, "socket:[%d]", &ino)
	require.NoError(t, err, "fd %d of PID %d is %s; want a socket", fd, pid, l)
	return ino
}

// TestCloneJournalStream: a Go server whose stdout and stderr are one
// journal stream. Its clone gets a new stream of its own, opened from the
// clone's cgroup (journald files lines by the connecting process) with a
// header naming the clone; the original keeps logging to its stream, the
// clone's lines arrive only on the new one, and the clone serves.
func TestCloneJournalStream(t *testing.T) {
	fj := startFakeJournald(t)
	d := startDaemon(t, "--journal-socket", fj.path)
	pf := filepath.Join(t.TempDir(), "addr")
	srv := startWithStream(t, fj.path, "goserver", bins.goserver, "-port-file", pf, "-log-requests")
	srv.addr = waitFile(t, pf)
	base := "http://" + srv.addr
	origIno := socketInode(t, srv.pid, 1)
	require.Equal(t, origIno, socketInode(t, srv.pid, 2), "stdout and stderr share one stream, as systemd gives them")
	code, _ := get(t, base+"/before-clone")
	require.Equal(t, 200, code)
	fj.waitFor(t, "the original's request line", func(cs []journalConn) bool { return len(cs) == 1 && hasLine(cs[0], "request /before-clone") })

	rec := d.clone(t, api.CloneRequest{PID: srv.pid, Name: "journald"})
	checkClone(t, d, srv.pid, rec)
	t.Logf("record: streams %+v warnings %q", rec.Streams, rec.Warnings)
	require.Len(t, rec.Streams, 1, "stdout and stderr share one socket: one new stream")
	s := rec.Streams[0]
	assert.Equal(t, api.StreamJournal, s.Kind)
	assert.Equal(t, origIno, s.Inode)
	assert.Equal(t, fmt.Sprintf("PID %d fd 1, PID %d fd 2", srv.pid, srv.pid), s.FDs)
	assert.Equal(t, fj.path, s.Peer)
	assert.Equal(t, "goserver-clone-"+rec.ID, s.Identifier)

	// The clone's fds 1 and 2: one new socket, not the original's.
	cloneIno := socketInode(t, rec.PID, 1)
	assert.Equal(t, cloneIno, socketInode(t, rec.PID, 2), "the clone's stdout and stderr share its new stream")
	assert.NotEqual(t, origIno, cloneIno, "the clone must not write to the original's stream")
	assert.Equal(t, cloneIno, s.CloneInode, "the record names the clone's new socket")
	assert.Equal(t, origIno, socketInode(t, srv.pid, 1), "the original keeps its stream")

	// A second connection, with a header naming the clone, opened by the
	// clone's init: its cgroup is the clone's.
	cs := fj.waitFor(t, "a second stream", func(cs []journalConn) bool { return len(cs) == 2 && cs[1].err == nil && cs[1].header.Identifier != "" })
	require.NoError(t, cs[1].err)
	assert.Equal(t, sdjournal.ServiceHeader("goserver-clone-"+rec.ID), cs[1].header)
	assert.Equal(t, "goserver", cs[0].header.Identifier)
	assert.Equal(t, rec.InitPID, cs[1].pid, "the clone's init opens its stream")
	assert.Equal(t, rec.Cgroup, unifiedCgroup(t, rec.InitPID), "journald would file the stream under the clone's cgroup")

	// Both copies serve and log, each to its own stream.
	origNS, cloneNS := nsOf(t, srv.pid, "pid"), nsOf(t, rec.PID, "pid")
	seen := map[string][]string{}
	for i := 0; i < 400 && (len(seen[origNS]) == 0 || len(seen[cloneNS]) == 0); i++ {
		path := fmt.Sprintf("/whoami?n=%d", i)
		code, body := get(t, base+path)
		require.Equal(t, 200, code)
		ns := strings.Fields(body)[0]
		seen[ns] = append(seen[ns], path)
	}
	require.NotEmpty(t, seen[origNS], "the original answered no request")
	require.NotEmpty(t, seen[cloneNS], "the clone answered no request")
	want := len(seen[origNS]) + len(seen[cloneNS])
	cs = fj.waitFor(t, "a line per request", func(cs []journalConn) bool {
		n := 0
		for _, c := range cs {
			for _, l := range c.lines {
				if strings.Contains(l, "request /whoami?n=") {
					n++
				}
			}
		}
		return n >= want
	})
	require.Len(t, cs, 2, "no stream other than the original's and the clone's")
	for ns, paths := range seen {
		conn, other := cs[0], cs[1]
		if ns == cloneNS {
			conn, other = cs[1], cs[0]
		}
		for _, p := range paths {
			assert.True(t, hasLine(conn, "request "+p+" "+ns), "%s answered by %s: its line must be on its own stream", p, ns)
			assert.False(t, hasLine(other, "request "+p+" "), "%s answered by %s: its line must not be on the other stream", p, ns)
		}
	}
	assert.False(t, hasLine(cs[1], "request /before-clone"), "the clone's stream carries only what the clone wrote")

	// Removing the clone leaves the original logging to its stream.
	removeAndCheck(t, d, rec)
	require.NoError(t, syscall.Kill(srv.pid, 0))
	_, _ = get(t, base+"/after-remove")
	fj.waitFor(t, "the original's line after the clone went", func(cs []journalConn) bool { return hasLine(cs[0], "request /after-remove") })
}

// TestCloneRefusesOutsideUnixStream: a unix stream connection to anything
// but journald's stdout socket is refused before anything is frozen, naming
// the PID, the fd, the peer, who holds it, and the remedy.
func TestCloneRefusesOutsideUnixStream(t *testing.T) {
	fj := startFakeJournald(t)
	d := startDaemon(t) // --journal-socket left at journald's: fj is "another" peer
	st := status(t, d)

	dir, err := os.MkdirTemp("", "cbdb-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	dbPath := filepath.Join(dir, "db.sock")
	db, err := net.ListenUnix("unix", &net.UnixAddr{Name: dbPath, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	go func() {
		for {
			c, err := db.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	dbConn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: dbPath, Net: "unix"})
	require.NoError(t, err)
	defer dbConn.Close()
	dbFile, err := dbConn.File()
	require.NoError(t, err)
	defer dbFile.Close()

	for _, tc := range []struct {
		name   string
		start  func(t *testing.T) *target
		fd     int
		peer   string
		holder int
	}{
		{"stdout to a stream that is not journald's", func(t *testing.T) *target {
			pf := filepath.Join(t.TempDir(), "addr")
			tg := startWithStream(t, fj.path, "goserver", bins.goserver, "-port-file", pf)
			tg.addr = waitFile(t, pf)
			return tg
		}, 1, fj.path, os.Getpid()},
		{"a connection to a database", func(t *testing.T) *target {
			pf := filepath.Join(t.TempDir(), "addr")
			cmd := exec.Command(bins.goserver, "-port-file", pf)
			cmd.ExtraFiles = []*os.File{dbFile} // fd 3
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			require.NoError(t, cmd.Start())
			tg := &target{cmd: cmd, pid: cmd.Process.Pid}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			tg.addr = waitFile(t, pf)
			return tg
		}, 3, dbPath, os.Getpid()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := clonebotCgroups(st)
			tg := tc.start(t)
			_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: tg.pid})
			ae := apiErr(t, err)
			t.Logf("refusal: %s (hint: %s)", ae.Message, ae.Hint)
			assert.Equal(t, 422, ae.StatusCode)
			for _, want := range []string{
				fmt.Sprintf("PID %d", tg.pid),
				fmt.Sprintf("fd %d", tc.fd),
				"unix stream connection",
				tc.peer,
				fmt.Sprintf("held by PID %d", tc.holder),
				"outside its tree",
			} {
				assert.Contains(t, ae.Message, want)
			}
			assert.Contains(t, ae.Hint, "--journal-socket")
			// Refused before freezing: the original serves, nothing is left.
			code, _ := get(t, "http://"+tg.addr+"/")
			assert.Equal(t, 200, code)
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", tg.pid))
			assert.Contains(t, string(b), "TracerPid:\t0\n")
			list, err := d.c.ListClones(ctx(t))
			require.NoError(t, err)
			assert.Empty(t, list)
			assert.Equal(t, before, clonebotCgroups(st))
			logs, _ := os.ReadDir(filepath.Join(d.state, "logs"))
			assert.Empty(t, logs, "no CRIU ran, so no log is kept")
		})
	}
}

// TestTakeoverJournalStream: a service logging to journald is taken over;
// once the original has exited (its stream closes), the clone serves alone
// and its lines arrive on the stream opened for it.
func TestTakeoverJournalStream(t *testing.T) {
	fj := startFakeJournald(t)
	d := startDaemon(t, "--journal-socket", fj.path)
	pf := filepath.Join(t.TempDir(), "addr")
	srv := startWithStream(t, fj.path, "goserver", bins.goserver, "-port-file", pf, "-log-requests", "-graceful")
	srv.addr = waitFile(t, pf)
	base := "http://" + srv.addr
	rec, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
		Handover: api.Handover{Probe: base + "/count"}})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
	require.Len(t, rec.Streams, 1)
	waitGone(t, srv.pid)
	code, body := get(t, base+"/whoami?after=takeover")
	require.Equal(t, 200, code)
	assert.Equal(t, nsOf(t, rec.PID, "pid"), strings.Fields(body)[0], "the clone serves alone")
	cs := fj.waitFor(t, "the clone's line after the takeover", func(cs []journalConn) bool {
		return len(cs) == 2 && hasLine(cs[1], "request /whoami?after=takeover")
	})
	assert.Equal(t, "goserver-clone-"+rec.ID, cs[1].header.Identifier)
	assert.False(t, hasLine(cs[0], "request /whoami?after=takeover"))
	removeAndCheck(t, d, rec)
}

// TestCloneJournalStreamIsolatedNet: a clone in a network namespace of its
// own still reaches journald (a path-bound unix socket is found through
// the file system, not the network namespace).
func TestCloneJournalStreamIsolatedNet(t *testing.T) {
	fj := startFakeJournald(t)
	d := startDaemon(t, "--journal-socket", fj.path)
	pf := filepath.Join(t.TempDir(), "addr")
	srv := startWithStream(t, fj.path, "goserver", bins.goserver, "-port-file", pf)
	srv.addr = waitFile(t, pf)
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, IsolateNet: true})
	require.True(t, rec.IsolatedNet)
	require.Len(t, rec.Streams, 1)
	assert.NotEqual(t, nsOf(t, srv.pid, "net"), nsOf(t, rec.PID, "net"))
	cs := fj.waitFor(t, "the isolated clone's stream", func(cs []journalConn) bool { return len(cs) == 2 && cs[1].header.Identifier != "" })
	assert.Equal(t, "goserver-clone-"+rec.ID, cs[1].header.Identifier)
	assert.Equal(t, rec.InitPID, cs[1].pid)
	assert.Equal(t, rec.Streams[0].CloneInode, socketInode(t, rec.PID, 1))
	removeAndCheck(t, d, rec)
}
