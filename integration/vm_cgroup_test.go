//go:build linux

package integration

// cgroup v2 behaviour in the VM (make test-vm): limits on the clone's cgroup,
// freezing through the target's own cgroup, trees under another uid (root
// has CAP_SYS_RESOURCE there), and the fallback to affinity pinning when the
// cpuset controller is not delegated.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVMCloneLimits: memory_max and pids_max land in the clone's cgroup.
func TestVMCloneLimits(t *testing.T) {
	vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	testutil.RequireVMFeature(t, hasController(st, "memory") && hasController(st, "pids"),
		fmt.Sprintf("the memory and pids controllers in cgroup v2 (have %v)", st.Cgroup.Controllers))
	assert.True(t, st.Features["memory_max"].OK, "status: memory_max %+v", st.Features["memory_max"])

	srv := startGoServer(t)
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, MemoryMax: 256 << 20, PidsMax: 64})
	checkClone(t, d, srv.pid, rec)
	assert.Equal(t, api.ByteSize(256<<20), rec.MemoryMax)
	assert.Equal(t, int64(64), rec.PidsMax)
	assert.Equal(t, "268435456", cgroupValue(t, st, rec.Cgroup, "memory.max"))
	assert.Equal(t, "64", cgroupValue(t, st, rec.Cgroup, "pids.max"))
	assert.NotEqual(t, "0", cgroupValue(t, st, rec.Cgroup, "memory.current"), "the clone's memory is charged to its cgroup")
	assert.NotEqual(t, "0", cgroupValue(t, st, rec.Cgroup, "pids.current"))
	bothServe(t, "http://"+srv.addr+"/whoami")

	// Without limits the files say "max".
	plain := d.clone(t, api.CloneRequest{PID: srv.pid})
	assert.Equal(t, "max", cgroupValue(t, st, plain.Cgroup, "memory.max"))
	assert.Equal(t, "max", cgroupValue(t, st, plain.Cgroup, "pids.max"))
	removeAndCheck(t, d, rec)
	removeAndCheck(t, d, plain)
}

// TestVMFreezeModes: a target alone in a cgroup of its own is frozen with
// cgroup.freeze, and thawed after; a target sharing its cgroup with another
// process, or in the root cgroup, is frozen with ptrace.
func TestVMFreezeModes(t *testing.T) {
	vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	testutil.RequireVMFeature(t, st.Cgroup.Mode == "v2", "pure cgroup v2 (mode "+st.Cgroup.Mode+")")
	assert.True(t, st.Features["cgroup_freeze"].OK, "status: cgroup_freeze %+v", st.Features["cgroup_freeze"])

	t.Run("own cgroup", func(t *testing.T) {
		dir := testCgroup(t, "clonebot-test-target")
		pf := filepath.Join(t.TempDir(), "addr")
		srv := startTargetInCgroup(t, dir, []string{bins.goserver, "-port-file", pf, "-threads", "2"})
		srv.addr = waitFile(t, pf)
		rel := strings.TrimPrefix(dir, cgroupRoot)
		require.Equal(t, rel, unifiedCgroup(t, srv.pid))

		rec := d.clone(t, api.CloneRequest{PID: srv.pid})
		checkClone(t, d, srv.pid, rec)
		assert.Equal(t, "cgroup", rec.Freeze)
		// Thawed, and still where it was.
		assert.Equal(t, "0", readTrim(t, filepath.Join(dir, "cgroup.freeze")))
		assert.Contains(t, readTrim(t, filepath.Join(dir, "cgroup.events")), "frozen 0")
		assert.Equal(t, rel, unifiedCgroup(t, srv.pid))
		requireUntouched(t, srv.pid)
		bothServe(t, "http://"+srv.addr+"/whoami")
		removeAndCheck(t, d, rec)
	})

	t.Run("shared cgroup", func(t *testing.T) {
		dir := testCgroup(t, "clonebot-test-shared")
		startTargetInCgroup(t, dir, []string{"sleep", "600"})
		pf := filepath.Join(t.TempDir(), "addr")
		srv := startTargetInCgroup(t, dir, []string{bins.goserver, "-port-file", pf})
		srv.addr = waitFile(t, pf)
		rec := d.clone(t, api.CloneRequest{PID: srv.pid})
		checkClone(t, d, srv.pid, rec)
		assert.Equal(t, "ptrace", rec.Freeze, "a cgroup holding more than the target's tree must not be frozen")
		assert.Equal(t, "0", readTrim(t, filepath.Join(dir, "cgroup.freeze")))
		removeAndCheck(t, d, rec)
	})

	t.Run("root cgroup", func(t *testing.T) {
		srv := startGoServer(t)
		rec := d.clone(t, api.CloneRequest{PID: srv.pid})
		checkClone(t, d, srv.pid, rec)
		assert.Equal(t, "ptrace", rec.Freeze)
		removeAndCheck(t, d, rec)
	})
}

