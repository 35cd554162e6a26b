//go:build linux

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPreflightRefusals: each refusal comes before anything is frozen, with
// a status, a message naming the PID and the cause, and a remedy; the
// target is untouched and nothing is left behind.
func TestPreflightRefusals(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)

	mptcp := startGoServer(t, "-mptcp")
	perf := startGoServer(t, "-hold", "perf")
	iouring := startGoServer(t, "-hold", "iouring")
	zombie := startZombie(t)
	daemonPID := d.cmd.Process.Pid

	cases := []struct {
		name     string
		pid      int
		status   int
		contains []string
		hint     string
	}{
		{"missing pid", 4194304 - 7, 404, []string{"no process with PID"}, "ps"},
		{"pid 1", 1, 422, []string{"PID 1", "init"}, ""},
		{"kernel thread", 2, 422, []string{"PID 2", "kernel thread"}, "user-space"},
		{"zombie", zombie, 422, []string{fmt.Sprintf("PID %d", zombie), "zombie"}, "live process"},
		{"the daemon", daemonPID, 422, []string{fmt.Sprintf("PID %d", daemonPID), "clonebotd"}, ""},
		{"an ancestor of the daemon", os.Getpid(), 422, []string{fmt.Sprintf("PID %d", os.Getpid()), "ancestor"}, ""},
		{"mptcp listener", mptcp.pid, 422, []string{fmt.Sprintf("PID %d", mptcp.pid), "Multipath TCP"}, "GODEBUG=multipathtcp=0"},
		{"perf event fd", perf.pid, 422, []string{fmt.Sprintf("PID %d", perf.pid), "perf"}, ""},
		{"io_uring fd", iouring.pid, 422, []string{fmt.Sprintf("PID %d", iouring.pid), "io_uring"}, ""},
		{"negative pid", -5, 400, []string{"pid -5"}, ""},
		{"pid 0", 0, 400, []string{"pid 0"}, ""},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: tc.pid})
			ae := apiErr(t, err)
			assert.Equal(t, tc.status, ae.StatusCode, "got %d (%s); want %d", ae.StatusCode, ae.Message, tc.status)
			for _, c := range tc.contains {
				assert.Contains(t, ae.Message, c)
			}
			if tc.hint != "" {
				assert.Contains(t, ae.Hint, tc.hint)
			}
		})
	}

	t.Run("unknown numa node", func(t *testing.T) {
		srv := startGoServer(t)
		_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid, NUMA: "7"})
		ae := apiErr(t, err)
		assert.Equal(t, 400, ae.StatusCode)
		assert.Contains(t, ae.Message, "7")
	})

	t.Run("memory_max without a memory controller", func(t *testing.T) {
		if hasController(st, "memory") {
			t.Skip("this host has the memory controller in cgroup v2: memory.max is applied (tested in the VM suite)")
		}
		srv := startGoServer(t)
		_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid, MemoryMax: 256 << 20})
		ae := apiErr(t, err)
		assert.Equal(t, 422, ae.StatusCode)
		assert.Contains(t, ae.Message, "memory")
		assert.NotEmpty(t, ae.Hint)
	})

	t.Run("another uid without CAP_SYS_RESOURCE", func(t *testing.T) {
		if st.Capabilities["sys_resource"] {
			t.Skip("clonebotd has CAP_SYS_RESOURCE here: trees under other uids clone (tested in the VM suite)")
		}
		srv := startGoServerAs(t, 65534, 65534)
		_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid})
		ae := apiErr(t, err)
		assert.Equal(t, 422, ae.StatusCode)
		assert.Contains(t, ae.Message, "uid 65534")
		assert.Contains(t, ae.Message, "CAP_SYS_RESOURCE")
		assert.NotEmpty(t, ae.Hint)
	})

	t.Run("a clone of a clone", func(t *testing.T) {
		srv := startGoServer(t, "-reuseport")
		rec := d.clone(t, api.CloneRequest{PID: srv.pid})
		_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: rec.PID})
		ae := apiErr(t, err)
		assert.Equal(t, 422, ae.StatusCode)
		assert.Contains(t, ae.Message, "nested PID namespace")
	})

	// Nothing was frozen, left behind, or changed on the refused targets.
	for _, tg := range []*target{mptcp, perf, iouring} {
		require.True(t, alive(tg.pid))
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", tg.pid))
		assert.Contains(t, string(b), "TracerPid:\t0\n")
		_, body := get(t, "http://"+tg.addr+"/count")
		assert.Equal(t, "0", body)
	}
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs)
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.LessOrEqual(t, len(list), 1) // only the clone of the clone-of-a-clone case
}

func hasController(st *api.Status, c string) bool {
	for _, x := range st.Cgroup.Controllers {
		if x == c {
			return true
		}
	}
	return false
}

// startZombie returns the PID of a zombie: a child whose parent never reaps.
func startZombie(t *testing.T) int {
	t.Helper()
	tg := startTarget(t, []string{"sh", "-c", "sleep 0.05 & exec sleep 600"})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range children(tg.pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
			if s := string(b); strings.Contains(s, ") Z ") {
				return c
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no zombie appeared")
	return 0
}

// startGoServerAs runs the testdata server under another uid/gid.
func startGoServerAs(t *testing.T, uid, gid uint32) *target {
	t.Helper()
	// t.TempDir's parent is 0700: that uid needs a directory it can reach.
	dir, err := os.MkdirTemp("", "clonebot-uid-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	pf := dir + "/addr"
	// The test binaries live in a 0700 directory: give that uid a copy.
	bin := dir + "/goserver"
	b, err := os.ReadFile(bins.goserver)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	cmd := exec.Command(bin, "-port-file", pf)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return &target{cmd: cmd, pid: cmd.Process.Pid, addr: waitFile(t, pf), dir: dir}
}
