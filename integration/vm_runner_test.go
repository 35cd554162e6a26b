//go:build linux

package integration

// The VM runner's own contract, tested on the host (make test-vm runs this
// before booting the suite; CLONEBOT_VM_RUNNER names integration/vm/run):
// the command's output and exit code come back, a share is read-write, and
// a guest that hangs ends with exit code 124 and the console's tail, with no
// qemu left behind; nor when the runner itself is killed.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func vmRunner(t *testing.T) string {
	t.Helper()
	// make test-vm runs it on the host with CLONEBOT_VM_RUNNER set, and
	// leaves it out of the host suite and of the guests (-skip).
	testutil.Require(t, !testutil.InVM(), "the runner boots the VM itself: it is tested on the host (make test-vm)")
	r := os.Getenv("CLONEBOT_VM_RUNNER")
	testutil.Require(t, r != "", "CLONEBOT_VM_RUNNER naming integration/vm/run (make test-vm sets it)")
	testutil.RequireRoot(t)
	return r
}

// runnerTag is put on the kernel command line of the guests these tests
// boot (CLONEBOT_VM_APPEND), so that qemus tells their qemu from those of
// anything else booting the guest on the machine, which it must neither
// count nor kill.
var runnerTag = fmt.Sprintf("clonebot.runnertest=%d", os.Getpid())

// runnerCmd is the runner with args, its guests tagged with runnerTag.
func runnerCmd(runner string, args ...string) *exec.Cmd {
	cmd := exec.Command(runner, args...)
	cmd.Env = append(os.Environ(), "CLONEBOT_VM_APPEND="+runnerTag)
	return cmd
}

// runVM runs the runner and returns its stdout, stderr and exit code.
func runVM(t *testing.T, runner string, args ...string) (string, string, int) {
	t.Helper()
	cmd := runnerCmd(runner, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return o.String(), e.String(), code
}

// qemus lists the PIDs of the qemu processes booting this project's guest
// for these tests (runnerTag).
func qemus() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.HasPrefix(string(b), "qemu-system") && strings.Contains(string(b), "mount_tag=vmctl") &&
			strings.Contains(string(b), runnerTag) {
			out = append(out, pid)
		}
	}
	return out
}

func requireNoQemu(t *testing.T, before []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var stray []int
		for _, p := range qemus() {
			if !containsInt(before, p) {
				stray = append(stray, p)
			}
		}
		if len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range stray {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("qemu processes left behind: %v", stray)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestVMRunner(t *testing.T) {
	runner := vmRunner(t)
	before := qemus()

	t.Run("output, exit code, argv and share", func(t *testing.T) {
		share := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(share, "in.txt"), []byte("from the host\n"), 0o644))
		script := `cat in.txt; pwd; printf '[%s]' "$@"; echo; echo "nodes $(ls -d /sys/devices/system/node/node* | wc -l)"; ` +
			`cat /sys/fs/cgroup/cgroup.controllers; echo to-stderr >&2; echo from the guest >out.txt; exit 7`
		// The arguments after the script reach it as they are: no shell
		// on the way re-splits or expands them.
		out, errOut, code := runVM(t, runner, "--share", share, "--timeout", "300", "--", "sh", "-c", script, "sh", "a b", "$HOME", "it's")
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
		assert.Equal(t, 7, code, "the command's exit code")
		assert.Contains(t, out, "from the host\n/mnt/share\n[a b][$HOME][it's]\nnodes 2\n")
		if _, rest, ok := strings.Cut(out, "nodes 2\n"); assert.True(t, ok) {
			for _, c := range []string{"cpuset", "cpu", "io", "memory", "pids"} {
				assert.Contains(t, strings.Fields(rest), c, "cgroup v2 controller %s", c)
			}
		}
		assert.Contains(t, errOut, "to-stderr")
		assert.NotContains(t, out, "to-stderr", "stderr stays apart from stdout")
		b, err := os.ReadFile(filepath.Join(share, "out.txt"))
		require.NoError(t, err)
		assert.Equal(t, "from the guest\n", string(b))
		requireNoQemu(t, before)
	})

	t.Run("hung guest", func(t *testing.T) {
		start := time.Now()
		_, errOut, code := runVM(t, runner, "--timeout", "60", "--", "sleep", "3600")
		t.Logf("after %v, stderr:\n%s", time.Since(start).Round(time.Second), errOut)
		assert.Equal(t, 124, code, "a timed-out guest has its own exit code")
		assert.Contains(t, errOut, "timed out after 60s")
		assert.Contains(t, errOut, "console (last 40 lines", "the console's tail is printed")
		assert.Contains(t, errOut, "| clonebot-vm-", "the tail shows the guest's console")
		assert.Less(t, time.Since(start), 120*time.Second)
		requireNoQemu(t, before)
	})

	t.Run("usage", func(t *testing.T) {
		_, errOut, code := runVM(t, runner, "--timeout", "soon", "--", "true")
		assert.Equal(t, 125, code)
		assert.Contains(t, errOut, "--timeout")
		_, _, code = runVM(t, runner)
		assert.Equal(t, 125, code, "no command")
	})

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run("runner killed by "+sig.String(), func(t *testing.T) {
			cmd := runnerCmd(runner, "--timeout", "600", "--", "sleep", "3600")
			var e bytes.Buffer
			cmd.Stderr = &e
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// Wait until its qemu runs.
			deadline := time.Now().Add(60 * time.Second)
			for len(qemus()) == len(before) {
				require.True(t, time.Now().Before(deadline), "no qemu started within 60s: %s", e.String())
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(2 * time.Second)
			require.NoError(t, cmd.Process.Signal(sig))
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("the runner did not exit within 30s of %v", sig)
			}
			requireNoQemu(t, before)
		})
	}
}
