//go:build linux

package integration

// NUMA placement in the two-node VM (make test-vm): node0 = cpu 0, node1 =
// cpu 1, about 1 GiB each, cpuset in cgroup v2.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heapMiB is the target's heap: large enough that the pages of the
// executable and libraries (page cache, shared with the original and so on
// the original's node) stay well under 5% of the clone's resident memory.
const heapMiB = "128"

// TestVMCloneToOtherNode clones a server running on node 0 to node 1: the
// clone's threads may run only on node 1's CPUs, its cgroup's cpuset is node
// 1, at least 95% of its resident pages are on node 1, and the original keeps
// its pages on node 0.
func TestVMCloneToOtherNode(t *testing.T) {
	topo := vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	requireCpuset(t, st)
	n1, _ := topo.Node(1)

	srv := startGoServerOnNode(t, topo, 0, "-heap", heapMiB)
	before := treeBytes(t, srv.pid)
	require.GreaterOrEqual(t, fractionOn(before, 0), 0.95, "the target must start with its pages on node 0: %s", mib(before))
	_, sum := get(t, "http://"+srv.addr+"/checksum")

	rec := d.clone(t, api.CloneRequest{PID: srv.pid, NUMA: "1"})
	checkClone(t, d, srv.pid, rec)
	rec = resident(t, d, rec)
	t.Logf("clone: node %d cpus %s mems %s pinning %s local %.3f lazy %v, timings %+v", rec.NUMANode, rec.CPUs, rec.Mems, rec.Pinning, rec.NUMALocalFraction, rec.LazyPages, rec.TimingsMS)
	assert.Equal(t, 1, rec.NUMANode)
	assert.Equal(t, n1.CPUList, rec.CPUs)
	assert.Equal(t, "1", rec.Mems)
	assert.Equal(t, api.PinCgroup, rec.Pinning)
	// The record measures when the clone starts to run; a lazily restored
	// clone has most of its pages still to come then.
	assert.GreaterOrEqual(t, rec.NUMALocalFraction, 0.9, "the record's numa_local_fraction")

	// Every thread of every process of the clone: node 1's CPUs only.
	pids, err := proc.Default.Tree(rec.PID)
	require.NoError(t, err)
	for _, pid := range pids {
		tids, err := proc.Default.Threads(pid)
		require.NoError(t, err)
		for _, tid := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
			if err != nil {
				continue // a thread exited
			}
			assert.Regexp(t, regexp.MustCompile(`(?m)^Cpus_allowed_list:\s+`+regexp.QuoteMeta(n1.CPUList)+`$`), string(b), "thread %d of PID %d", tid, pid)
			assert.Regexp(t, regexp.MustCompile(`(?m)^Mems_allowed_list:\s+1$`), string(b), "thread %d of PID %d", tid, pid)
		}
	}
	// The clone's cgroup: cpuset written and in effect.
	for file, want := range map[string]string{
		"cpuset.cpus": n1.CPUList, "cpuset.cpus.effective": n1.CPUList,
		"cpuset.mems": "1", "cpuset.mems.effective": "1",
	} {
		assert.Equal(t, want, cgroupValue(t, st, rec.Cgroup, file), "%s of %s", file, rec.Cgroup)
	}

	after := treeBytes(t, rec.PID)
	t.Logf("clone's resident memory: %s; original's: %s", mib(after), mib(treeBytes(t, srv.pid)))
	assert.GreaterOrEqual(t, fractionOn(after, 1), 0.95, "at least 95%% of the clone's resident pages on node 1: %s", mib(after))
	assert.Greater(t, after[1], uint64(100<<20), "the clone's heap (%s MiB) must be resident on node 1: %s", heapMiB, mib(after))
	orig := treeBytes(t, srv.pid)
	assert.GreaterOrEqual(t, fractionOn(orig, 0), 0.95, "the original keeps its pages on node 0: %s", mib(orig))

	// The clone holds the original's heap.
	require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
	waitGone(t, srv.pid)
	_, csum := get(t, "http://"+srv.addr+"/checksum")
	assert.Equal(t, sum, csum, "the clone's heap checksum")
	removeAndCheck(t, d, rec)
}

