package proc

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps: a virtual memory area.
type Mapping struct {
	// Start and End delimit the area [Start, End).
	Start, End uint64
	// Perms is the four-letter protection and sharing, such as "r-xp":
	// read, write, execute, then 'p' private or 's' shared.
	Perms string
	// Offset is the file offset the area maps, 0 for anonymous memory.
	Offset uint64
	// Dev is the backing device as "major:minor" in hex, "00:00" for none.
	Dev string
	// Inode is the backing file's inode, 0 for anonymous memory.
	Inode uint64
	// Path is the backing file, a pseudo-path such as "[heap]", "[stack]",
	// "[vdso]" or "[anon:name]", or "" for anonymous memory. A deleted file
	// keeps its " (deleted)" suffix. The kernel escapes only a newline in the
	// path (as `\012`); that escape is undone.
	Path string
}

// Size returns the length of the area in bytes.
func (m Mapping) Size() uint64 {
	if m.End < m.Start {
		return 0
	}
	return m.End - m.Start
}

// ParseMaps parses /proc/PID/maps.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	err := eachLine(r, func(line string) error {
		if line == "" {
			return nil
		}
		m, err := parseMapping(line)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func parseMapping(line string) (Mapping, error) {
	var m Mapping
	var f [5]string
	rest := line
	for i := range f {
		rest = strings.TrimLeft(rest, " ")
		var ok bool
		f[i], rest, ok = strings.Cut(rest, " ")
		if f[i] == "" || (!ok && i < len(f)-1) {
			return m, fmt.Errorf("got %d fields; want at least 5", i)
		}
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return m, fmt.Errorf("address range %q has no '-'", f[0])
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("start address: %w", err)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("end address: %w", err)
	}
	if m.End < m.Start {
		return m, fmt.Errorf("end %#x is below start %#x", m.End, m.Start)
	}
	if len(f[1]) != 4 {
		return m, fmt.Errorf("perms %q; want 4 letters", f[1])
	}
	m.Perms = f[1]
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, fmt.Errorf("offset: %w", err)
	}
	if !strings.Contains(f[3], ":") {
		return m, fmt.Errorf("device %q; want major:minor", f[3])
	}
	m.Dev = f[3]
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, fmt.Errorf("inode: %w", err)
	}
	m.Path = unescapeOctal(strings.TrimLeft(rest, " "), "\n")
	return m, nil
}

// NUMAMap is one line of /proc/PID/numa_maps, e.g.
// "7f12c0000000 default anon=3 dirty=3 active=0 N0=3 kernelpagesize_kB=4":
// the memory policy and per-node residency of the area starting at Addr.
type NUMAMap struct {
	// Addr is the start address of the area, matching a Mapping.Start.
	Addr uint64
	// Policy is the memory policy as the kernel prints it, for example
	// "default", "bind:0-1", "interleave=static:0,2", "prefer (many):1" or
	// "weighted interleave:0-1" (the last two contain a space).
	Policy string
	// Path is the backing file from "file=", with the kernel's octal escapes
	// of space, tab, newline and '=' undone; "" for anonymous memory.
	Path string
	// Anon, Dirty and Mapped are page counts: anonymous, dirty, and mapped
	// from a file.
	Anon, Dirty, Mapped int64
	// Nodes maps a NUMA node number to the pages of the area resident on it
	// (the N<node>=<pages> fields). It is nil when no page is resident.
	Nodes map[int]int64
	// PageSizeKB is the kernel page size backing the area in KiB: 4 normally,
	// 2048 or 1048576 for hugetlb areas. 0 when not printed.
	PageSizeKB int64
	// Heap, Stack and Huge mark the process heap, the main thread's stack and
	// hugetlb areas.
	Heap, Stack, Huge bool
}

// ParseNUMAMaps parses /proc/PID/numa_maps. Fields it does not know are
// ignored.
func ParseNUMAMaps(r io.Reader) ([]NUMAMap, error) {
	var out []NUMAMap
	err := eachLine(r, func(line string) error {
		if strings.TrimSpace(line) == "" {
			return nil
		}
		m, err := parseNUMAMap(line)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func parseNUMAMap(line string) (NUMAMap, error) {
	var m NUMAMap
	// The path is escaped (no raw spaces), so fields split cleanly; only the
	// policy may span two fields.
	f := strings.Fields(line)
	if len(f) < 2 {
		return m, errors.New("want an address and a policy")
	}
	var err error
	if m.Addr, err = strconv.ParseUint(f[0], 16, 64); err != nil {
		return m, fmt.Errorf("address: %w", err)
	}
	// The policy runs up to the first field numa_maps is known to print:
	// "weighted interleave:0", "prefer (many):0". Unknown fields after that
	// are ignored.
	policyEnd := len(f)
	for i := 2; i < len(f); i++ {
		known, err := m.setField(f[i])
		if err != nil {
			return m, err
		}
		if known && policyEnd == len(f) {
			policyEnd = i
		}
	}
	m.Policy = strings.Join(f[1:policyEnd], " ")
	return m, nil
}

// setField applies one "key=value" or flag field of a numa_maps line and
// reports whether it was a field numa_maps is known to print.
func (m *NUMAMap) setField(tok string) (bool, error) {
	switch tok {
	case "heap":
		m.Heap = true
		return true, nil
	case "stack":
		m.Stack = true
		return true, nil
	case "huge":
		m.Huge = true
		return true, nil
	}
	key, val, ok := strings.Cut(tok, "=")
	if !ok {
		return false, nil
	}
	var dst *int64
	switch key {
	case "file":
		m.Path = unescapeOctal(val, "\n\t= ")
		return true, nil
	case "anon":
		dst = &m.Anon
	case "dirty":
		dst = &m.Dirty
	case "mapped":
		dst = &m.Mapped
	case "kernelpagesize_kB":
		dst = &m.PageSizeKB
	case "mapmax", "swapcache", "active", "writeback":
		return true, nil
	default:
		node, ok := nodeKey(key)
		if !ok {
			return false, nil
		}
		n, err := parseCount(val)
		if err != nil {
			return false, fmt.Errorf("field %s: %w", key, err)
		}
		if m.Nodes == nil {
			m.Nodes = make(map[int]int64)
		}
		m.Nodes[node] = n
		return true, nil
	}
	n, err := parseCount(val)
	if err != nil {
		return false, fmt.Errorf("field %s: %w", key, err)
	}
	*dst = n
	return true, nil
}

// nodeKey parses "N<node>".
func nodeKey(key string) (int, bool) {
	if len(key) < 2 || key[0] != 'N' {
		return 0, false
	}
	for _, c := range key[1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(key[1:])
	return n, err == nil
}

func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("negative count %d", n)
	}
	return n, nil
}

// NodeBytes sums resident bytes per NUMA node over maps: for each area,
// pages on the node times PageSizeKB*1024 (4 KiB pages are assumed where
// PageSizeKB is 0). The result is never nil.
func NodeBytes(maps []NUMAMap) map[int]uint64 {
	out := make(map[int]uint64)
	for _, m := range maps {
		ps := uint64(m.PageSizeKB)
		if m.PageSizeKB <= 0 {
			ps = 4
		}
		for node, pages := range m.Nodes {
			if pages > 0 {
				out[node] += uint64(pages) * ps * 1024
			}
		}
	}
	return out
}

// unescapeOctal undoes the kernel's seq_path escaping, which writes each byte
// of esc as a backslash and three octal digits. Other backslashes are kept:
// the kernel does not escape a backslash itself, so only these sequences can
// be escapes.
func unescapeOctal(s, esc string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			c := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			if strings.IndexByte(esc, c) >= 0 {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
