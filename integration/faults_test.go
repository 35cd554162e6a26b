//go:build linux

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startInOwnCgroup starts the test server alone in a cgroup v2 directory of
// its own, so clonebot freezes it with cgroup.freeze instead of ptrace.
func startInOwnCgroup(t *testing.T, mount string, args ...string) (*target, string) {
	t.Helper()
	cg := filepath.Join(mount, fmt.Sprintf("clonebot-test-target-%d", time.Now().UnixNano()))
	require.NoError(t, os.Mkdir(cg, 0o755))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		_ = os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
		for i := 0; i < 100; i++ {
			if os.Remove(cg) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	fd, err := os.Open(cg)
	require.NoError(t, err)
	defer fd.Close()
	pf := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(bins.goserver, append([]string{"-port-file", pf}, args...)...)
	out, err := os.Create(filepath.Join(t.TempDir(), "out.log"))
	require.NoError(t, err)
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return &target{cmd: cmd, pid: cmd.Process.Pid, addr: waitFile(t, pf)}, cg
}

// originalIntact asserts the target is alive, serving, neither frozen,
// stopped nor traced, and its listener's SO_REUSEPORT back as it was.
func originalIntact(t *testing.T, tg *target, cg string, reusePort bool) {
	t.Helper()
	require.True(t, alive(tg.pid), "the original (PID %d) must survive", tg.pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tg.pid))
	require.NoError(t, err)
	assert.Contains(t, string(b), "TracerPid:\t0\n", "the original must not stay traced")
	assert.NotRegexp(t, `State:\t[tT]`, string(b), "the original must not stay stopped")
	if cg != "" {
		f, err := os.ReadFile(filepath.Join(cg, "cgroup.freeze"))
		require.NoError(t, err)
		assert.Equal(t, "0", strings.TrimSpace(string(f)), "the original's cgroup must be thawed")
	}
	for i := 0; i < 5; i++ {
		code, _ := get(t, "http://"+tg.addr+"/count")
		require.Equal(t, 200, code, "the original must keep serving")
	}
	assert.Equal(t, reusePort, reusePortOf(t, tg.pid), "SO_REUSEPORT of the original's listener")
}

// nothingLeft asserts no clone, image, cgroup or sysctl change remains.
func nothingLeft(t *testing.T, d *daemon, cgBefore []string, sysctl string) {
	t.Helper()
	st := status(t, d)
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list, "got clones %s; want none", prettyJSON(list))
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs, "images left")
	assert.Equal(t, cgBefore, clonebotCgroups(st), "cgroups left")
	assert.Equal(t, sysctl, migrateReq(t))
	b, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	require.NoError(t, err)
	assert.Equal(t, pipeMaxAtStart, strings.TrimSpace(string(b)), "fs.pipe-max-size must be put back")
}

// TestFaultInjection fails or kills the daemon at each point of the clone
// pipeline, then (after a kill) restarts it, and checks that the original
// is intact and nothing of the clone is left.
func TestFaultInjection(t *testing.T) {
	points := []struct{ point, action string }{
		{"preflight", "error"}, {"preflight", "kill"},
		{"after-freeze", "error"}, {"after-freeze", "kill"},
		{"during-dump", "kill-after(10ms)"},
		{"after-dump", "error"}, {"after-dump", "kill"},
		{"during-restore", "kill-after(5ms)"},
		{"after-restore", "error"}, {"after-restore", "kill"},
	}
	for _, freeze := range []string{"ptrace", "cgroup"} {
		for _, fp := range points {
			t.Run(freeze+"/"+fp.point+"="+fp.action, func(t *testing.T) {
				spec := fp.point + "=" + fp.action
				d := startDaemonEnv(t, []string{"CLONEBOT_FAILPOINTS=" + spec})
				st := status(t, d)
				cgBefore, sysctl := clonebotCgroups(st), migrateReq(t)
				var tg *target
				var cg string
				// 48 MiB: dump and restore take tens of milliseconds (a
				// kill-after lands inside them), below the lazy threshold.
				if freeze == "cgroup" {
					tg, cg = startInOwnCgroup(t, st.Cgroup.Mount, "-heap", "48")
				} else {
					tg = startGoServer(t, "-heap", "48")
				}
				_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: tg.pid})
				require.Error(t, err, "the clone must fail at %s", spec)
				if strings.HasPrefix(fp.action, "kill") {
					d.waitExit(t)
					d.startEnv(nil)
				} else {
					ae := apiErr(t, err)
					assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", tg.pid))
				}
				originalIntact(t, tg, cg, false)
				nothingLeft(t, d, cgBefore, sysctl)
				if freeze == "cgroup" && fp.point == "preflight" && fp.action == "error" {
					// Sanity: without failpoints this target is frozen
					// through its cgroup.
					d.stop()
					d.startEnv(nil)
					rec := d.clone(t, api.CloneRequest{PID: tg.pid})
					assert.Equal(t, "cgroup", rec.Freeze)
				}
			})
		}
	}
}

