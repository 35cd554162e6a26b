//go:build linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func migrateReq(t testing.TB) string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// reusePortOf reads SO_REUSEPORT of pid's listener.
func reusePortOf(t *testing.T, pid int) bool {
	t.Helper()
	socks, err := handover.FindSockets(proc.Default, []int{pid})
	require.NoError(t, err)
	for _, s := range socks {
		if s.Listening {
			return s.ReusePort
		}
	}
	t.Fatalf("PID %d has no listener", pid)
	return false
}

func TestTakeoverGoServer(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-graceful")
	base := "http://" + srv.addr
	for i := 0; i < 3; i++ {
		get(t, base+"/bump")
	}
	before := migrateReq(t)
	rec, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
		Handover: api.Handover{Probe: base + "/count"}})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
	require.NotNil(t, rec.Takeover)
	assert.Equal(t, "exited", rec.Takeover.OriginalExit)
	assert.Equal(t, "SIGTERM", rec.Takeover.DrainSignal)
	assert.True(t, rec.Takeover.Steered, "new connections steered to the clone before the drain: %s", rec.Takeover.SteerError)
	assert.Greater(t, rec.Takeover.TotalMS, 0.0)
	waitGone(t, srv.pid)
	assert.Equal(t, before, migrateReq(t), "net.ipv4.tcp_migrate_req must be put back")
	_, body := get(t, base+"/count")
	assert.Equal(t, "3", body, "the clone serves alone, with the original's state")
	assert.Equal(t, map[int]bool{rec.PID: true}, listenersOn(t, []int{rec.PID}, portOf(srv.addr)))
	removeAndCheck(t, d, rec)
}

// TestTakeoverRollsBack: a probe that never passes, and a clone that dies
// right after its restore, leave the original serving exactly as before.
func TestTakeoverRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name, probe string
		args        []string
		want        string
	}{
		{"probe never answers", "http://127.0.0.1:1/never", nil, "did not pass its probe"},
		{"clone crashes after restore", "tcp", []string{"-exit-if-cloned"}, "exited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			st := status(t, d)
			srv := startGoServer(t, tc.args...)
			require.False(t, reusePortOf(t, srv.pid))
			before := migrateReq(t)
			cgBefore := clonebotCgroups(st)
			_, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
				Handover: api.Handover{Probe: tc.probe, ProbeTimeout: api.Duration(2 * time.Second)}})
			ae := apiErr(t, err)
			assert.Contains(t, ae.Message, "rolled back")
			assert.Contains(t, ae.Message, tc.want)
			assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", srv.pid))
			// The original: serving, untouched.
			require.True(t, alive(srv.pid))
			code, _ := get(t, "http://"+srv.addr+"/count")
			assert.Equal(t, 200, code)
			assert.False(t, reusePortOf(t, srv.pid), "SO_REUSEPORT must be cleared again")
			assert.Equal(t, before, migrateReq(t))
			list, err := d.c.ListClones(ctx(t))
			require.NoError(t, err)
			assert.Empty(t, list)
			assert.Equal(t, cgBefore, clonebotCgroups(st))
			imgs, _ := os.ReadDir(d.img)
			assert.Empty(t, imgs)
		})
	}
}

func TestTakeoverDrainTimeoutKillsOriginal(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-ignore-term")
	rec, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
		Handover: api.Handover{DrainTimeout: api.Duration(time.Second)}})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
	assert.Equal(t, "killed", rec.Takeover.OriginalExit)
	assert.GreaterOrEqual(t, rec.Takeover.DrainMS, 1000.0)
	waitGone(t, srv.pid)
	code, _ := get(t, "http://"+srv.addr+"/count")
	assert.Equal(t, 200, code, "the clone serves")
}

