//go:build linux

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/cgroup"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cloneCgroup is the cgroup clone id must be in: clonebot.slice/<id>, or
// where systemd manages the hierarchy, its transient scope unit.
func cloneCgroup(t *testing.T, id string) string {
	t.Helper()
	h, err := cgroup.Detect()
	require.NoError(t, err)
	if h.Systemd() {
		return "/clonebot.slice/" + cgroup.ScopeName(id)
	}
	return "/clonebot.slice/" + id
}

// checkClone asserts what every clone record and clone must satisfy.
func checkClone(t *testing.T, d *daemon, src int, rec *api.Clone) {
	t.Helper()
	st := status(t, d)
	assert.Equal(t, src, rec.SourcePID)
	assert.NotEqual(t, src, rec.PID, "the clone must be a new process")
	assert.Equal(t, src, rec.NSPID, "the clone keeps the original's PID inside its namespace")
	assert.Equal(t, api.StateRunning, rec.State)
	assert.Nil(t, rec.ExitCode)
	assert.Len(t, rec.ID, 12)
	assert.Equal(t, cloneCgroup(t, rec.ID), rec.Cgroup)
	assert.Equal(t, st.Cgroup.Pinning, rec.Pinning)
	assert.Greater(t, rec.TimingsMS.Total, 0.0)
	assert.Greater(t, rec.TimingsMS.Checkpoint, 0.0)
	assert.Greater(t, rec.TimingsMS.Restore, 0.0)
	assert.Greater(t, rec.FrozenMS, 0.0, "the record must say how long the original was frozen")
	assert.Less(t, rec.FrozenMS, rec.TimingsMS.Total)
	assert.InDelta(t, 1.0, rec.NUMALocalFraction, 0.5)

	require.True(t, alive(rec.PID), "clone PID %d not alive", rec.PID)
	require.True(t, alive(src), "the original PID %d must keep running", src)
	assert.NotEqual(t, nsOf(t, src, "pid"), nsOf(t, rec.PID, "pid"), "the clone must be in a new PID namespace")
	assert.NotEqual(t, nsOf(t, src, "mnt"), nsOf(t, rec.PID, "mnt"), "the clone must be in a new mount namespace")
	assert.Equal(t, rec.Cgroup, unifiedCgroup(t, rec.PID), "the clone must run in its cgroup")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rec.PID))
	require.NoError(t, err)
	assert.Contains(t, string(b), "Cpus_allowed_list:\t"+rec.CPUs+"\n", "the clone must be pinned to node %d's CPUs", rec.NUMANode)
	// The original is released: not traced, not stopped.
	sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", src))
	require.NoError(t, err)
	assert.Contains(t, string(sb), "TracerPid:\t0\n")
	assert.NotContains(t, string(sb), "State:\tT")
}

// removeAndCheck removes the clone and asserts nothing of it is left.
func removeAndCheck(t *testing.T, d *daemon, rec *api.Clone) {
	t.Helper()
	st := status(t, d)
	final, err := d.c.DeleteClone(ctx(t), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, api.StateExited, final.State)
	waitGone(t, rec.PID)
	waitGone(t, rec.InitPID)
	_, err = os.Stat(filepath.Join(st.Cgroup.Mount, rec.Cgroup))
	assert.True(t, os.IsNotExist(err), "cgroup %s left behind (%v)", rec.Cgroup, err)
	_, err = os.Stat(filepath.Join(d.state, "clones", rec.ID))
	assert.True(t, os.IsNotExist(err), "state of clone %s left behind", rec.ID)
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs, "images left behind in %s", d.img)
	_, err = d.c.GetClone(ctx(t), rec.ID)
	assert.Equal(t, 404, apiErr(t, err).StatusCode)
}

// bothServe makes requests with fresh connections until both copies have
// answered (told apart by their PID namespaces).
func bothServe(t *testing.T, url string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < 400 && len(seen) < 2; i++ {
		code, body := get(t, url)
		require.Equal(t, 200, code)
		seen[strings.Fields(body)[0]]++
	}
	require.Len(t, seen, 2, "want answers from two PID namespaces; got %v", seen)
	return seen
}

