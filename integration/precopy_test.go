//go:build linux

package integration

import (
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPrecopyIsExact: a clone made with iterative pre-copy (soft-dirty
// kernels: the VM) holds the original's memory as at the final dump, and
// hosts without soft-dirty tracking say so in the record.
func TestPrecopyIsExact(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)
	srv := startGoServer(t, "-reuseport", "-heap", "256")
	_, sum := get(t, "http://"+srv.addr+"/checksum")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, Precopy: "on", LazyPages: "off"})
	require.NotNil(t, rec.Precopy)
	if !st.Features["soft_dirty"].OK {
		assert.False(t, rec.Precopy.Used)
		assert.Contains(t, rec.Precopy.Note, "soft-dirty")
		testutil.RequireVMFeature(t, false, "soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY) for pre-copy")
	}
	require.True(t, rec.Precopy.Used, "note: %s", rec.Precopy.Note)
	require.NotEmpty(t, rec.Precopy.Rounds)
	assert.GreaterOrEqual(t, rec.Precopy.Rounds[0].Bytes, int64(256<<20))
	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	_, got := get(t, "http://"+srv.addr+"/checksum")
	assert.Equal(t, sum, got, "the pre-copied heap must equal the original's")
}