func TestTakeoverRefusals(t *testing.T) {
	d := startDaemon(t)

	t.Run("no listening socket", func(t *testing.T) {
		sl := startTarget(t, []string{"sleep", "600"})
		_, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: sl.pid}})
		ae := apiErr(t, err)
		assert.Equal(t, 422, ae.StatusCode)
		assert.Contains(t, ae.Message, "no listening")
		assert.Contains(t, ae.Hint, "clone")
		// A plain clone is still allowed.
		rec := d.clone(t, api.CloneRequest{PID: sl.pid})
		assert.Equal(t, api.StateRunning, rec.State)
	})

	t.Run("second takeover of the same PID", func(t *testing.T) {
		srv := startGoServer(t)
		const first = "first-takeover-0001"
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid, Operation: first},
				Handover: api.Handover{Probe: "http://127.0.0.1:1/", ProbeTimeout: api.Duration(4 * time.Second)}})
		}()
		// The first holds the target once its preflight has begun.
		started := make(chan struct{})
		go func() {
			ectx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for ectx.Err() == nil {
				err := d.c.Events(ectx, first, func(ev api.Event) error {
					if ev.Phase == "preflight" {
						close(started)
						return context.Canceled
					}
					return nil
				})
				if err == context.Canceled {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the first takeover did not start")
		}
		_, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid}})
		ae := apiErr(t, err)
		assert.Equal(t, 409, ae.StatusCode, "got %d (%s); want 409 while the first takeover runs", ae.StatusCode, ae.Message)
		wg.Wait()
		require.True(t, alive(srv.pid))
	})

	t.Run("bad handover options", func(t *testing.T) {
		srv := startGoServer(t)
		for _, h := range []api.Handover{{Probe: "ftp://x/"}, {DrainSignal: "KILL"}, {Probe: "::bogus"}} {
			_, err := d.c.Takeover(ctx(t), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid}, Handover: h})
			assert.Equal(t, 400, apiErr(t, err).StatusCode, "%+v", h)
		}
	})

	t.Run("upgrade exec missing or not executable", func(t *testing.T) {
		srv := startGoServer(t)
		notExec := filepath.Join(t.TempDir(), "not-exec")
		require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
		for _, path := range []string{"/nonexistent/server", notExec} {
			_, err := d.c.Upgrade(ctx(t), api.UpgradeRequest{PID: srv.pid, Exec: path})
			ae := apiErr(t, err)
			assert.Equal(t, 422, ae.StatusCode)
			assert.Contains(t, ae.Message, path)
		}
		assert.False(t, reusePortOf(t, srv.pid))
		list, err := d.c.ListClones(ctx(t))
		require.NoError(t, err)
		for _, c := range list {
			assert.NotEqual(t, srv.pid, c.SourcePID, "nothing may be made for a refused upgrade")
		}
	})
}

func TestUpgradeGoServer(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-graceful", "-version", "v1")
	base := "http://" + srv.addr
	_, body := get(t, base+"/version")
	require.Equal(t, "v1", body)
	rec, err := d.c.Upgrade(ctx(t), api.UpgradeRequest{PID: srv.pid, Exec: bins.goserver,
		Args: []string{"-activation", "-graceful", "-version", "v2"}, Env: []string{"CLONEBOT_TEST=upgraded"},
		Handover: api.Handover{Probe: base + "/version"}})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
	assert.Equal(t, api.KindUpgrade, rec.Kind)
	assert.Equal(t, "exited", rec.Takeover.OriginalExit)
	assert.True(t, rec.Takeover.Steered, "the new process got a listener of its own, and new connections were steered to it: %s", rec.Takeover.SteerError)
	waitGone(t, srv.pid)
	for i := 0; i < 5; i++ {
		_, body := get(t, base+"/version")
		assert.Equal(t, "v2", body)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", rec.PID))
	require.NoError(t, err)
	assert.Contains(t, string(env), "CLONEBOT_TEST=upgraded")
	assert.Contains(t, string(env), fmt.Sprintf("LISTEN_PID=%d", rec.PID))
	assert.Equal(t, rec.Cgroup, unifiedCgroup(t, rec.PID))
	removeAndCheck(t, d, rec)
}

func TestIsolatedDebugClone(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t)
	get(t, "http://"+srv.addr+"/bump")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, IsolateNet: true})
	assert.True(t, rec.IsolatedNet)
	assert.NotEqual(t, nsOf(t, srv.pid, "net"), nsOf(t, rec.PID, "net"), "an isolated clone has its own network namespace")
	assert.False(t, reusePortOf(t, srv.pid), "an isolated clone needs no SO_REUSEPORT on the original")
	// The original alone takes the port's traffic.
	for i := 0; i < 50; i++ {
		_, body := get(t, "http://"+srv.addr+"/whoami")
		require.Equal(t, nsOf(t, srv.pid, "pid"), strings.Fields(body)[0])
	}
	// The clone answers on its own loopback, with the state at the clone.
	out, err := execCommand("nsenter", "--target", fmt.Sprint(rec.PID), "--net", "--", "curl", "-s", "http://"+srv.addr+"/count").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "1", strings.TrimSpace(string(out)))
	require.NoError(t, syscall.Kill(srv.pid, 0))
}
