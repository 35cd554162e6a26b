// Package criu drives CRIU (>= 4.2) through go-criu's swrk RPC: version and
// feature probes, dump with --leave-running and --tcp-close, and restore with
// --tcp-close as a sibling of the caller (so the caller can be PID 1 of a new
// PID namespace and the restored tree its child).
//
// CRIU failures come back as *Error, which quotes the error lines of CRIU's log,
// names the log file, and adds a remedy for the causes we know.
package criu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MinVersion is the oldest CRIU that works on the kernels clonebot targets:
// Linux >= 6.16 refuses SO_PASSCRED/SO_PASSSEC on TCP sockets, and CRIU < 4.2
// then fails on every TCP socket.
const MinVersion = 40200

// ErrUnsupported is returned on systems without CRIU support.
var ErrUnsupported = errors.New("criu: not supported on this OS")

// FormatVersion turns 40201 into "4.2.1".
func FormatVersion(v int) string {
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

// Error is a failed CRIU operation.
type Error struct {
	Op      string // "dump", "restore", "check"
	PID     int    // the target (dump) or 0
	Errno   int    // CRIU's cr_errno, 0 when unknown
	Message string // CRIU's cr_errmsg or the RPC failure
	LogPath string // CRIU's log for this operation
	// Lines are the error lines of the log, at most MaxQuotedLines.
	Lines []string
	// Hint is a remedy for a known cause, or "".
	Hint string
	Err  error
}

// MaxQuotedLines bounds how much of CRIU's log an Error quotes.
const MaxQuotedLines = 6

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "criu %s", e.Op)
	if e.PID > 0 {
		fmt.Fprintf(&b, " of PID %d", e.PID)
	}
	b.WriteString(" failed")
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Errno != 0 {
		fmt.Fprintf(&b, " (errno %d)", e.Errno)
	}
	if len(e.Lines) > 0 {
		fmt.Fprintf(&b, "; log: %s", strings.Join(e.Lines, " | "))
	}
	if e.LogPath != "" {
		fmt.Fprintf(&b, "; full log: %s", e.LogPath)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// harmless are error lines CRIU prints on every run on hosts without
// CAP_SYS_RESOURCE; quoting them would only mislead.
var harmless = []string{
	"Can't setup RLIMIT_NOFILE for self",
}

// knownCauses maps a fragment of a CRIU log line to a remedy.
var knownCauses = []struct{ fragment, hint string }{
	{"Unsupported proto 262", "the target listens with MPTCP (Go >= 1.24's default), which CRIU cannot dump: start it with GODEBUG=multipathtcp=0 or ListenConfig.SetMultipathTCP(false)"},
	{"Can't get rlimit", "the tree runs under another uid and the daemon lacks CAP_SYS_RESOURCE: run clonebotd with CAP_SYS_RESOURCE, or run the target as root"},
	{"Address already in use", "a listener of the target lacks SO_REUSEPORT, so the clone cannot bind beside it"},
	{"No space left on device", "the image directory is full: free space on --image-dir or give it a larger tmpfs"},
	{"Unexpected rt vDSO area bounds", "this CRIU is too old for the kernel: install CRIU >= 4.2 (make deps)"},
	{"Can't get 1:34 opt", "this CRIU is too old for Linux >= 6.16: install CRIU >= 4.2 (make deps)"},
	{"Iptables configuration failed", "the network lock needs iptables; clonebot dumps with tcp-close, which needs none"},
	{"is ptraced", "another tracer (a debugger, strace) is attached to the target: detach it and retry"},
	{"Tty is not session leader", "the target shares a terminal session it does not lead"},
	{"io_uring", "the target uses io_uring, which CRIU cannot dump"},
	{"has bad size", "the original changed a file it holds open between the checkpoint and the restore; clonebot gives the clone its own stdout/stderr, but other files must be opened with O_APPEND or left unchanged"},
	{"Can't dump name-less external socket", "the target holds a unix datagram socket connected to an unnamed socket outside its tree (one end of a socketpair), which CRIU cannot dump: clone the process at the other end with it"},
	{"Can't dump half of stream unix connection", "the target has a unix stream connection to a process outside its tree (a database, a log daemon), which a clone cannot share"},
}

// ReadLogErrors returns the error lines of a CRIU log (those with "Error (",
// at most max, the last ones kept since CRIU reports the cause last), and a
// remedy for the first known cause found in the whole log.
func ReadLogErrors(r io.Reader, max int) (lines []string, hint string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if hint == "" {
			for _, kc := range knownCauses {
				if strings.Contains(line, kc.fragment) {
					hint = kc.hint
					break
				}
			}
		}
		if !strings.Contains(line, "Error (") || isHarmless(line) {
			continue
		}
		lines = append(lines, trimTimestamp(line))
		if max > 0 && len(lines) > max {
			lines = lines[1:]
		}
	}
	return lines, hint
}

func isHarmless(line string) bool {
	for _, h := range harmless {
		if strings.Contains(line, h) {
			return true
		}
	}
	return false
}

// trimTimestamp drops CRIU's "(00.012345) " prefix.
func trimTimestamp(line string) string {
	if strings.HasPrefix(line, "(") {
		if i := strings.Index(line, ") "); i > 0 && i < 16 {
			return line[i+2:]
		}
	}
	return line
}

// newError builds an *Error for op from the RPC failure and the log at logPath.
func newError(op string, pid int, logPath string, cause error) *Error {
	e := &Error{Op: op, PID: pid, LogPath: logPath, Err: cause}
	if errors.Is(cause, io.EOF) {
		e.Message = "criu exited without answering"
	} else if cause != nil {
		e.Errno, e.Message = parseRPCError(cause.Error())
		// CRIU's cr_errmsg is its first error line, often a harmless one;
		// the log lines below say what really failed.
		if isHarmless(e.Message) {
			e.Message = ""
		}
		e.Message = strings.TrimSpace(trimTimestamp(e.Message))
	}
	if f, err := os.Open(logPath); err == nil {
		e.Lines, e.Hint = ReadLogErrors(f, MaxQuotedLines)
		f.Close()
	}
	return e
}

// parseRPCError splits go-criu's "operation failed (msg:X err:N)".
func parseRPCError(s string) (int, string) {
	const pre = "operation failed (msg:"
	i := strings.Index(s, pre)
	if i < 0 {
		return 0, s
	}
	rest := s[i+len(pre):]
	j := strings.LastIndex(rest, " err:")
	if j < 0 {
		return 0, s
	}
	msg := rest[:j]
	n, _ := strconv.Atoi(strings.TrimSuffix(rest[j+len(" err:"):], ")"))
	if msg == "" {
		msg = "operation failed"
	}
	return n, msg
}

// DumpStats are CRIU's figures for one dump (stats-dump), in microseconds.
type DumpStats struct {
	FreezingUS   uint32
	FrozenUS     uint32
	MemdumpUS    uint32
	MemwriteUS   uint32
	PagesScanned uint64
	PagesWritten uint64
	PagesLazy    uint64
}

// RestoreStats are CRIU's figures for one restore (stats-restore).
type RestoreStats struct {
	ForkingUS     uint32
	RestoreUS     uint32
	PagesRestored uint64
}
