// Package journal speaks systemd-journald's stdout stream protocol, the one
// sd_journal_stream_fd(3) and systemd's StandardOutput=journal use: a unix
// stream connection to /run/systemd/journal/stdout that starts with a
// header of seven lines (identifier, unit ID, priority, level prefix,
// forward to syslog, to kmsg, to console), after which every line written
// is a journal entry. journald takes the sender's identity (PID, cgroup,
// unit) from the credentials of the process that connected, and newer
// versions (seen with systemd 252) from each writer's SCM_CREDENTIALS.
//
// clonebot uses it to give a clone journal streams of its own in place of
// the original's, which CRIU cannot copy.
package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// DefaultStdoutSocket is where journald accepts stdout streams.
const DefaultStdoutSocket = "/run/systemd/journal/stdout"

// ErrUnsupported is returned on systems without unix sockets.
var ErrUnsupported = errors.New("journal: not supported on this OS")

// Syslog priorities (LOG_*) for StreamHeader.Priority.
const (
	PriorityErr    = 3
	PriorityNotice = 5
	PriorityInfo   = 6
	PriorityDebug  = 7
)

// StreamHeader is what a stream tells journald before its first line.
type StreamHeader struct {
	// Identifier is every line's SYSLOG_IDENTIFIER ("" for none); it must
	// not contain a newline.
	Identifier string
	// UnitID is a unit name journald uses, for root senders only, when it
	// cannot find the sender's unit from its cgroup; usually "".
	UnitID string
	// Priority is the syslog priority (0..7) of lines without a "<N>"
	// prefix; systemd's default for services is PriorityInfo. The zero
	// value is LOG_EMERG: set it.
	Priority int
	// LevelPrefix makes journald honour a "<N>" priority prefix on lines
	// (systemd's default, SyslogLevelPrefix=yes).
	LevelPrefix bool
	// Forward each line to syslog, the kernel log, the console as well.
	ForwardToSyslog, ForwardToKmsg, ForwardToConsole bool
}

// ServiceHeader is the header systemd sends for a service's stdout or
// stderr with its defaults (StandardOutput=journal, SyslogLevel=info,
// SyslogLevelPrefix=yes).
func ServiceHeader(identifier string) StreamHeader {
	return StreamHeader{Identifier: identifier, Priority: PriorityInfo, LevelPrefix: true}
}

// Marshal returns the header as sent on the wire.
func (h StreamHeader) Marshal() ([]byte, error) {
	for _, f := range []struct{ name, v string }{{"identifier", h.Identifier}, {"unit ID", h.UnitID}} {
		if strings.ContainsAny(f.v, "\n\x00") {
			return nil, fmt.Errorf("journal stream %s %q: must not contain a newline or NUL", f.name, f.v)
		}
	}
	if h.Priority < 0 || h.Priority > 7 {
		return nil, fmt.Errorf("journal stream priority %d: want 0..7", h.Priority)
	}
	var b strings.Builder
	b.WriteString(h.Identifier + "\n")
	b.WriteString(h.UnitID + "\n")
	b.WriteString(strconv.Itoa(h.Priority) + "\n")
	for _, v := range []bool{h.LevelPrefix, h.ForwardToSyslog, h.ForwardToKmsg, h.ForwardToConsole} {
		if v {
			b.WriteString("1\n")
		} else {
			b.WriteString("0\n")
		}
	}
	return []byte(b.String()), nil
}

// MaxHeaderLine bounds one header line, as journald's LINE_MAX does.
const MaxHeaderLine = 48 * 1024

// ReadStreamHeader reads a header from the start of a stream, as journald
// does (what a test's stand-in for journald needs); r is left at the first
// log line.
func ReadStreamHeader(r *bufio.Reader) (StreamHeader, error) {
	var h StreamHeader
	lines := make([]string, 7)
	names := []string{"identifier", "unit ID", "priority", "level prefix", "forward to syslog", "forward to kmsg", "forward to console"}
	for i := range lines {
		var b []byte
		for {
			part, err := r.ReadSlice('\n')
			b = append(b, part...)
			if len(b) > MaxHeaderLine {
				return h, fmt.Errorf("journal stream header: %s line longer than %d bytes", names[i], MaxHeaderLine)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return h, fmt.Errorf("journal stream header: reading the %s line: %w", names[i], err)
			}
			break
		}
		lines[i] = strings.TrimSuffix(string(b), "\n")
	}
	h.Identifier, h.UnitID = lines[0], lines[1]
	p, err := strconv.Atoi(lines[2])
	if err != nil || p < 0 || p > 999 {
		return h, fmt.Errorf("journal stream header: priority %q is not a number 0..999", lines[2])
	}
	h.Priority = p
	for i, dst := range []*bool{&h.LevelPrefix, &h.ForwardToSyslog, &h.ForwardToKmsg, &h.ForwardToConsole} {
		v, err := parseBool(lines[3+i])
		if err != nil {
			return h, fmt.Errorf("journal stream header: %s: %w", names[3+i], err)
		}
		*dst = v
	}
	return h, nil
}

// parseBool accepts what systemd's parse_boolean does.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}