// TestVMCloneNginxWWWData: nginx as its package runs it, master as root and
// workers as www-data, clones (root has CAP_SYS_RESOURCE in the VM), and the
// clone's workers keep their uid.
func TestVMCloneNginxWWWData(t *testing.T) {
	vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	testutil.RequireVMFeature(t, st.Capabilities["sys_resource"], "clonebotd with CAP_SYS_RESOURCE (capabilities "+fmt.Sprint(st.Capabilities)+")")

	master, port := startNginxAs(t, "www-data")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	workers := children(master)
	require.Len(t, workers, 2)
	for _, w := range workers {
		require.Equal(t, "33\t33\t33\t33", procStatusField(t, w, "Uid"), "nginx worker %d should run as www-data", w)
	}

	rec := d.clone(t, api.CloneRequest{PID: master})
	checkClone(t, d, master, rec)
	assert.Equal(t, "0\t0\t0\t0", procStatusField(t, rec.PID, "Uid"), "the clone's master runs as root")
	cw := children(rec.PID)
	require.Len(t, cw, 2, "the clone keeps both workers")
	for _, w := range cw {
		assert.Equal(t, "33\t33\t33\t33", procStatusField(t, w, "Uid"), "the clone's worker %d keeps uid www-data", w)
		assert.Equal(t, "33\t33\t33\t33", procStatusField(t, w, "Gid"), "the clone's worker %d keeps gid www-data", w)
	}
	// Both trees listen (the clone's workers have the original's PIDs in
	// their namespace, so $pid cannot tell them apart) and serve.
	all := append(append([]int{master}, workers...), append([]int{rec.PID}, cw...)...)
	assert.GreaterOrEqual(t, len(listenersOn(t, all, port)), 4, "listeners of both trees on port %d", port)
	for i := 0; i < 20; i++ {
		code, _ := get(t, "http://"+addr+"/")
		require.Equal(t, 200, code)
	}

	_ = syscall.Kill(master, syscall.SIGKILL)
	for _, w := range workers {
		_ = syscall.Kill(w, syscall.SIGKILL)
		waitGone(t, w)
	}
	code, _ := get(t, "http://"+addr+"/")
	assert.Equal(t, 200, code, "the clone serves alone")
	removeAndCheck(t, d, rec)
}

