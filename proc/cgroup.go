package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CgroupEntry is one line of /proc/PID/cgroup: "0::/a/b" (cgroup v2),
// "4:memory:/x" or "9:name=systemd:/" (v1 hierarchies).
type CgroupEntry struct {
	// ID is the hierarchy ID; 0 is the unified (v2) hierarchy.
	ID int
	// Controllers are the v1 controllers bound to the hierarchy, such as
	// ["cpu", "cpuacct"] or ["name=systemd"]; nil for the v2 hierarchy.
	Controllers []string
	// Path is the cgroup's path relative to the hierarchy's root as seen from
	// the reader's cgroup namespace. It may contain ':'.
	Path string
}

// ParseCgroup parses /proc/PID/cgroup.
func ParseCgroup(r io.Reader) ([]CgroupEntry, error) {
	var out []CgroupEntry
	err := eachLine(r, func(line string) error {
		if line == "" {
			return nil
		}
		id, rest, ok1 := strings.Cut(line, ":")
		ctrl, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return errors.New("want ID:controllers:path")
		}
		n, err := strconv.Atoi(id)
		if err != nil || n < 0 {
			return fmt.Errorf("hierarchy ID %q is not a non-negative integer", id)
		}
		e := CgroupEntry{ID: n, Path: path}
		if ctrl != "" {
			e.Controllers = strings.Split(ctrl, ",")
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UnifiedPath returns the cgroup v2 path (the "0::" line) and whether there
// was one. A process on a v1-only host has none.
func UnifiedPath(entries []CgroupEntry) (string, bool) {
	for _, e := range entries {
		if e.ID == 0 && len(e.Controllers) == 0 {
			return e.Path, true
		}
	}
	return "", false
}

// ParseChildren parses /proc/PID/task/TID/children: the space-separated PIDs
// of the thread's children, e.g. "12 34 ". It returns nil when there are none.
// Only children whose parent is that very thread are listed, so a process's
// children are the union over its threads (see FS.Children).
func ParseChildren(r io.Reader) ([]int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64), 64)
	sc.Split(bufio.ScanWords)
	var out []int
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil || n <= 0 {
			return nil, &ParseError{Line: 1, Text: clip(sc.Text()), Err: errors.New("not a PID")}
		}
		out = append(out, n)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: 1, Err: fmt.Errorf("token is not a PID: %w", err)}
		}
		return nil, err
	}
	return out, nil
}