func TestCloneGoServer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		retrofits bool
	}{
		{"reuseport", []string{"-reuseport"}, false},
		{"no-reuseport", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			srv := startGoServer(t, tc.args...)
			base := "http://" + srv.addr
			for i := 1; i <= 5; i++ {
				_, body := get(t, base+"/bump")
				require.Equal(t, fmt.Sprint(i), body)
			}
			rec := d.clone(t, api.CloneRequest{PID: srv.pid, Name: "web-" + tc.name})
			checkClone(t, d, srv.pid, rec)
			assert.Equal(t, "web-"+tc.name, rec.Name)
			require.Len(t, rec.Listeners, 1)
			assert.Equal(t, srv.addr, rec.Listeners[0].Addr)
			assert.Equal(t, tc.retrofits, rec.Listeners[0].ReusePortSet)
			assert.Equal(t, map[int]bool{srv.pid: true, rec.PID: true}, listenersOn(t, []int{srv.pid, rec.PID}, portOf(srv.addr)))

			bothServe(t, base+"/whoami")

			// The clone holds the state taken at the clone: once the
			// original is gone, the counter continues from 5.
			require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
			waitGone(t, srv.pid)
			_, body := get(t, base+"/count")
			assert.Equal(t, "5", body)
			_, body = get(t, base+"/bump")
			assert.Equal(t, "6", body)
			removeAndCheck(t, d, rec)
		})
	}
}

func portOf(addr string) int {
	var p int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &p)
	return p
}

func TestClonePythonHTTPServer(t *testing.T) {
	d := startDaemon(t)
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	port := freePort(t)
	docroot := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(docroot, "hello.txt"), []byte("hello from python\n"), 0o644))
	srv := startTarget(t, []string{py, "-m", "http.server", "--bind", "127.0.0.1", "--directory", docroot, fmt.Sprint(port)})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, addr)
	rec := d.clone(t, api.CloneRequest{PID: srv.pid})
	checkClone(t, d, srv.pid, rec)
	require.Len(t, rec.Listeners, 1)
	assert.True(t, rec.Listeners[0].ReusePortSet, "http.server does not set SO_REUSEPORT; clonebot must")
	assert.Equal(t, map[int]bool{srv.pid: true, rec.PID: true}, listenersOn(t, []int{srv.pid, rec.PID}, port))
	for i := 0; i < 20; i++ {
		code, body := get(t, "http://"+addr+"/hello.txt")
		require.Equal(t, 200, code)
		require.Equal(t, "hello from python", body)
	}
	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	code, body := get(t, "http://"+addr+"/hello.txt")
	assert.Equal(t, 200, code, "the clone must serve alone once the original is gone")
	assert.Equal(t, "hello from python", body)
	removeAndCheck(t, d, rec)
}

func TestCloneNginx(t *testing.T) {
	d := startDaemon(t)
	master, port := startNginx(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	workers := children(master)
	require.Len(t, workers, 2, "nginx master %d should have 2 workers", master)

	rec := d.clone(t, api.CloneRequest{PID: master})
	checkClone(t, d, master, rec)
	cloneWorkers := children(rec.PID)
	assert.Len(t, cloneWorkers, 2, "the clone keeps the master and its 2 workers")
	// Both trees serve: the worker PIDs answering ($pid) come from both.
	seen := map[string]bool{}
	for i := 0; i < 400 && len(seen) < 3; i++ {
		code, body := get(t, "http://"+addr+"/")
		require.Equal(t, 200, code)
		seen[body] = true
	}
	assert.GreaterOrEqual(t, len(listenersOn(t, append(append([]int{master}, workers...), append([]int{rec.PID}, cloneWorkers...)...), port)), 4)

	// The original goes; the clone serves alone.
	_ = syscall.Kill(master, syscall.SIGKILL)
	for _, w := range workers {
		_ = syscall.Kill(w, syscall.SIGKILL)
		waitGone(t, w)
	}
	waitGone(t, master)
	for i := 0; i < 20; i++ {
		code, _ := get(t, "http://"+addr+"/")
		require.Equal(t, 200, code)
	}
	removeAndCheck(t, d, rec)
	for _, w := range cloneWorkers {
		waitGone(t, w)
	}
}

func TestCloneFromTerminal(t *testing.T) {
	d := startDaemon(t)
	// A server started with '&' from an interactive shell: its stdout is
	// the shell's terminal and its session leader the shell.
	dir := t.TempDir()
	pf := filepath.Join(dir, "addr")
	scr := startTarget(t, []string{"script", "-qfc", fmt.Sprintf("bash -c '%s -port-file %s & sleep 600'", bins.goserver, pf), "/dev/null"})
	addr := waitFile(t, pf)
	_, body := get(t, "http://"+addr+"/whoami")
	var pid int
	fmt.Sscan(strings.Fields(body)[1], &pid)
	require.Greater(t, pid, 0)
	fd1, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
	require.True(t, strings.HasPrefix(fd1, "/dev/pts/"), "the target's stdout should be a terminal; got %s", fd1)
	_ = scr

	rec := d.clone(t, api.CloneRequest{PID: pid})
	checkClone(t, d, pid, rec)
	cfd1, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", rec.PID))
	assert.True(t, strings.HasPrefix(cfd1, "/dev/pts/"), "the clone gets a terminal of its own; got %s", cfd1)
	assert.NotEqual(t, fd1, cfd1, "the clone must not share the shell's terminal")
	assert.NotEmpty(t, rec.Warnings)
	bothServe(t, "http://"+addr+"/whoami")
	removeAndCheck(t, d, rec)
}

func TestDaemonRestartReadoptsClones(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-reuseport")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid})
	other := d.clone(t, api.CloneRequest{PID: srv.pid})

	d.stop()
	require.True(t, alive(rec.PID), "clones must outlive the daemon")
	require.NoError(t, syscall.Kill(other.PID, syscall.SIGKILL)) // dies while no daemon watches
	waitGone(t, other.InitPID)
	d.start()

	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	byID := map[string]api.Clone{}
	for _, c := range list {
		byID[c.ID] = c
	}
	require.Contains(t, byID, rec.ID)
	require.Contains(t, byID, other.ID)
	assert.Equal(t, api.StateRunning, byID[rec.ID].State)
	assert.Equal(t, api.StateExited, byID[other.ID].State)
	require.NotNil(t, byID[other.ID].ExitCode)
	assert.Equal(t, 128+int(syscall.SIGKILL), *byID[other.ID].ExitCode)

	// A re-adopted clone's exit is still noticed.
	require.NoError(t, syscall.Kill(rec.PID, syscall.SIGTERM))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := d.c.GetClone(ctx(t), rec.ID)
		require.NoError(t, err)
		if c.State == api.StateExited {
			require.NotNil(t, c.ExitCode)
			break
		}
		require.True(t, time.Now().Before(deadline), "exit of re-adopted clone %s not noticed", rec.ID)
		time.Sleep(50 * time.Millisecond)
	}
	removeAndCheck(t, d, rec)
	removeAndCheck(t, d, other)
}

