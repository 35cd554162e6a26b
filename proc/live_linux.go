//go:build linux

package proc

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// path returns Root/PID/elem...
func (p FS) path(pid int, elem ...string) string {
	return filepath.Join(append([]string{p.root(), strconv.Itoa(pid)}, elem...)...)
}

// Status reads /proc/PID/status.
func (p FS) Status(pid int) (*Status, error) {
	return parseFile(p.path(pid, "status"), ParseStatus)
}

// Stat reads /proc/PID/stat.
func (p FS) Stat(pid int) (*Stat, error) {
	return parseFile(p.path(pid, "stat"), ParseStat)
}

// Maps reads /proc/PID/maps. Reading another process's maps needs
// PTRACE_MODE_READ access to it. A zombie has no mappings.
func (p FS) Maps(pid int) ([]Mapping, error) {
	return parseFile(p.path(pid, "maps"), ParseMaps)
}

// NUMAMaps reads /proc/PID/numa_maps (CONFIG_NUMA kernels only).
func (p FS) NUMAMaps(pid int) ([]NUMAMap, error) {
	return parseFile(p.path(pid, "numa_maps"), ParseNUMAMaps)
}

// FDInfo reads /proc/PID/fdinfo/FD.
func (p FS) FDInfo(pid, fd int) (*FDInfo, error) {
	return parseFile(p.path(pid, "fdinfo", strconv.Itoa(fd)), ParseFDInfo)
}

// Cgroup reads /proc/PID/cgroup.
func (p FS) Cgroup(pid int) ([]CgroupEntry, error) {
	return parseFile(p.path(pid, "cgroup"), ParseCgroup)
}

// NetTCP reads the TCP sockets of the network namespace pid lives in, from
// /proc/PID/net/tcp and then /proc/PID/net/tcp6. A missing tcp6 (IPv6
// disabled) is not an error.
func (p FS) NetTCP(pid int) ([]Socket, error) {
	v4, err := parseFile(p.path(pid, "net", "tcp"), ParseNetTCP)
	if err != nil {
		return nil, err
	}
	v6, err := parseFile(p.path(pid, "net", "tcp6"), ParseNetTCP)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && p.Exists(pid) {
			return v4, nil
		}
		return nil, err
	}
	return append(v4, v6...), nil
}

// FDs lists /proc/PID/fd, reading each descriptor's symlink, sorted by
// number. A descriptor closed between the directory read and its readlink is
// left out. Reading another process's descriptors needs PTRACE_MODE_READ
// access to it.
func (p FS) FDs(pid int) ([]FD, error) {
	return readFDs(p.path(pid, "fd"), os.Readlink)
}

// readFDs does the work of FDs with readlink as a parameter, so tests can
// close a descriptor between the directory read and the readlink.
func readFDs(dir string, readlink func(string) (string, error)) ([]FD, error) {
	names, err := readDirNames(dir)
	if err != nil {
		return nil, err
	}
	fds := make([]FD, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil || n < 0 {
			continue
		}
		link := filepath.Join(dir, name)
		target, err := readlink(link)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // closed since readdir
			}
			return nil, readErr(link, err)
		}
		fds = append(fds, ClassifyFD(n, target))
	}
	slices.SortFunc(fds, func(a, b FD) int { return cmp.Compare(a.Num, b.Num) })
	return fds, nil
}

// Threads lists the thread IDs in /proc/PID/task, sorted.
func (p FS) Threads(pid int) ([]int, error) {
	dir := p.path(pid, "task")
	names, err := readDirNames(dir)
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(names))
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n > 0 {
			tids = append(tids, n)
		}
	}
	slices.Sort(tids)
	return tids, nil
}

