// Package fault classifies clonebot's errors by what the caller can do about them.
//
// A *fault.Error keeps the text shown to users (Message, Hint) apart from the
// wrapped cause, and carries a Kind that the daemon maps to an HTTP status in one
// place. Packages return plain wrapped errors; the pipeline wraps the ones a user
// must see with New, naming the PID, the resource and the remedy.
package fault

import (
	"errors"
	"fmt"
)

// Kind says what went wrong from the caller's point of view.
type Kind int

const (
	// Internal is a bug or an unexpected failure of the host: 500.
	Internal Kind = iota
	// Invalid is a malformed or out-of-range request: 400.
	Invalid
	// NotFound names something that does not exist: 404.
	NotFound
	// Conflict is an operation that clashes with one in progress: 409.
	Conflict
	// Refused is a well-formed request that cannot work on this target, found
	// before anything was frozen: 422.
	Refused
	// Forbidden is a caller without the right to act on the target: 403.
	Forbidden
	// Unavailable is a host that cannot clone right now (CRIU missing or
	// broken, daemon shutting down): 503.
	Unavailable
	// Timeout is an operation that ran out of time and was undone: 504.
	Timeout
	// Failed is an operation that was attempted and failed (CRIU error), and
	// was undone: 500 with the cause.
	Failed
)

var kindNames = map[Kind]string{
	Internal:    "internal",
	Invalid:     "invalid_argument",
	NotFound:    "not_found",
	Conflict:    "conflict",
	Refused:     "refused",
	Forbidden:   "forbidden",
	Unavailable: "unavailable",
	Timeout:     "timeout",
	Failed:      "failed",
}

// String returns the wire code of k, e.g. "invalid_argument".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is an error meant to be read by a user.
type Error struct {
	Kind Kind
	// Message says what failed, naming the PID and the resource.
	Message string
	// Hint says what to do about it; may be empty.
	Hint string
	// Err is the underlying cause; may be nil.
	Err error
}

// New returns an *Error of kind k. cause may be nil.
func New(k Kind, msg, hint string, cause error) *Error {
	return &Error{Kind: k, Message: msg, Hint: hint, Err: cause}
}

// Errorf returns an *Error of kind k with a formatted message and no hint.
// A %w verb in format becomes the cause.
func Errorf(k Kind, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Message: err.Error(), Err: errors.Unwrap(err)}
}

// WithHint returns e with hint set, for chaining.
func (e *Error) WithHint(hint string) *Error {
	e.Hint = hint
	return e
}

func (e *Error) Error() string {
	s := e.Message
	if e.Err != nil && !containsCause(s, e.Err) {
		s += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func containsCause(msg string, err error) bool {
	c := err.Error()
	return len(c) > 0 && len(msg) >= len(c) && msg[len(msg)-len(c):] == c
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// As returns the outermost *Error in err's chain, or nil.
func As(err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	return nil
}

// KindOf returns the Kind of the outermost *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	if fe := As(err); fe != nil {
		return fe.Kind
	}
	return Internal
}

// Is reports whether err carries a *Error of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