func runCmd(name string, args ...string) (string, error) {
	out, err := execCommand(name, args...).CombinedOutput()
	return string(out), err
}

// children returns the child PIDs of pid.
func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			var c int
			fmt.Sscan(f, &c)
			out = append(out, c)
		}
	}
	return out
}

func killChildren(pid int) {
	for _, c := range children(pid) {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
}

// TestCloneListenerOfAnotherOwner: a listener owned by another uid than
// root (here a root process's socket, given to uid 64101 before its bind;
// a server run by a member of group clonebot has the same) is cloned too.
// CRIU restores sockets as root, and the kernel shares a port through
// SO_REUSEPORT only between sockets of one owner: clonebot lends the
// original's listener to root for the restore, then both get its owner.
func TestCloneListenerOfAnotherOwner(t *testing.T) {
	d := startDaemon(t)
	const owner = 64101
	pf := filepath.Join(t.TempDir(), "port")
	srv := startTarget(t, []string{"python3", "-c", `
import http.server, os, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
s = socket.socket()
os.fchown(s.fileno(), ` + fmt.Sprint(owner) + `, ` + fmt.Sprint(owner) + `)
s.bind(("127.0.0.1", 0)); s.listen(64)
srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close(); srv.socket = s
with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
`, pf})
	addr := "127.0.0.1:" + waitFile(t, pf)
	owners := func(pid int) []uint32 {
		var out []uint32
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		require.NoError(t, err)
		for _, e := range ents {
			fi, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
			if err == nil && fi.Mode()&os.ModeSocket != 0 {
				out = append(out, fi.Sys().(*syscall.Stat_t).Uid)
			}
		}
		return out
	}
	require.Equal(t, []uint32{owner}, owners(srv.pid), "the original's listener before the clone")

	rec := d.clone(t, api.CloneRequest{PID: srv.pid})
	checkClone(t, d, srv.pid, rec)
	for _, w := range rec.Warnings {
		assert.NotContains(t, w, "owner", "warnings: %q", rec.Warnings)
	}
	assert.Equal(t, []uint32{owner}, owners(srv.pid), "the original's listener must be given its owner back")
	assert.Equal(t, []uint32{owner}, owners(rec.PID), "the clone's listener must have the original's owner")
	code, _ := get(t, "http://"+addr+"/")
	assert.Equal(t, 200, code)
	// The clone serves alone once the original is gone.
	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	for i := 0; i < 5; i++ {
		code, _ := get(t, "http://"+addr+"/")
		assert.Equal(t, 200, code)
	}
	removeAndCheck(t, d, rec)
}
