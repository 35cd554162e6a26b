package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ErrUnsupported is returned by FS methods on operating systems without a
// Linux /proc.
var ErrUnsupported = errors.New("proc: not supported on this OS")

// ParseError reports malformed proc file contents.
type ParseError struct {
	// Path is the file that was parsed, or "" when the input was a plain
	// io.Reader handed to a Parse function.
	Path string
	// Line is the 1-based line number of the bad line, or 0 when the error
	// concerns the file as a whole (for example a required field is missing).
	Line int
	// Text is the offending line or token, clipped to maxErrText bytes.
	Text string
	// Err is the underlying cause, such as a *strconv.NumError or
	// bufio.ErrTooLong.
	Err error
}

func (e *ParseError) Error() string {
	where := e.Path
	if where == "" {
		where = "input"
	}
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	msg := fmt.Sprintf("parse %s: %v", where, e.Err)
	if e.Text != "" {
		msg += fmt.Sprintf(" (in %q)", e.Text)
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *ParseError) Unwrap() error { return e.Err }

const (
	// maxLine bounds the length of a single line of any proc file we parse.
	// The longest legitimate lines are maps and numa_maps entries carrying a
	// PATH_MAX path, which numa_maps may escape to four times its length.
	maxLine = 256 << 10
	// maxErrText bounds ParseError.Text.
	maxErrText = 128
)

func clip(s string) string {
	if len(s) > maxErrText {
		return s[:maxErrText] + "..."
	}
	return s
}

func parseErr(line int, text string, format string, args ...any) *ParseError {
	return &ParseError{Line: line, Text: clip(text), Err: fmt.Errorf(format, args...)}
}

// eachLine calls fn for every line of r (without the newline). An error from
// fn becomes a *ParseError for that line; a line longer than maxLine becomes
// one wrapping bufio.ErrTooLong. Errors reading r are returned as they are.
func eachLine(r io.Reader, fn func(line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	n := 0
	for sc.Scan() {
		n++
		if err := fn(sc.Text()); err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				if pe.Line == 0 {
					pe.Line = n
				}
				return pe
			}
			return &ParseError{Line: n, Text: clip(sc.Text()), Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &ParseError{Line: n + 1, Err: fmt.Errorf("line longer than %d bytes: %w", maxLine, err)}
		}
		return err
	}
	return nil
}