// TestFaultInjectionTakeover kills the daemon during a takeover's probe
// and drain: after the restart the port is served, the sysctl is back, and
// the records are consistent with the processes.
func TestFaultInjectionTakeover(t *testing.T) {
	for _, spec := range []string{"during-handover=kill", "during-settle=kill", "during-drain=kill", "during-handover=error"} {
		t.Run(spec, func(t *testing.T) {
			d := startDaemonEnv(t, []string{"CLONEBOT_FAILPOINTS=" + spec})
			sysctl := migrateReq(t)
			srv := startGoServer(t, "-graceful")
			_, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid}})
			require.Error(t, err)
			if strings.HasSuffix(spec, "=kill") {
				d.waitExit(t)
				d.startEnv(nil)
			}
			assert.Equal(t, sysctl, migrateReq(t), "net.ipv4.tcp_migrate_req must be put back")
			code, _ := get(t, "http://"+srv.addr+"/count")
			assert.Equal(t, 200, code, "the port must be served")
			if spec == "during-settle=kill" {
				// Killed with new connections steered to the clone, before
				// the original was signalled: the restarted daemon gives
				// the kernel back its choice, and both serve again.
				require.True(t, alive(srv.pid), "the original was never signalled")
				assert.True(t, servedByOriginal(t, srv, 60), "the original gets no new connection after the restart")
			}
			list, err := d.c.ListClones(ctx(t))
			require.NoError(t, err)
			for _, c := range list {
				if c.State == api.StateRunning {
					assert.True(t, alive(c.PID), "a running record must have a live clone")
				}
				_, _ = d.c.DeleteClone(context.Background(), c.ID)
			}
			if spec == "during-handover=error" {
				originalIntact(t, srv, "", false)
				assert.Empty(t, list)
			}
		})
	}
}

// TestKillDaemonDuringLargeDump: SIGKILL of clonebotd in the middle of
// cloning a process with a 512 MiB heap never leaves it frozen, stopped or
// traced, and the restarted daemon lists a consistent state.
func TestKillDaemonDuringLargeDump(t *testing.T) {
	for _, freeze := range []string{"ptrace", "cgroup"} {
		t.Run(freeze, func(t *testing.T) {
			d := startDaemonEnv(t, []string{"CLONEBOT_FAILPOINTS=during-dump=kill-after(150ms)"})
			st := status(t, d)
			cgBefore, sysctl := clonebotCgroups(st), migrateReq(t)
			var tg *target
			var cg string
			if freeze == "cgroup" {
				tg, cg = startInOwnCgroup(t, st.Cgroup.Mount, "-heap", "512")
			} else {
				tg = startGoServer(t, "-heap", "512")
			}
			_, body := get(t, "http://"+tg.addr+"/checksum")
			_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: tg.pid})
			require.Error(t, err)
			d.waitExit(t)
			d.startEnv(nil)
			originalIntact(t, tg, cg, false)
			_, after := get(t, "http://"+tg.addr+"/checksum")
			assert.Equal(t, body, after, "the original's memory must be untouched")
			nothingLeft(t, d, cgBefore, sysctl)
		})
	}
}

