//go:build linux

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFailedCloneLeavesNothing makes CRIU fail after the target was frozen:
// the target holds an unnamed datagram socket whose peer (the other end of
// a socketpair) is held outside its tree, which preflight lets through (a
// datagram socket with a named peer, such as /dev/log, dumps fine) and
// CRIU refuses to dump ("Can't dump name-less external socket"). The
// original must keep serving, released and exactly as before (its
// listener's SO_REUSEPORT, which clonebot set, cleared again), and nothing
// of the clone may remain.
func TestFailedCloneLeavesNothing(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	ours, theirs := os.NewFile(uintptr(pair[0]), "ours"), os.NewFile(uintptr(pair[1]), "theirs")
	defer ours.Close()
	port := freePort(t)
	script := fmt.Sprintf(`
import http.server, socket, socketserver
u = socket.socket(fileno=3)
http.server.ThreadingHTTPServer(("127.0.0.1", %d), http.server.SimpleHTTPRequestHandler).serve_forever()
`, port)
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	before := clonebotCgroups(st)
	cmd := exec.Command(py, "-c", script)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	theirs.Close()
	srv := &target{cmd: cmd, pid: cmd.Process.Pid}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, addr)

	_, err = d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid})
	ae := apiErr(t, err)
	assert.GreaterOrEqual(t, ae.StatusCode, 500, "a CRIU failure is a server-side failure: %s", ae.Message)
	assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", srv.pid))
	assert.Contains(t, ae.Message, ".log", "the error must name CRIU's log")
	assert.NotEmpty(t, ae.Hint)
	t.Logf("error: %s (hint: %s)", ae.Message, ae.Hint)

	// The original: alive, released, serving, SO_REUSEPORT as before.
	require.True(t, alive(srv.pid))
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.pid))
	assert.Contains(t, string(b), "TracerPid:\t0\n")
	assert.NotContains(t, string(b), "State:\tT")
	code, _ := get(t, "http://"+addr+"/")
	assert.Equal(t, 200, code)
	socks, err := handover.FindSockets(proc.Default, []int{srv.pid})
	require.NoError(t, err)
	require.Len(t, socks, 1)
	assert.False(t, socks[0].ReusePort, "clonebot must clear the SO_REUSEPORT it set when the clone fails")

	// Nothing of the clone is left.
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list)
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs)
	assert.Equal(t, before, clonebotCgroups(st), "a cgroup was left behind")
	clones, _ := os.ReadDir(filepath.Join(d.state, "clones"))
	assert.Empty(t, clones)
	logs, _ := os.ReadDir(filepath.Join(d.state, "logs"))
	assert.NotEmpty(t, logs, "the failed clone's CRIU logs are kept for the user")
	assert.Contains(t, ae.Message, filepath.Join(d.state, "logs"), "the error must name the log where it was kept")
}

// clonebotCgroups lists the clone cgroups under clonebot.slice.
func clonebotCgroups(st *api.Status) []string {
	var out []string
	ents, _ := os.ReadDir(filepath.Join(st.Cgroup.Mount, "clonebot.slice"))
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}
