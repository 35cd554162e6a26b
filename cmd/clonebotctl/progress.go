package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clonebot/clonebot/api"
)

// progressEnv forces progress on ("1") or off ("0") for clone, takeover and
// upgrade, whatever stderr is; tests set it.
const progressEnv = "CLONEBOT_PROGRESS"

const progressHelp = `When stderr is a terminal, the phases are shown there as they happen, except
with -o json. ` + progressEnv + `=0 hides them; ` + progressEnv + `=1 shows them
even when stderr is not a terminal.`

// Following an operation's events (variables for tests).
var (
	// registerWait is how long a follower retries an operation the daemon
	// does not know yet: the request that starts it may still be on its way.
	registerWait  = 2 * time.Second
	registerRetry = 100 * time.Millisecond
	// tailWait is how long a follower may still print once the request has
	// returned: the daemon ends the stream when the operation ends, and its
	// last events may still be on their way.
	tailWait = 300 * time.Millisecond
)

// operationIDRE is what the daemon accepts as an operation ID.
var operationIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{7,63}$`)

// newOperationID returns "cli-" and 12 random hex digits.
func newOperationID() string {
	b := make([]byte, 6)
	rand.Read(b) // never fails (crypto/rand)
	return "cli-" + hex.EncodeToString(b)
}

// progress reports whether clone, takeover and upgrade show their phases.
func (a *app) progress() bool {
	if a.output != outputTable {
		return false
	}
	switch a.getenv(progressEnv) {
	case "1":
		return true
	case "0":
		return false
	}
	return isTerminal(a.stderr)
}

// operate runs the request do. With progress on, it first gives the request
// an operation ID in *opID (unless --operation set one) and prints that
// operation's events on stderr while do runs. Without, *opID is left as it
// is, and the daemon picks an ID when it is empty.
func (a *app) operate(ctx context.Context, c *api.Client, opID *string, do func() (*api.Clone, error)) (*api.Clone, error) {
	if !a.progress() {
		return do()
	}
	if *opID == "" {
		*opID = newOperationID()
	}
	stop := follow(ctx, c, *opID, func(ev api.Event) error {
		if ev.Phase == "operation" && ev.State == api.EventFailed {
			ev.Message = "" // the error follows, with its hint
		}
		_, err := io.WriteString(a.stderr, formatEvent(ev)+"\n")
		return err
	})
	cl, err := do()
	stop()
	return cl, err
}

// follow calls fn for each event of operation id, from a goroutine, until
// the operation ends, ctx ends or the returned stop is called. Errors only
// end it: progress is best-effort. stop returns once fn is no longer called.
func follow(ctx context.Context, c *api.Client, id string, fn func(api.Event) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	returned := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = events(ctx, c, id, returned, fn)
	}()
	return func() {
		close(returned)
		select {
		case <-done:
		case <-time.After(tailWait):
		}
		cancel()
		<-done
	}
}

// events follows operation id, retrying for registerWait while the daemon
// does not know it, or until giveUp is closed.
func events(ctx context.Context, c *api.Client, id string, giveUp <-chan struct{}, fn func(api.Event) error) error {
	deadline := time.Now().Add(registerWait)
	for {
		err := c.Events(ctx, id, fn)
		if !isNotFound(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-giveUp:
			return err
		case <-time.After(registerRetry):
		}
	}
}

func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && (ae.Code == "not_found" || ae.StatusCode == http.StatusNotFound)
}

// formatEvent writes one progress line: phase, state, elapsed time, MiB
// where known, and the message:
//
//	"  checkpoint  done     0.21s  256.3 MiB  original frozen 180.2 ms"
func formatEvent(ev api.Event) string {
	s := fmt.Sprintf("  %-10s  %-6s  %6s", ev.Phase, ev.State, formatElapsed(ev.ElapsedMS))
	if ev.Bytes > 0 {
		s += fmt.Sprintf("  %.1f MiB", float64(ev.Bytes)/(1<<20))
	}
	if ev.Message != "" {
		s += "  " + ev.Message
	}
	return strings.TrimRight(s, " ")
}

// formatElapsed writes ms as "12ms" below a tenth of a second, else as
// seconds: "0.21s", "12.34s".
func formatElapsed(ms float64) string {
	if math.Round(ms) < 100 {
		return fmt.Sprintf("%.0fms", ms)
	}
	return fmt.Sprintf("%.2fs", ms/1000)
}

func (a *app) eventsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "events OPERATION-ID",
		Short: "Follow the phases of a clone, takeover or upgrade",
		Long: `Events prints the phases of an operation, from its first, as they happen, and
returns when it ends: one line per event (phase, state, elapsed time, memory
dumped or restored, message), or with -o json the daemon's events as
newline-delimited JSON.

The operation's ID is the one its request named (clone, takeover and upgrade
take --operation ID), or the "operation" field of its record. The daemon
keeps an ended operation's events for 5 minutes. An ID it does not know yet
is retried for 2 seconds, for a request that is still on its way.

The exit status is 1 when the operation failed. Without --timeout, it waits
as long as the operation runs.`,
		Example: `  clonebotctl events cli-5f2a9c01b3e4
  clonebotctl takeover 1234 --operation deploy-42 -o json > rec.json & clonebotctl events deploy-42
  clonebotctl events deploy-42 -o json | jq -r 'select(.state == "failed") | .message'`,
		Args: exactArgs("OPERATION-ID"),
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !operationIDRE.MatchString(id) {
				return usagef("operation %q: want 8 to 64 of a-z, 0-9 and '-'", id)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			if a.timeout > 0 {
				ctx, cancel = a.context(cmd, a.timeout)
			}
			defer cancel()
			enc := json.NewEncoder(a.stdout)
			var last api.Event
			err := events(ctx, a.client(), id, nil, func(ev api.Event) error {
				last = ev
				if a.output == outputJSON {
					return enc.Encode(ev)
				}
				_, err := io.WriteString(a.stdout, formatEvent(ev)+"\n")
				return err
			})
			if err != nil {
				return err
			}
			if last.Phase == "operation" && last.State == api.EventFailed {
				return fmt.Errorf("operation %s failed: %s", id, orDash(last.Message))
			}
			return nil
		}),
	}
}

// operationIDFlag is the value of --operation.
type operationIDFlag string

func (o *operationIDFlag) String() string { return string(*o) }
func (o *operationIDFlag) Type() string   { return "ID" }
func (o *operationIDFlag) Set(s string) error {
	if !operationIDRE.MatchString(s) {
		return errors.New("want 8 to 64 of a-z, 0-9 and '-', starting with a letter or digit")
	}
	*o = operationIDFlag(s)
	return nil
}
