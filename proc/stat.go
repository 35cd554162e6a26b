package proc

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PFKthread is the PF_KTHREAD bit of the task flags (field 9 of
// /proc/PID/stat): the task is a kernel thread.
const PFKthread = 0x00200000

// maxStat bounds how much of a stat file ParseStat reads. A real one is a
// few hundred bytes; comm is at most 64 bytes even for workqueue workers.
const maxStat = 64 << 10

// Stat is the part of /proc/PID/stat clonebot needs.
type Stat struct {
	// PID is the task ID (field 1).
	PID int
	// Comm is the command name (field 2) without its parentheses. It is
	// printed unescaped, so it may contain spaces, ')' and even newlines.
	Comm string
	// State is the one-letter scheduler state (field 3), as in Status.State.
	State byte
	// PPID is the parent's PID (field 4).
	PPID int
	// Flags is the kernel's PF_* task flags word (field 9).
	Flags uint32
	// NumThreads is the number of threads in the thread group (field 20).
	NumThreads int
	// StartTime is when the task started, in clock ticks (USER_HZ, normally
	// 100 per second) since boot (field 22). Together with PID it identifies
	// a process across PID reuse.
	StartTime uint64
}

// ParseStat parses /proc/PID/stat. Comm is taken to run from the first '(' to
// the last ')', which is the only reliable way to delimit it.
func ParseStat(r io.Reader) (*Stat, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxStat+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStat {
		return nil, &ParseError{Line: 1, Err: fmt.Errorf("stat longer than %d bytes", maxStat)}
	}
	line := string(b)
	open := strings.IndexByte(line, '(')
	end := strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return nil, parseErr(1, line, "no (comm) field")
	}
	s := &Stat{Comm: line[open+1 : end]}
	if s.PID, err = strconv.Atoi(strings.TrimSpace(line[:open])); err != nil {
		return nil, parseErr(1, line, "field 1 (pid): %w", err)
	}
	// rest[0] is field 3; field n is rest[n-3].
	rest := strings.Fields(line[end+1:])
	if len(rest) < 22-2 {
		return nil, parseErr(1, line, "got %d fields after comm; want at least %d", len(rest), 22-2)
	}
	if len(rest[0]) != 1 {
		return nil, parseErr(1, line, "field 3 (state) is %q; want one letter", rest[0])
	}
	s.State = rest[0][0]
	if s.PPID, err = strconv.Atoi(rest[4-3]); err != nil {
		return nil, parseErr(1, line, "field 4 (ppid): %w", err)
	}
	flags, err := strconv.ParseUint(rest[9-3], 10, 32)
	if err != nil {
		return nil, parseErr(1, line, "field 9 (flags): %w", err)
	}
	s.Flags = uint32(flags)
	if s.NumThreads, err = strconv.Atoi(rest[20-3]); err != nil {
		return nil, parseErr(1, line, "field 20 (num_threads): %w", err)
	}
	if s.StartTime, err = strconv.ParseUint(rest[22-3], 10, 64); err != nil {
		return nil, parseErr(1, line, "field 22 (starttime): %w", err)
	}
	return s, nil
}

// IsKernelThread reports whether the task is a kernel thread (PF_KTHREAD is
// set). Kernel threads have no user memory and can never be cloned.
func (s *Stat) IsKernelThread() bool { return s.Flags&PFKthread != 0 }
