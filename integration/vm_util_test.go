//go:build linux

package integration

// Helpers of the VM-only tests (vm_*_test.go). Those tests need what only the
// integration VM is built to have — two NUMA nodes, cpuset in cgroup v2,
// CAP_SYS_RESOURCE — and go through testutil.RequireVMFeature: on a host
// without it they skip, naming `make test-vm`; inside the VM its absence is a
// failure.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/clonebot/clonebot/numa"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cgroupRoot is where the VM mounts cgroup v2 (pure v2, nsdelegate).
const cgroupRoot = "/sys/fs/cgroup"

// vmTopology returns the NUMA topology, requiring the VM's layout: node 0
// holding CPU 0 and node 1 holding CPU 1.
func vmTopology(t *testing.T) *numa.Topology {
	t.Helper()
	topo, err := numa.ReadTopology(numa.DefaultRoot)
	require.NoError(t, err)
	n0, ok0 := topo.Node(0)
	n1, ok1 := topo.Node(1)
	testutil.RequireVMFeature(t, len(topo.Nodes) == 2 && ok0 && ok1 && n0.CPUList == "0" && n1.CPUList == "1",
		fmt.Sprintf("two NUMA nodes, node0 = cpu 0 and node1 = cpu 1 (have %+v)", topo.Nodes))
	return topo
}

// requireCpuset requires the cpuset controller in cgroup v2, reported by the
// daemon: clones are then pinned through cgroup.
func requireCpuset(t *testing.T, st *api.Status) {
	t.Helper()
	testutil.RequireVMFeature(t, st.Cgroup.Mode == "v2" && hasController(st, "cpuset") && st.Cgroup.Pinning == api.PinCgroup,
		fmt.Sprintf("pure cgroup v2 with the cpuset controller (daemon reports mode %q, controllers %v, pinning %q)",
			st.Cgroup.Mode, st.Cgroup.Controllers, st.Cgroup.Pinning))
}

// startGoServerOnNode starts the test server with its CPUs (and so, by the
// kernel's default local allocation, its memory) on one node: taskset execs
// the server, so the target's PID is the server's.
func startGoServerOnNode(t *testing.T, topo *numa.Topology, node int, args ...string) *target {
	t.Helper()
	n, ok := topo.Node(node)
	require.True(t, ok, "node %d", node)
	pf := filepath.Join(t.TempDir(), "addr")
	tg := startTarget(t, append([]string{"taskset", "-c", n.CPUList, bins.goserver, "-port-file", pf}, args...))
	tg.addr = waitFile(t, pf)
	return tg
}

// treeBytes sums the resident bytes per node of pid's process tree.
func treeBytes(t *testing.T, pid int) map[int]uint64 {
	t.Helper()
	pids, err := proc.Default.Tree(pid)
	require.NoError(t, err, "process tree of PID %d", pid)
	out := map[int]uint64{}
	for _, p := range pids {
		maps, err := proc.Default.NUMAMaps(p)
		if err != nil {
			continue // exited meanwhile
		}
		for n, b := range proc.NodeBytes(maps) {
			out[n] += b
		}
	}
	return out
}

// resident waits until all of the clone's memory is in (a clone restored
// lazily gets its pages after it runs) and returns the updated record.
func resident(t *testing.T, d *daemon, rec *api.Clone) *api.Clone {
	t.Helper()
	r := waitResident(t, d, rec.ID)
	return &r
}

// fractionOn is the share of bytes on node.
func fractionOn(bytes map[int]uint64, node int) float64 {
	var sum uint64
	for _, b := range bytes {
		sum += b
	}
	if sum == 0 {
		return 0
	}
	return float64(bytes[node]) / float64(sum)
}

func mib(bytes map[int]uint64) string {
	var parts []string
	for n := 0; n < 8; n++ {
		if b, ok := bytes[n]; ok {
			parts = append(parts, fmt.Sprintf("node%d %.1f MiB", n, float64(b)/(1<<20)))
		}
	}
	return strings.Join(parts, ", ")
}

// procStatusField returns a field of /proc/PID/status ("Cpus_allowed_list").
func procStatusField(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}

// cgroupValue reads an interface file of the cgroup rel (as in a record's
// Cgroup) under the hierarchy the daemon reports.
func cgroupValue(t *testing.T, st *api.Status, rel, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st.Cgroup.Mount, rel, file))
	require.NoError(t, err, "cgroup %s", rel)
	return strings.TrimSpace(string(b))
}

// requireUntouched asserts the target runs, not traced, not stopped.
func requireUntouched(t *testing.T, pid int) {
	t.Helper()
	require.True(t, alive(pid), "PID %d must still run", pid)
	assert.Equal(t, "0", procStatusField(t, pid, "TracerPid"), "PID %d must not be traced", pid)
	assert.NotContains(t, procStatusField(t, pid, "State"), "T", "PID %d must not be stopped", pid)
}

// testCgroup makes a cgroup of its own for a test under the root and removes
// it (killing what is left in it) when the test ends.
func testCgroup(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(cgroupRoot, fmt.Sprintf("%s-%d", name, os.Getpid()))
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { removeCgroup(t, dir) })
	return dir
}

// removeCgroup kills every process under dir and removes it, children first.
func removeCgroup(t *testing.T, dir string) {
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	subs, _ := os.ReadDir(dir)
	for _, s := range subs {
		if s.IsDir() {
			removeCgroup(t, filepath.Join(dir, s.Name()))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(dir)
		if err == nil || os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startTargetInCgroup is startTarget with the process born in the cgroup dir
// (clone3 CLONE_INTO_CGROUP): nothing else of the test runs there.
func startTargetInCgroup(t *testing.T, dir string, argv []string) *target {
	t.Helper()
	cg, err := os.Open(dir)
	require.NoError(t, err)
	defer cg.Close()
	tdir := t.TempDir()
	out, err := os.Create(filepath.Join(tdir, "out.log"))
	require.NoError(t, err)
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = tdir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	require.NoError(t, cmd.Start(), "start %v in cgroup %s", argv, dir)
	return watchTarget(t, cmd)
}

// nodeFree is MemFree of a node, in bytes, now.
func nodeFree(t *testing.T, node int) uint64 {
	t.Helper()
	topo, err := numa.ReadTopology(numa.DefaultRoot)
	require.NoError(t, err)
	n, ok := topo.Node(node)
	require.True(t, ok)
	return n.MemFree
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(t, err, "number %q", s)
	return n
}
