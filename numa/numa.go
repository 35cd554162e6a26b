// Package numa reads the host's NUMA topology and pins threads and memory to
// a node.
//
// Mechanism: the topology comes from sysfs (/sys/devices/system/node/nodeN/
// cpulist and nodeN/meminfo); a kernel built without CONFIG_NUMA has no such
// directory, and the host is then one node 0 holding every online CPU and all
// of /proc/meminfo. Pinning uses sched_setaffinity(2) for CPUs and
// set_mempolicy(2) with MPOL_BIND for memory (both Linux 2.6+; the calls are
// read back with sched_getaffinity(2) and get_mempolicy(2)). Choose holds the
// placement policy and is pure: it needs no kernel at all.
//
// The portable part (topology parsing, placement) builds everywhere; the
// syscalls live in numa_linux.go and return ErrUnsupported elsewhere.
package numa

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported is returned by the pinning calls on systems other than Linux.
var ErrUnsupported = errors.New("numa: not supported on this OS")

// MaxCPUs bounds the CPU numbers ParseCPUList accepts: the kernel's largest
// NR_CPUS is 8192, so valid CPU numbers are 0..8191.
const MaxCPUs = 8192

// DefaultRoot is where the kernel publishes the NUMA topology.
const DefaultRoot = "/sys/devices/system/node"

// Paths read when the kernel has no NUMA support. Tests swap them.
var (
	cpuOnlinePath   = "/sys/devices/system/cpu/online"
	procMeminfoPath = "/proc/meminfo"
)

// Node is one NUMA node.
type Node struct {
	ID   int
	CPUs []int
	// CPUList is CPUs in the kernel's canonical list format, "0-3,8".
	CPUList string
	// MemTotal and MemFree are in bytes, from nodeN/meminfo.
	MemTotal, MemFree uint64
}

// Topology is the host's NUMA layout.
type Topology struct {
	// Nodes is sorted by ID.
	Nodes []Node
}