// TestVMAffinityFallback runs clonebotd where cgroup v2 has no cpuset
// controller to give: in a cgroup namespace whose root was delegated every
// controller but cpuset, as a container would be. Clones are then pinned
// with sched_setaffinity and a memory policy, and status and record say so.
func TestVMAffinityFallback(t *testing.T) {
	topo := vmTopology(t)
	need(t)
	n1, _ := topo.Node(1)

	// parent delegates all it has except cpuset to ns, the daemon's
	// cgroup namespace root; the target lives in ns as well.
	parent := testCgroup(t, "clonebot-test-nocpuset")
	have := strings.Fields(readTrim(t, filepath.Join(parent, "cgroup.controllers")))
	for _, c := range have {
		if c != "cpuset" {
			require.NoError(t, os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+"+c), 0), "enable %s", c)
		}
	}
	ns := filepath.Join(parent, "ns")
	require.NoError(t, os.Mkdir(ns, 0o755))
	require.NotContains(t, strings.Fields(readTrim(t, filepath.Join(ns, "cgroup.controllers"))), "cpuset")
	targets := filepath.Join(ns, "targets")
	require.NoError(t, os.Mkdir(targets, 0o755))

	d := startDaemonInCgroupNS(t, ns)
	st := status(t, d)
	t.Logf("daemon's view: cgroup %+v; cpuset_pinning %+v", st.Cgroup, st.Features["cpuset_pinning"])
	assert.Equal(t, api.PinAffinity, st.Cgroup.Pinning)
	assert.NotContains(t, st.Cgroup.Controllers, "cpuset")
	assert.False(t, st.Features["cpuset_pinning"].OK)
	assert.Contains(t, st.Features["cpuset_pinning"].Detail, "sched_setaffinity", "status must say how clones are pinned instead")

	// The target shares the daemon's namespaces, as in a container: CRIU
	// dumps a process in another mount namespace than its own with all its
	// mounts, which it cannot do for the VM's 9p share. Its stdio is opened
	// in there too (a file's mount must be one of the namespace's).
	tmp := t.TempDir()
	pf := filepath.Join(tmp, "addr")
	srv := startTargetInCgroup(t, targets, []string{"nsenter", "--target", fmt.Sprint(d.cmd.Process.Pid), "--mount", "--cgroup", "--",
		"sh", "-c", `exec "$@" </dev/null >>"$0" 2>&1`, filepath.Join(tmp, "out.log"),
		"taskset", "-c", "0", bins.goserver, "-port-file", pf, "-heap", heapMiB})
	srv.addr = waitFile(t, pf)
	assert.Equal(t, "/targets", readCgroupLine(t, srv.pid), "the target's cgroup, seen in its cgroup namespace")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid, NUMA: "1"})
	rec = resident(t, d, rec)
	t.Logf("clone: node %d cpus %s pinning %s local %.3f cgroup %s warnings %q", rec.NUMANode, rec.CPUs, rec.Pinning, rec.NUMALocalFraction, rec.Cgroup, rec.Warnings)
	assert.Equal(t, api.PinAffinity, rec.Pinning)
	assert.Equal(t, 1, rec.NUMANode)
	assert.Equal(t, n1.CPUList, procStatusField(t, rec.PID, "Cpus_allowed_list"))
	require.True(t, alive(rec.PID))
	require.True(t, alive(srv.pid))
	// The clone's cgroup, seen from outside the namespace, has no cpuset.
	hostDir := filepath.Join(ns, rec.Cgroup)
	assert.Equal(t, strings.TrimPrefix(hostDir, cgroupRoot), unifiedCgroup(t, rec.PID))
	_, err := os.Stat(filepath.Join(hostDir, "cpuset.cpus"))
	assert.True(t, os.IsNotExist(err), "no cpuset in the clone's cgroup (%v)", err)
	b := treeBytes(t, rec.PID)
	assert.GreaterOrEqual(t, fractionOn(b, 1), 0.95, "the memory policy must put the clone's pages on node 1: %s", mib(b))
	bothServe(t, "http://"+srv.addr+"/whoami")

	final, err := d.c.DeleteClone(ctx(t), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, api.StateExited, final.State)
	waitGone(t, rec.PID)
	_, err = os.Stat(hostDir)
	assert.True(t, os.IsNotExist(err), "cgroup %s left behind", hostDir)
}

// startDaemonInCgroupNS starts clonebotd in the cgroup ns, in a cgroup
// namespace rooted there, with cgroup2 mounted anew in a private mount
// namespace (its view: ns is the root; the old mount goes first, as the
// kernel refuses the same file system twice on one mount point), moved into
// a leaf so that it may enable controllers at its root (no internal
// processes).
func startDaemonInCgroupNS(t *testing.T, ns string) *daemon {
	t.Helper()
	need(t)
	dir := t.TempDir()
	d := &daemon{t: t, sock: filepath.Join(dir, "sock"), state: filepath.Join(dir, "state"),
		img: filepath.Join(dir, "img"), logPath: filepath.Join(dir, "clonebotd.log")}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer logf.Close()
	cg, err := os.Open(ns)
	require.NoError(t, err)
	defer cg.Close()
	script := `umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && mkdir /sys/fs/cgroup/daemon && echo $$ >/sys/fs/cgroup/daemon/cgroup.procs && exec "$@"`
	args := []string{"--cgroup", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
		bins.daemon, "--socket", d.sock, "--state-dir", d.state, "--image-dir", d.img, "--log-level", "debug"}
	d.cmd = exec.Command("unshare", args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	require.NoError(t, d.cmd.Start())
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(d.cmd, d.exited)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			t.Logf("clonebotd log:\n%s", b)
		}
	})
	d.c = api.NewClient(d.sock)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.c.Status(c)
		cancel()
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.logPath)
			t.Fatalf("clonebotd in a cgroup namespace did not answer on %s within 30s: %v\nlog:\n%s", d.sock, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readCgroupLine returns pid's cgroup v2 path as pid itself sees it.
func readCgroupLine(t *testing.T, pid int) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--target", fmt.Sprint(pid), "--cgroup", "--mount", "--", "cat", fmt.Sprintf("/proc/%d/cgroup", pid)).Output()
	require.NoError(t, err)
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "0::")
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
