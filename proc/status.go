package proc

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Status is /proc/PID/status: the identity, credentials, namespaces, memory and
// signal state of one task (the thread group leader when read as
// /proc/PID/status).
type Status struct {
	// Name is the command name (comm), at most 15 bytes for user tasks, with
	// the kernel's "\n" and "\\" escapes undone.
	Name string
	// State is the one-letter scheduler state: 'R' running, 'S' sleeping,
	// 'D' disk sleep, 'Z' zombie, 'T' stopped, 't' traced, 'X' dead,
	// 'I' idle kernel thread.
	State byte
	// Tgid is the thread group ID (the process ID), Pid the thread ID, PPid
	// the parent's PID and TracerPid the ptrace tracer's PID (0 if none), all
	// as seen from the reader's PID namespace.
	Tgid, Pid, PPid, TracerPid int
	// Uid and Gid hold the real, effective, saved and file-system IDs, in
	// that order.
	Uid, Gid [4]int
	// Threads is the number of threads in the thread group.
	Threads int
	// NSpid is the thread's ID in each PID namespace it belongs to, outermost
	// (the reader's) first. len(NSpid) > 1 means a nested PID namespace and
	// NSpid[len(NSpid)-1] is the ID the task sees for itself.
	NSpid []int
	// Groups are the supplementary group IDs.
	Groups []int
	// NSpgid and NSsid are the process group and session IDs per PID
	// namespace, ordered like NSpid.
	NSpgid, NSsid []int
	// CapEff, CapBnd and CapPrm are the effective, bounding and permitted
	// capability sets as bit masks (bit n is capability n).
	CapEff, CapBnd, CapPrm uint64
	// VmRSS is the resident set size and VmSize the virtual memory size, in
	// bytes (the file gives kB). Both are 0 for kernel threads.
	VmRSS, VmSize uint64
	// RssAnon and RssShmem are the resident anonymous and shared-memory
	// parts of VmRSS, in bytes: the pages a checkpoint writes out (file
	// pages are read back from their files).
	RssAnon, RssShmem uint64
	// CpusAllowedList and MemsAllowedList are the CPUs and NUMA nodes the task
	// may use, in list format such as "0-3,8".
	CpusAllowedList, MemsAllowedList string
	// Kthread reports the "Kthread: 1" line printed by recent kernels. It is
	// false when the line is absent; Stat.IsKernelThread works everywhere.
	Kthread bool
	// SigBlk, SigIgn and SigCgt are the blocked, ignored and caught signal
	// masks (bit n-1 is signal n).
	SigBlk, SigIgn, SigCgt uint64
}

// ParseStatus parses the contents of /proc/PID/status. Unknown lines are
// ignored; the Name, State and Pid lines are required.
func ParseStatus(r io.Reader) (*Status, error) {
	s := &Status{}
	var haveName, haveState, havePid bool
	err := eachLine(r, func(line string) error {
		if line == "" {
			return nil
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New("no ':' separator")
		}
		if key == "Name" {
			// Keep the name verbatim apart from the tab: comm may contain
			// spaces and tabs of its own.
			s.Name = unescapeName(strings.TrimPrefix(val, "\t"))
			haveName = true
			return nil
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "State":
			if val == "" {
				return errors.New("empty State")
			}
			s.State = val[0]
			haveState = true
		case "Tgid":
			s.Tgid, err = strconv.Atoi(val)
		case "Pid":
			s.Pid, err = strconv.Atoi(val)
			havePid = true
		case "PPid":
			s.PPid, err = strconv.Atoi(val)
		case "TracerPid":
			s.TracerPid, err = strconv.Atoi(val)
		case "Uid":
			s.Uid, err = parseIDs(val)
		case "Gid":
			s.Gid, err = parseIDs(val)
		case "Threads":
			s.Threads, err = strconv.Atoi(val)
		case "NSpid":
			s.NSpid, err = parseInts(val)
		case "Groups":
			s.Groups, err = parseInts(val)
		case "NSpgid":
			s.NSpgid, err = parseInts(val)
		case "NSsid":
			s.NSsid, err = parseInts(val)
		case "CapEff":
			s.CapEff, err = strconv.ParseUint(val, 16, 64)
		case "CapBnd":
			s.CapBnd, err = strconv.ParseUint(val, 16, 64)
		case "CapPrm":
			s.CapPrm, err = strconv.ParseUint(val, 16, 64)
		case "SigBlk":
			s.SigBlk, err = strconv.ParseUint(val, 16, 64)
		case "SigIgn":
			s.SigIgn, err = strconv.ParseUint(val, 16, 64)
		case "SigCgt":
			s.SigCgt, err = strconv.ParseUint(val, 16, 64)
		case "VmRSS":
			s.VmRSS, err = parseKB(val)
		case "VmSize":
			s.VmSize, err = parseKB(val)
		case "RssAnon":
			s.RssAnon, err = parseKB(val)
		case "RssShmem":
			s.RssShmem, err = parseKB(val)
		case "Cpus_allowed_list":
			s.CpusAllowedList = val
		case "Mems_allowed_list":
			s.MemsAllowedList = val
		case "Kthread":
			switch val {
			case "0":
				s.Kthread = false
			case "1":
				s.Kthread = true
			default:
				err = fmt.Errorf("Kthread is %q; want 0 or 1", val)
			}
		}
		if err != nil {
			return fmt.Errorf("field %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		ok   bool
	}{{"Name", haveName}, {"State", haveState}, {"Pid", havePid}} {
		if !f.ok {
			return nil, &ParseError{Err: fmt.Errorf("missing %s line", f.name)}
		}
	}
	return s, nil
}

// unescapeName undoes the escaping status applies to comm: a newline is
// printed as `\n` and a backslash as `\\`. Other bytes are printed as they are.
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseIDs parses the four whitespace-separated IDs of a Uid or Gid line.
func parseIDs(s string) ([4]int, error) {
	var ids [4]int
	f := strings.Fields(s)
	if len(f) != len(ids) {
		return ids, fmt.Errorf("got %d IDs; want %d", len(f), len(ids))
	}
	for i, v := range f {
		n, err := strconv.Atoi(v)
		if err != nil {
			return ids, err
		}
		ids[i] = n
	}
	return ids, nil
}

// parseInts parses a whitespace-separated list of decimal integers.
func parseInts(s string) ([]int, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, nil
	}
	out := make([]int, len(f))
	for i, v := range f {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// parseKB parses "1756 kB" into bytes.
func parseKB(s string) (uint64, error) {
	num, unit, _ := strings.Cut(s, " ")
	if strings.TrimSpace(unit) != "kB" {
		return 0, fmt.Errorf("unit of %q is not kB", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > math.MaxUint64/1024 {
		return 0, fmt.Errorf("%d kB overflows uint64 bytes", n)
	}
	return n * 1024, nil
}
