//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCLIQuickstart walks the README's quickstart with clonebotctl: clone a
// python http.server that does not set SO_REUSEPORT, list, inspect, kill the
// original, the clone keeps serving, rm cleans up; plus the exit codes.
func TestCLIQuickstart(t *testing.T) {
	d := startDaemon(t)
	port := freePort(t)
	docroot := t.TempDir()
	require.NoError(t, os.WriteFile(docroot+"/hello.txt", []byte("hello\n"), 0o644))
	srv := startTarget(t, []string{"python3", "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", docroot})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, addr)

	out, errOut, code := d.ctl("clone", fmt.Sprint(srv.pid), "--name", "quick", "-o", "json")
	require.Equal(t, 0, code, "clonebotctl clone: %s", errOut)
	var rec api.Clone
	require.NoError(t, json.Unmarshal([]byte(out), &rec), "clone -o json must print the record: %s", out)
	t.Cleanup(func() { d.ctl("rm", rec.ID) })
	checkClone(t, d, srv.pid, &rec)
	assert.Equal(t, "quick", rec.Name)

	out, _, code = d.ctl("clone", fmt.Sprint(srv.pid), "--name", "quick2")
	require.Equal(t, 0, code)
	for _, field := range []string{"pid", "cgroup", "numa_node", "frozen"} {
		assert.Contains(t, strings.ToLower(out), field, "table output of clone")
	}
	second := strings.Fields(out[strings.Index(out, "id"):])[1]
	t.Cleanup(func() { d.ctl("rm", second) })

	out, _, code = d.ctl("ls")
	require.Equal(t, 0, code)
	assert.Contains(t, out, rec.ID)
	assert.Contains(t, out, "quick")

	out, _, code = d.ctl("inspect", rec.ID, "-o", "json")
	require.Equal(t, 0, code)
	var got api.Clone
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, rec.ID, got.ID)

	out, _, code = d.ctl("status")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "4.2")

	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	for i := 0; i < 10; i++ {
		c, body := get(t, "http://"+addr+"/hello.txt")
		require.Equal(t, 200, c)
		require.Equal(t, "hello", body)
	}

	_, errOut, code = d.ctl("rm", rec.ID, second)
	require.Equal(t, 0, code, "rm: %s", errOut)
	waitGone(t, rec.PID)

	// Exit codes: 1 when the operation fails (with the daemon's message and
	// hint on stderr), 2 on usage errors.
	_, errOut, code = d.ctl("clone", "1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "PID 1")
	_, errOut, code = d.ctl("inspect", "000000000000")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no clone")
	_, _, code = d.ctl("clone", "abc")
	assert.Equal(t, 2, code)
	_, _, code = d.ctl("clone")
	assert.Equal(t, 2, code)
	_, _, code = d.ctl("clone", "123", "--numa", "bogus")
	assert.Equal(t, 2, code)
}
