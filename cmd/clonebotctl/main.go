// Command clonebotctl is the command-line client of clonebotd: it clones a
// running process tree, moves a server's traffic to a clone of itself
// (takeover) or to a new binary that inherits its sockets (upgrade), follows
// these operations' events, runs commands inside a clone's namespaces,
// lists, inspects and removes clones, and reports what the host supports.
// It talks HTTP/JSON to the daemon's unix socket.
//
// Exit status: 0 on success, 1 when an operation failed, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/clonebot/clonebot/api"
)

const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run executes the command line args and returns the exit status. env looks
// up environment variables.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	// Interrupting a request closes its connection, so the daemon sees it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a := &app{stdout: stdout, stderr: stderr, now: time.Now}
	root := a.rootCmd(env)
	if args == nil {
		args = []string{} // cobra reads os.Args for a nil slice
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)

	var f failure
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &f):
		if !errors.Is(err, errReported) {
			a.report("", f.err)
		}
		return exitFailed
	}
	// Everything else comes from parsing the command line.
	fmt.Fprintf(stderr, "clonebotctl: %v\n", err)
	if cmd == nil {
		cmd = root
	}
	if cmd.HasParent() {
		fmt.Fprintf(stderr, "Usage: %s\n", cmd.UseLine())
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// failure is an error of a command that ran: exit status 1.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// errReported is a failure whose details are already on stderr.
var errReported = errors.New("failed")

// report writes err to stderr as "clonebotctl: <prefix><message>" and, when
// there is one, "hint: <hint>" on the next line.
func (a *app) report(prefix string, err error) {
	msg, hint := a.explain(err)
	fmt.Fprintf(a.stderr, "clonebotctl: %s%s\n", prefix, msg)
	if hint != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", hint)
	}
}

// explain splits err into what went wrong and what to do about it.
func (a *app) explain(err error) (msg, hint string) {
	var ce *api.ConnError
	var ae *api.Error
	var h hinted
	switch {
	case errors.As(err, &h):
		return h.err.Error(), h.hint
	case errors.As(err, &ce):
		return ce.Message(), ce.Hint()
	case errors.As(err, &ae):
		if ae.Message == "" {
			return ae.Error(), ""
		}
		return ae.Message, ae.Hint
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from clonebotd at %s within %v", a.socket, a.wait),
			"raise --timeout"
	case errors.Is(err, context.Canceled):
		return "interrupted", ""
	}
	return err.Error(), ""
}