// TestTargetDiesDuringDump kills the target while CRIU dumps its memory.
// Either the dump had what it needed (the clone is a consistent copy of the
// moment it was frozen, and serves) or the clone fails and nothing is left;
// the daemon keeps answering either way.
func TestTargetDiesDuringDump(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)
	cgBefore, sysctl := clonebotCgroups(st), migrateReq(t)
	tg := startGoServer(t, "-heap", "256", "-reuseport")
	get(t, "http://"+tg.addr+"/bump")
	go func() {
		time.Sleep(60 * time.Millisecond)
		_ = syscall.Kill(tg.pid, syscall.SIGKILL)
	}()
	rec, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: tg.pid})
	if err != nil {
		ae := apiErr(t, err)
		t.Logf("the clone failed: %s", ae.Message)
		assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", tg.pid))
		nothingLeft(t, d, cgBefore, sysctl)
	} else {
		t.Logf("the dump completed before the target died: the clone (PID %d) is a copy of the frozen moment", rec.PID)
		t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
		waitGone(t, tg.pid)
		_, body := get(t, "http://"+tg.addr+"/count")
		assert.Equal(t, "1", body, "the clone holds the state at the freeze")
	}
	_, err = d.c.Status(ctx(t))
	require.NoError(t, err, "the daemon keeps answering")
}

// TestCRIUMissingOrBroken: the daemon starts, status says what is wrong,
// clone requests get 503 with the remedy.
func TestCRIUMissingOrBroken(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "criu")
	require.NoError(t, os.WriteFile(broken, []byte("#!/bin/sh\necho 'criu: broken' >&2\nexit 1\n"), 0o755))
	for _, path := range []string{"/nonexistent/criu", broken} {
		t.Run(path, func(t *testing.T) {
			d := startDaemon(t, "--criu", path)
			st := status(t, d)
			assert.False(t, st.CRIU.OK)
			assert.NotEmpty(t, st.CRIU.Error)
			assert.NotEmpty(t, st.CRIU.Hint)
			assert.False(t, st.Features["clone"].OK)
			srv := startGoServer(t)
			_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid})
			ae := apiErr(t, err)
			assert.Equal(t, 503, ae.StatusCode)
			assert.Contains(t, ae.Hint, "CRIU")
		})
	}
}

// TestImageDirFull: a tmpfs too small for the images is found before
// anything is frozen: the clone is refused, naming the directory and the
// remedy.
func TestImageDirFull(t *testing.T) {
	need(t)
	small := t.TempDir()
	require.NoError(t, syscall.Mount("clonebot-test-small", small, "tmpfs", 0, "size=4m,mode=0700"))
	t.Cleanup(func() { _ = syscall.Unmount(small, syscall.MNT_DETACH) })
	d := startDaemon(t, "--image-dir", small)
	d.img = small
	st := status(t, d)
	cgBefore, sysctl := clonebotCgroups(st), migrateReq(t)
	srv := startGoServer(t, "-heap", "32")
	_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid})
	ae := apiErr(t, err)
	assert.Equal(t, 422, ae.StatusCode, "status: got %d (%s); want 422, refused in preflight", ae.StatusCode, ae.Message)
	assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", srv.pid), "message: got %q", ae.Message)
	assert.Contains(t, ae.Message, "does not fit the image directory "+small, "message: got %q", ae.Message)
	assert.Contains(t, ae.Hint, "--image-dir", "hint: got %q", ae.Hint)
	originalIntact(t, srv, "", false)
	nothingLeft(t, d, cgBefore, sysctl)
}

// servedByOriginal makes n new connections to srv and reports whether any
// was answered by the original (whose PID namespace is the test's own).
func servedByOriginal(t *testing.T, srv *target, n int) bool {
	t.Helper()
	mine, err := os.Readlink("/proc/self/ns/pid")
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		resp, err := client.Get("http://" + srv.addr + "/whoami")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(string(b), mine+" ") {
			return true
		}
	}
	return false
}