// Children returns the PIDs of pid's children: the union of
// task/TID/children over all its threads, sorted and without duplicates.
// Threads that exit meanwhile are skipped; if all of them are gone the
// process is, and the error satisfies errors.Is(err, fs.ErrNotExist).
func (p FS) Children(pid int) ([]int, error) {
	tids, err := p.Threads(pid)
	if err != nil {
		return nil, err
	}
	var kids []int
	read := 0
	for _, tid := range tids {
		path := p.path(pid, "task", strconv.Itoa(tid), "children")
		k, err := parseFile(path, ParseChildren)
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(filepath.Dir(path)); serr == nil {
				return nil, fmt.Errorf("read %s: missing although the thread exists; the kernel needs CONFIG_PROC_CHILDREN", path)
			}
			continue // the thread exited
		}
		if err != nil {
			return nil, err
		}
		read++
		kids = append(kids, k...)
	}
	if read == 0 {
		return nil, fmt.Errorf("read %s: %w", p.path(pid, "task"), fs.ErrNotExist)
	}
	slices.Sort(kids)
	return slices.Compact(kids), nil
}

// Tree returns pid followed by all its descendants, breadth-first, each
// process's children in PID order. Descendants that exit during the walk are
// left out; if pid itself does not exist the error satisfies
// errors.Is(err, fs.ErrNotExist). The result is a snapshot: processes may fork
// or exit as soon as it is taken, so freeze the tree first if that matters.
func (p FS) Tree(pid int) ([]int, error) {
	var out []int
	seen := map[int]bool{pid: true}
	queue := []int{pid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		kids, err := p.Children(cur)
		if err != nil {
			if cur != pid && errors.Is(err, fs.ErrNotExist) {
				continue // exited during the walk
			}
			return nil, err
		}
		out = append(out, cur)
		for _, k := range kids {
			if !seen[k] { // a fake or inconsistent tree must not loop
				seen[k] = true
				queue = append(queue, k)
			}
		}
	}
	return out, nil
}

// SocketHolders returns the PIDs, sorted, of up to max processes (0: no
// bound) holding socket:[inode] open. It reads every process's fds, which
// is slow on a busy host: it is meant for an error message that names the
// other end of a connection. Processes it may not read are skipped.
func (p FS) SocketHolders(inode uint64, max int) ([]int, error) {
	names, err := readDirNames(p.root())
	if err != nil {
		return nil, err
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	var pids []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		fds, err := p.FDs(pid)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if fd.Target == want {
				pids = append(pids, pid)
				break
			}
		}
	}
	slices.Sort(pids)
	if max > 0 && len(pids) > max {
		pids = pids[:max]
	}
	return pids, nil
}

// Cmdline reads /proc/PID/cmdline as its NUL-separated arguments; a kernel
// thread or a zombie has none.
func (p FS) Cmdline(pid int) ([]string, error) {
	path := p.path(pid, "cmdline")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, readErr(path, err)
	}
	return ParseCmdline(b), nil
}

// Exists reports whether /proc/PID exists. That includes zombies, and thread
// IDs, which /proc resolves although it does not list them.
func (p FS) Exists(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.Stat(p.path(pid))
	return err == nil
}

// Alive reports whether PID is a process that has not exited: /proc/PID
// exists and its state is neither zombie (Z) nor dead (X). A process killed a
// moment ago is a zombie until its parent reaps it; its memory and files are
// gone already, so nothing can be taken from it.
func (p FS) Alive(pid int) bool {
	st, err := p.Stat(pid)
	if err != nil {
		return false
	}
	return st.State != 'Z' && st.State != 'X'
}

// parseFile opens path and parses it with parse. A *ParseError gets Path set;
// other errors are wrapped with the path.
func parseFile[T any](path string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, readErr(path, err)
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.Path = path
			return zero, pe
		}
		return zero, readErr(path, err)
	}
	return v, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, readErr(dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, readErr(dir, err)
	}
	return names, nil
}

// readErr wraps err with path, dropping the *os.PathError layer that would
// repeat it. ESRCH, which some proc files return once the process has exited,
// is made to satisfy errors.Is(err, fs.ErrNotExist) too.
func readErr(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("read %s: %w (%w)", path, fs.ErrNotExist, err)
	}
	return fmt.Errorf("read %s: %w", path, err)
}
