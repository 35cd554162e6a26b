//go:build linux

package numa

import (
	"os/exec"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clonebot/clonebot/internal/testutil"
)

func TestSetAffinityChild(t *testing.T) {
	testutil.RequireRoot(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	if err := SetAffinity(pid, []int{0}); err != nil {
		t.Fatal(err)
	}
	got, err := Affinity(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int{0}) {
		t.Fatalf("Affinity(%d) = %v; want [0]", pid, got)
	}

	// A CPU the machine cannot have is refused before the syscall.
	if err := SetAffinity(pid, []int{5000}); err == nil {
		t.Fatalf("SetAffinity to cpu 5000: got nil error")
	}
	if err := SetAffinity(pid, nil); err == nil {
		t.Fatalf("SetAffinity to no cpu: got nil error")
	}
}

// TestSetAffinityEveryNode pins a child to each node's CPUs in turn (one
// node here, two in the integration VM).
func TestSetAffinityEveryNode(t *testing.T) {
	testutil.RequireRoot(t)
	topo, err := ReadTopology(DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for _, n := range topo.Nodes {
		if len(n.CPUs) == 0 {
			continue
		}
		if err := SetAffinity(cmd.Process.Pid, n.CPUs); err != nil {
			t.Fatalf("node %d: %v", n.ID, err)
		}
		if got, err := Affinity(cmd.Process.Pid); err != nil || FormatCPUList(got) != n.CPUList {
			t.Fatalf("node %d: Affinity = %v, %v; want %s", n.ID, got, err, n.CPUList)
		}
	}
}

// bindOnLockedThread binds memory to node on a fresh locked thread and
// returns the policy read back there. The goroutine exits locked, which
// retires the thread: no other goroutine ever runs under the policy.
func bindOnLockedThread(node int) (mode int, nodes []int, err error) {
	type result struct {
		mode  int
		nodes []int
		err   error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		var r result
		if r.err = BindMemory([]int{node}); r.err == nil {
			r.mode, r.nodes, r.err = MemoryPolicy()
		}
		done <- r
	}()
	r := <-done
	return r.mode, r.nodes, r.err
}

func TestBindMemory(t *testing.T) {
	testutil.RequireRoot(t)
	topo, err := ReadTopology(DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range topo.Nodes {
		if n.MemTotal == 0 {
			continue
		}
		mode, nodes, err := bindOnLockedThread(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if mode != unix.MPOL_BIND || !slices.Equal(nodes, []int{n.ID}) {
			t.Fatalf("after BindMemory([%d]): mode %d nodes %v; want mode %d (MPOL_BIND) nodes [%d]", n.ID, mode, nodes, unix.MPOL_BIND, n.ID)
		}
	}
	// The test's own thread keeps the default policy.
	done := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		mode, _, _ := MemoryPolicy()
		done <- mode
	}()
	if mode := <-done; mode != unix.MPOL_DEFAULT {
		t.Errorf("another thread's policy = %d; want MPOL_DEFAULT", mode)
	}
	if err := BindMemory(nil); err == nil {
		t.Fatalf("BindMemory(nil): got nil error")
	}
}
