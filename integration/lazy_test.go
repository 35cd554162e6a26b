//go:build linux

package integration

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitResident polls the record until its pages are all in (or it exited);
// lazy restores finish after the clone serves. 5 minutes at most (a 4 GiB
// heap in the scaling benchmark).
func waitResident(t testing.TB, d *daemon, id string) api.Clone {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		rec, err := d.c.GetClone(ctx(t), id)
		require.NoError(t, err)
		if rec.TimingsMS.Resident > 0 || rec.State == api.StateExited {
			return *rec
		}
		require.True(t, time.Now().Before(deadline), "clone %s not resident after 5 minutes", id)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLazyRestoreIsExact: a clone restored lazily holds exactly the
// original's memory at the dump, checked over a 512 MiB heap.
func TestLazyRestoreIsExact(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-reuseport", "-heap", "512")
	_, sum := get(t, "http://"+srv.addr+"/checksum")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, LazyPages: "on"})
	require.True(t, rec.LazyPages, "CRIU here supports lazy pages (userfaultfd): the clone must be lazy")
	assert.Greater(t, rec.TimingsMS.Serving, 0.0)
	assert.GreaterOrEqual(t, rec.DumpedBytes, int64(512<<20))
	final := waitResident(t, d, rec.ID)
	require.Equal(t, api.StateRunning, final.State, "warnings: %v", final.Warnings)
	assert.GreaterOrEqual(t, final.TimingsMS.Resident, final.TimingsMS.Serving)
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs, "images must go once the clone is resident")
	// Only the clone serves now; its heap must be the original's.
	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	_, got := get(t, "http://"+srv.addr+"/checksum")
	assert.Equal(t, sum, got, "the lazily restored heap must equal the original's")
	removeAndCheck(t, d, rec)
}

// TestLazyPageServerFailureKillsClone: a page server that dies before all
// pages are in must take the clone with it, not leave it with holes.
func TestLazyPageServerFailureKillsClone(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-reuseport", "-heap", "1024")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, LazyPages: "on"})
	require.True(t, rec.LazyPages)
	lazy := 0
	for _, c := range children(rec.InitPID) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		if strings.Contains(string(b), "lazy-pages") {
			lazy = c
		}
	}
	if lazy == 0 {
		now, err := d.c.GetClone(ctx(t), rec.ID)
		require.NoError(t, err)
		require.Greater(t, now.TimingsMS.Resident, 0.0, "no lazy-pages server found and the clone is not resident")
		t.Skip("all pages were in before the test could kill the page server")
	}
	require.NoError(t, syscall.Kill(lazy, syscall.SIGKILL))
	waitGone(t, rec.PID)
	final := waitResident(t, d, rec.ID)
	assert.Equal(t, api.StateExited, final.State)
	assert.Contains(t, strings.Join(final.Warnings, " "), "lazy-pages")
	code, _ := get(t, "http://"+srv.addr+"/count")
	assert.Equal(t, 200, code, "the original keeps serving")
}