// Node returns the node with the given id.
func (t *Topology) Node(id int) (Node, bool) {
	if t == nil {
		return Node{}, false
	}
	for _, n := range t.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// IDs returns the node ids in ascending order.
func (t *Topology) IDs() []int {
	if t == nil {
		return nil
	}
	ids := make([]int, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// ReadTopology reads the NUMA topology under root, normally DefaultRoot
// (tests pass a fake tree). Every nodeN directory must have a cpulist and a
// meminfo file. When root is missing or has no nodeN directories (a kernel
// without CONFIG_NUMA), the result is a single node 0 holding all online
// CPUs, with MemTotal and MemFree from /proc/meminfo.
func ReadTopology(root string) (*Topology, error) {
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read NUMA topology %s: %w", root, err)
	}
	t := &Topology{}
	for _, e := range entries {
		id, ok := nodeID(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		n, err := readNode(dir, id)
		if err != nil {
			return nil, err
		}
		t.Nodes = append(t.Nodes, n)
	}
	if len(t.Nodes) == 0 {
		n, err := readFlatNode()
		if err != nil {
			return nil, fmt.Errorf("no NUMA nodes under %s (kernel without CONFIG_NUMA?): %w", root, err)
		}
		t.Nodes = append(t.Nodes, n)
	}
	slices.SortFunc(t.Nodes, func(a, b Node) int { return a.ID - b.ID })
	return t, nil
}

// nodeID parses "node12" into 12.
func nodeID(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "node")
	if !ok || s == "" || !allDigits(s) || len(s) > 6 {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	return id, err == nil
}

func readNode(dir string, id int) (Node, error) {
	n := Node{ID: id}
	b, err := os.ReadFile(filepath.Join(dir, "cpulist"))
	if err != nil {
		return n, fmt.Errorf("NUMA node %d: %w", id, err)
	}
	if n.CPUs, err = ParseCPUList(string(b)); err != nil {
		return n, fmt.Errorf("NUMA node %d: %s: %w", id, filepath.Join(dir, "cpulist"), err)
	}
	n.CPUList = FormatCPUList(n.CPUs)
	f, err := os.Open(filepath.Join(dir, "meminfo"))
	if err != nil {
		return n, fmt.Errorf("NUMA node %d: %w", id, err)
	}
	defer f.Close()
	mi, err := ParseMeminfo(f)
	if err != nil {
		return n, fmt.Errorf("NUMA node %d: %s: %w", id, f.Name(), err)
	}
	n.MemTotal, n.MemFree = mi.Total, mi.Free
	return n, nil
}

func readFlatNode() (Node, error) {
	n := Node{ID: 0}
	b, err := os.ReadFile(cpuOnlinePath)
	if err != nil {
		return n, err
	}
	if n.CPUs, err = ParseCPUList(string(b)); err != nil {
		return n, fmt.Errorf("%s: %w", cpuOnlinePath, err)
	}
	n.CPUList = FormatCPUList(n.CPUs)
	f, err := os.Open(procMeminfoPath)
	if err != nil {
		return n, err
	}
	defer f.Close()
	mi, err := ParseMeminfo(f)
	if err != nil {
		return n, fmt.Errorf("%s: %w", procMeminfoPath, err)
	}
	n.MemTotal, n.MemFree = mi.Total, mi.Free
	return n, nil
}

// ParseCPUList parses the kernel's CPU (or node) list format, "0-3,8,10-11",
// into sorted, distinct numbers. Surrounding white space (the newline sysfs
// adds) is ignored and an empty list yields an empty slice. It is strict:
// anything else than decimal numbers and ascending ranges separated by
// commas, or a number >= MaxCPUs, is an error.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	cpus := []int{}
	if s == "" {
		return cpus, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return nil, fmt.Errorf("cpu list %q: %w", s, err)
			}
			if b < a {
				return nil, fmt.Errorf("cpu list %q: reversed range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

func parseCPU(s string) (int, error) {
	if s == "" || !allDigits(s) || len(s) > 5 {
		return 0, fmt.Errorf("bad number %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	if n >= MaxCPUs {
		return 0, fmt.Errorf("%d is beyond the largest possible CPU %d", n, MaxCPUs-1)
	}
	return n, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatCPUList formats cpus in the kernel's canonical list format: sorted,
// distinct, runs of two or more as ranges ("0-3,8,10-11"). Negative numbers
// are ignored; nil or empty gives "".
func FormatCPUList(cpus []int) string {
	s := slices.Clone(cpus)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] < 0 {
			i++
			continue
		}
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Meminfo is what clonebot reads of a meminfo file, in bytes.
type Meminfo struct {
	Total, Free uint64
	// Available is MemAvailable: what can be allocated without swapping
	// (free memory plus reclaimable caches). Node files have none: 0.
	Available uint64
}

// ParseMeminfo parses /proc/meminfo ("MemTotal:  24576000 kB") or a
// nodeN/meminfo file ("Node 0 MemTotal:  24576000 kB"). MemTotal is
// required; a missing MemFree or MemAvailable reads as 0.
func ParseMeminfo(r io.Reader) (Meminfo, error) {
	var mi Meminfo
	sc := bufio.NewScanner(r)
	haveTotal := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "Node" {
			f = f[2:]
		}
		if len(f) == 0 {
			continue
		}
		var dst *uint64
		switch f[0] {
		case "MemTotal:":
			dst, haveTotal = &mi.Total, true
		case "MemFree:":
			dst = &mi.Free
		case "MemAvailable:":
			dst = &mi.Available
		default:
			continue
		}
		if len(f) != 3 || f[2] != "kB" {
			return Meminfo{}, fmt.Errorf("meminfo: malformed line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || kb > 1<<53 {
			return Meminfo{}, fmt.Errorf("meminfo: malformed line %q", sc.Text())
		}
		*dst = kb * 1024
	}
	if err := sc.Err(); err != nil {
		return Meminfo{}, fmt.Errorf("meminfo: %w", err)
	}
	if !haveTotal {
		return Meminfo{}, errors.New("meminfo: no MemTotal line")
	}
	return mi, nil
}

// ReadMeminfo reads /proc/meminfo.
func ReadMeminfo() (Meminfo, error) {
	f, err := os.Open(procMeminfoPath)
	if err != nil {
		return Meminfo{}, err
	}
	defer f.Close()
	return ParseMeminfo(f)
}