// TestVMPlacementPolicies: "same" puts the clone on the node holding the
// target's pages, "spread" puts two clones in a row on different nodes.
func TestVMPlacementPolicies(t *testing.T) {
	topo := vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	requireCpuset(t, st)

	for _, node := range []int{0, 1} {
		t.Run(fmt.Sprintf("same/node%d", node), func(t *testing.T) {
			n, _ := topo.Node(node)
			srv := startGoServerOnNode(t, topo, node, "-heap", "64")
			for _, policy := range []api.Placement{"", api.PlaceSame} {
				rec := d.clone(t, api.CloneRequest{PID: srv.pid, NUMA: policy})
				checkClone(t, d, srv.pid, rec)
				rec = resident(t, d, rec)
				assert.Equal(t, node, rec.NUMANode, "numa %q of a target on node %d", policy, node)
				assert.Equal(t, n.CPUList, rec.CPUs)
				assert.Equal(t, n.CPUList, procStatusField(t, rec.PID, "Cpus_allowed_list"))
				assert.Equal(t, strconv.Itoa(node), cgroupValue(t, st, rec.Cgroup, "cpuset.mems"))
				b := treeBytes(t, rec.PID)
				assert.GreaterOrEqual(t, fractionOn(b, node), 0.9, "clone's pages: %s", mib(b))
				removeAndCheck(t, d, rec)
			}
		})
	}

	t.Run("spread", func(t *testing.T) {
		srv := startGoServerOnNode(t, topo, 0, "-reuseport")
		a := d.clone(t, api.CloneRequest{PID: srv.pid, NUMA: api.PlaceSpread})
		b := d.clone(t, api.CloneRequest{PID: srv.pid, NUMA: api.PlaceSpread})
		checkClone(t, d, srv.pid, a)
		checkClone(t, d, srv.pid, b)
		assert.ElementsMatch(t, []int{0, 1}, []int{a.NUMANode, b.NUMANode}, "two spread clones: got nodes %d and %d", a.NUMANode, b.NUMANode)
		for _, rec := range []*api.Clone{a, b} {
			n, _ := topo.Node(rec.NUMANode)
			assert.Equal(t, n.CPUList, procStatusField(t, rec.PID, "Cpus_allowed_list"))
		}
		st := status(t, d)
		for _, n := range st.NUMA {
			assert.Equal(t, 1, n.Clones, "status: clones on node %d", n.ID)
		}
		removeAndCheck(t, d, a)
		removeAndCheck(t, d, b)
	})
}

// TestVMNoSuchNode: a node the machine does not have is refused before
// anything is frozen, and names the nodes it has.
func TestVMNoSuchNode(t *testing.T) {
	topo := vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)
	srv := startGoServerOnNode(t, topo, 0)
	before := clonebotCgroups(st)

	_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid, NUMA: "7"})
	ae := apiErr(t, err)
	assert.Equal(t, 400, ae.StatusCode, "got %d (%s); want 400", ae.StatusCode, ae.Message)
	assert.Contains(t, ae.Message, "NUMA node 7")
	assert.Contains(t, ae.Message, "0, 1", "the message names the nodes there are")
	assert.NotEmpty(t, ae.Hint)
	requireNothingDone(t, d, st, srv.pid, before)
	_, body := get(t, "http://"+srv.addr+"/count")
	assert.Equal(t, "0", body)
}

// TestVMNodeWithoutMemory: a clone that does not fit in the chosen node's
// free memory is refused before anything is frozen, with both numbers.
// Node 1 is filled by a server allocating all but ~200 MiB of its free
// memory; the target (a 400 MiB heap on node 0) asks for node 1.
func TestVMNodeWithoutMemory(t *testing.T) {
	topo := vmTopology(t)
	d := startDaemon(t)
	st := status(t, d)

	const targetMiB, leaveMiB = 400, 200
	free1 := nodeFree(t, 1) >> 20
	require.Greater(t, free1, uint64(leaveMiB+100), "node 1 has only %d MiB free", free1)
	require.Greater(t, nodeFree(t, 0)>>20, uint64(targetMiB+150), "node 0 must hold the target")
	startGoServerOnNode(t, topo, 1, "-heap", strconv.FormatUint(free1-leaveMiB, 10))
	srv := startGoServerOnNode(t, topo, 0, "-heap", strconv.Itoa(targetMiB))
	free1 = nodeFree(t, 1) >> 20
	t.Logf("node 1 free after filling: %d MiB; target RSS %s", free1, procStatusField(t, srv.pid, "VmRSS"))
	require.Less(t, free1, uint64(targetMiB), "filling node 1 did not leave it short of %d MiB", targetMiB)
	before := clonebotCgroups(st)

	_, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid, NUMA: "1"})
	ae := apiErr(t, err)
	t.Logf("refusal: %s (hint: %s)", ae.Message, ae.Hint)
	assert.Equal(t, 422, ae.StatusCode, "got %d (%s); want 422", ae.StatusCode, ae.Message)
	m := regexp.MustCompile(`NUMA node 1 has (\d+) MiB free but the clone needs (\d+) MiB`).FindStringSubmatch(ae.Message)
	require.NotNil(t, m, "the message must give the free and the needed memory: %s", ae.Message)
	free, needed := atoi(t, m[1]), atoi(t, m[2])
	assert.Less(t, free, needed)
	assert.GreaterOrEqual(t, needed, targetMiB, "the clone needs at least the target's heap")
	assert.InDelta(t, float64(free1), float64(free), 100, "the free memory reported against sysfs")
	assert.NotEmpty(t, ae.Hint)
	requireNothingDone(t, d, st, srv.pid, before)
}

// requireNothingDone: the target runs untouched, and no clone, cgroup or
// image was left behind.
func requireNothingDone(t *testing.T, d *daemon, st *api.Status, pid int, cgroupsBefore []string) {
	t.Helper()
	requireUntouched(t, pid)
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list)
	assert.Equal(t, cgroupsBefore, clonebotCgroups(st), "a cgroup was left behind")
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs)
	clones, _ := os.ReadDir(filepath.Join(d.state, "clones"))
	assert.Empty(t, clones)
}
