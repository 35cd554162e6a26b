//go:build linux

package numa

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cpuSetSize is how many CPUs a unix.CPUSet can name.
const cpuSetSize = len(unix.CPUSet{}) * 64

// maskWords sizes the node masks handed to the mempolicy calls: 4096 nodes,
// four times the kernel's largest MAX_NUMNODES.
const maskWords = 64

// SetAffinity sets the CPU affinity of thread tid (a TID or a PID, which names
// its main thread; 0 is the calling thread) to cpus, then reads it back with
// sched_getaffinity and fails unless the kernel kept exactly cpus.
func SetAffinity(tid int, cpus []int) error {
	want := FormatCPUList(cpus)
	if len(cpus) == 0 {
		return fmt.Errorf("set CPU affinity of tid %d: empty CPU list", tid)
	}
	var set unix.CPUSet
	for _, c := range cpus {
		if c < 0 || c >= cpuSetSize {
			return fmt.Errorf("set CPU affinity of tid %d to %s: CPU %d is outside 0-%d", tid, want, c, cpuSetSize-1)
		}
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		hint := ""
		switch {
		case errors.Is(err, unix.EINVAL):
			hint = " (CPUs offline or outside the thread's cpuset)"
		case errors.Is(err, unix.ESRCH):
			hint = " (no such thread)"
		}
		return fmt.Errorf("set CPU affinity of tid %d to %s%s: %w", tid, want, hint, err)
	}
	got, err := Affinity(tid)
	if err != nil {
		return fmt.Errorf("set CPU affinity of tid %d to %s: read back: %w", tid, want, err)
	}
	if g := FormatCPUList(got); g != want {
		return fmt.Errorf("set CPU affinity of tid %d to %s: kernel kept %s (CPUs offline or restricted by a cpuset?)", tid, want, g)
	}
	return nil
}

// Affinity returns the CPUs thread tid may run on (0 is the calling thread).
func Affinity(tid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, fmt.Errorf("get CPU affinity of tid %d: %w", tid, err)
	}
	cpus := []int{}
	for c := 0; c < cpuSetSize; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// BindMemory sets the memory policy of the CALLING THREAD to MPOL_BIND on
// nodes with set_mempolicy(2), then reads it back with get_mempolicy(2).
//
// The policy belongs to one OS thread: callers must runtime.LockOSThread
// before calling and keep the thread locked while it matters (or let the
// goroutine exit locked, which retires the thread). Children forked or
// cloned from that thread inherit the policy.
func BindMemory(nodes []int) error {
	want := FormatCPUList(nodes)
	if len(nodes) == 0 {
		return errors.New("bind memory: empty node list")
	}
	var mask [maskWords]uint64
	for _, n := range nodes {
		if n < 0 || n >= maskWords*64 {
			return fmt.Errorf("bind memory to nodes %s: node %d out of range", want, n)
		}
		mask[n/64] |= 1 << (n % 64)
	}
	// The kernel reads maxnode-1 bits (a historic off-by-one), hence the +1.
	_, _, errno := unix.Syscall(unix.SYS_SET_MEMPOLICY, unix.MPOL_BIND,
		uintptr(unsafe.Pointer(&mask[0])), uintptr(maskWords*64+1))
	if errno != 0 {
		hint := ""
		if errno == unix.EINVAL {
			hint = " (nodes without memory, or outside the thread's cpuset.mems)"
		}
		return fmt.Errorf("bind memory to nodes %s with set_mempolicy(MPOL_BIND)%s: %w", want, hint, errno)
	}
	mode, got, err := MemoryPolicy()
	if err != nil {
		return fmt.Errorf("bind memory to nodes %s: read back: %w", want, err)
	}
	if mode&^(unix.MPOL_F_STATIC_NODES|unix.MPOL_F_RELATIVE_NODES|unix.MPOL_F_NUMA_BALANCING) != unix.MPOL_BIND || !slices.Equal(got, nodes2set(nodes)) {
		return fmt.Errorf("bind memory to nodes %s: kernel reports mode %d on nodes %s", want, mode, FormatCPUList(got))
	}
	return nil
}

func nodes2set(nodes []int) []int {
	s := slices.Clone(nodes)
	slices.Sort(s)
	return slices.Compact(s)
}

// MemoryPolicy returns the calling thread's memory policy from
// get_mempolicy(2): the mode (unix.MPOL_DEFAULT, unix.MPOL_BIND, ..., with any
// MPOL_F_* mode flags the kernel reports or'ed in) and its nodes, ascending.
func MemoryPolicy() (mode int, nodes []int, err error) {
	var m int32
	var mask [maskWords]uint64
	_, _, errno := unix.Syscall6(unix.SYS_GET_MEMPOLICY, uintptr(unsafe.Pointer(&m)),
		uintptr(unsafe.Pointer(&mask[0])), uintptr(maskWords*64+1), 0, 0, 0)
	if errno != 0 {
		return 0, nil, fmt.Errorf("get_mempolicy: %w", errno)
	}
	nodes = []int{}
	for i := 0; i < maskWords*64; i++ {
		if mask[i/64]&(1<<(i%64)) != 0 {
			nodes = append(nodes, i)
		}
	}
	return int(m), nodes, nil
}
