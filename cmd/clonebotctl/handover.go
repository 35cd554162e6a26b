package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/clonebot/clonebot/api"
)

// The daemon's handover defaults and bound (clone.DefaultProbeTimeout and
// clone.DefaultDrainTimeout, which only build on Linux): they size the
// request's own bound and are named in the help texts.
const (
	defaultProbeTimeout = 10 * time.Second
	defaultDrainTimeout = 30 * time.Second
	maxHandoverTimeout  = time.Hour
)

// handoverWait bounds a takeover or an upgrade: a clone's worth of time, the
// probe and the drain.
func handoverWait(h api.Handover) time.Duration {
	probe, drain := time.Duration(h.ProbeTimeout), time.Duration(h.DrainTimeout)
	if probe == 0 {
		probe = defaultProbeTimeout
	}
	if drain == 0 {
		drain = defaultDrainTimeout
	}
	return cloneTimeout + probe + drain
}

const handoverHelp = `The original is never signalled before the replacement is healthy: it must
pass --probe, an HTTP GET of the URL that answers 2xx, or "tcp", a connect to
each of the original's listening addresses, several times in a row on new
connections, within --probe-timeout. If it does not, or dies, it is removed
and the original keeps serving as before; the error says which check failed.
Then every new connection is steered to the replacement (a BPF program on
the port's SO_REUSEPORT group) until the original has answered what it had
accepted (at most 1 s), and only then the original gets --drain-signal (TERM;
nginx wants QUIT) and --drain-timeout to exit before it is killed.
Connections waiting in its accept queues move to the replacement
(net.ipv4.tcp_migrate_req).`

func (a *app) takeoverCmd() *cobra.Command {
	req := api.TakeoverRequest{CloneRequest: api.CloneRequest{NUMA: api.PlaceSame}}
	cmd := &cobra.Command{
		Use:   "takeover PID",
		Short: "Move a server's traffic to a live clone of itself",
		Long: `Takeover clones the process tree rooted at PID as 'clone' does, checks the
clone, then drains the original so that the clone serves alone, with the
original's memory state. It prints the clone's record and a takeover
section: how long the probe and the drain took, whether the original exited
or was killed, and how many queued connections the kernel moved to the clone.

` + handoverHelp + `

Servers that close their listener on the signal and finish their requests
(Go's http.Server.Shutdown, nginx on QUIT, gunicorn) lose nothing, nor, as
the steering leaves them idle, do servers that stop abruptly on it (python's
http.server) unless a request takes longer than the settling. For those,
--shutdown-listener stops the original's listeners from outside instead: no
new connection reaches the original, its queued ones move to the clone, and
the signal waits until the original's open connections have ended, up to
--drain-timeout. Keep-alive connections still open then are cut with the
original, with any request on them.

` + progressHelp,
		Example: `  clonebotctl takeover 1234
  clonebotctl takeover 1234 --probe http://127.0.0.1:8080/healthz --drain-timeout 1m
  clonebotctl takeover $(pgrep -o nginx) --drain-signal QUIT
  clonebotctl takeover 1234 --shutdown-listener --numa spread -o json | jq .takeover`,
		Args: exactArgs("PID"),
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if req.PidsMax < 0 {
				return usagef("--pids-max %d: want a number >= 0", req.PidsMax)
			}
			req.PID = pid
			ctx, cancel := a.context(cmd, handoverWait(req.Handover))
			defer cancel()
			c := a.client()
			cl, err := a.operate(ctx, c, &req.Operation, func() (*api.Clone, error) {
				return c.Takeover(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(cl, func(w io.Writer) error { return writeClone(w, cl) })
		}),
	}
	f := cmd.Flags()
	handoverFlags(f, &req.Handover)
	f.BoolVar(&req.ShutdownListener, "shutdown-listener", false,
		"stop the original's listeners from outside before the drain signal (servers that exit abruptly on it)")
	placementFlags(f, &req.NUMA, &req.Name, &req.MemoryMax, &req.PidsMax, "clone")
	memoryCopyFlags(f, &req.Precopy, &req.LazyPages)
	operationFlag(f, &req.Operation)
	return cmd
}

func (a *app) upgradeCmd() *cobra.Command {
	req := api.UpgradeRequest{NUMA: api.PlaceSame}
	var exe string
	cmd := &cobra.Command{
		Use:   "upgrade PID --exec PATH [flags] [-- ARGS...]",
		Short: "Move a server's traffic to a new binary that inherits its sockets",
		Long: `Upgrade starts --exec as a new process that inherits the listening sockets of
the process tree rooted at PID through systemd socket activation (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES), in a cgroup and NUMA placement of its own, with
the original's working directory, environment, uid and groups; then it
drains the original, as takeover does. No memory is copied: the new process
must accept its sockets from socket activation (for example with
coreos/go-systemd's activation package). It prints the new process's record
(kind "upgrade") and the takeover section.

--exec is the new binary, which may be the original's own. A relative path
is made absolute against clonebotctl's current directory (the daemon takes
only absolute paths). The arguments after -- are the new process's
(argv[1:]): without --, it gets the original's arguments; with nothing
after --, none. --env
KEY=VALUE (repeatable) overrides or adds to the original's environment.

` + handoverHelp + `

The new process gets a listener of its own beside each of the original's
TCP listeners (same address, same SO_REUSEPORT group, the original's
owner), so that new connections can be steered to it; MPTCP and UDP
sockets are passed as the very same socket.

--shutdown-listener does not apply: the original's listeners may be the new
process's very sockets, and it stops listening on its own when it closes
them.

` + progressHelp,
		Example: `  clonebotctl upgrade 1234 --exec /usr/local/bin/server-v2
  clonebotctl upgrade 1234 --exec ./server-v2 --probe http://127.0.0.1:8080/healthz -- --config /etc/server.toml
  clonebotctl upgrade 1234 --exec /usr/local/bin/server --env GOGC=200 --env LOG_LEVEL=debug
  clonebotctl upgrade 1234 --exec /usr/local/bin/server-v2 -o json | jq -r .id`,
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				if n > 1 {
					return usagef("unexpected argument %q after PID before --", args[1])
				}
				args = args[:n]
			} else if len(args) > 1 {
				return usagef("unexpected argument %q after PID (the new binary's arguments go after --)", args[1])
			}
			if len(args) == 0 {
				return usagef("missing PID")
			}
			return nil
		},
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if exe == "" {
				return usagef("missing --exec PATH: the binary to start")
			}
			if req.PidsMax < 0 {
				return usagef("--pids-max %d: want a number >= 0", req.PidsMax)
			}
			if req.Exec, err = filepath.Abs(exe); err != nil {
				return usagef("--exec %q: %v", exe, err)
			}
			req.PID = pid
			// Without --, Args stays nil: the original's arguments. With --,
			// the ARGS after it, none at all if nothing follows.
			req.Args = nil
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				req.Args = append([]string{}, args[n:]...)
			}
			ctx, cancel := a.context(cmd, handoverWait(req.Handover))
			defer cancel()
			c := a.client()
			cl, err := a.operate(ctx, c, &req.Operation, func() (*api.Clone, error) {
				return c.Upgrade(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(cl, func(w io.Writer) error { return writeClone(w, cl) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&exe, "exec", "", "`path` of the binary to start (required; made absolute against the current directory)")
	f.Var((*envFlag)(&req.Env), "env", "KEY=VALUE added to or overriding the original's environment (repeatable)")
	handoverFlags(f, &req.Handover)
	placementFlags(f, &req.NUMA, &req.Name, &req.MemoryMax, &req.PidsMax, "new process")
	operationFlag(f, &req.Operation)
	return cmd
}

// handoverFlags adds the probe and drain flags shared by takeover and upgrade.
func handoverFlags(f *pflag.FlagSet, h *api.Handover) {
	f.Var((*probeFlag)(&h.Probe), "probe", `check of the replacement: an http:// or https:// URL that must answer 2xx, or "tcp" (default tcp)`)
	f.Var((*timeoutFlag)(&h.ProbeTimeout), "probe-timeout", "how long the replacement may take to pass the probe (default 10s, at most 1h)")
	f.Var((*signalFlag)(&h.DrainSignal), "drain-signal", "signal that drains the original: TERM, QUIT, INT, HUP, USR1, USR2 or WINCH (default TERM)")
	f.Var((*timeoutFlag)(&h.DrainTimeout), "drain-timeout", "how long the original may take to exit after the signal before it is killed (default 30s, at most 1h)")
}

// operationFlag adds --operation, the ID to follow with 'clonebotctl events'.
func operationFlag(f *pflag.FlagSet, id *string) {
	f.Var((*operationIDFlag)(id), "operation", "`ID` of the operation (8 to 64 of a-z, 0-9, '-'), to follow it with 'clonebotctl events ID' (default: picked by the daemon)")
}

// probeFlag is the value of --probe: "tcp" or an http(s) URL with a host.
type probeFlag string

func (p *probeFlag) String() string { return string(*p) }
func (p *probeFlag) Type() string   { return "URL|tcp" }
func (p *probeFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "tcp") {
		*p = "tcp"
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New(`want an http:// or https:// URL, or "tcp"`)
	}
	*p = probeFlag(s)
	return nil
}

// drainSignals are the signals the daemon sends to drain an original.
var drainSignals = []string{"TERM", "QUIT", "INT", "HUP", "USR1", "USR2", "WINCH"}

// signalFlag is the value of --drain-signal, kept as "TERM", "QUIT", ...
type signalFlag string

func (s *signalFlag) String() string { return string(*s) }
func (s *signalFlag) Type() string   { return "signal" }
func (s *signalFlag) Set(v string) error {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(v)), "SIG")
	for _, sig := range drainSignals {
		if name == sig {
			*s = signalFlag(sig)
			return nil
		}
	}
	return fmt.Errorf("want one of %s (with or without SIG)", strings.Join(drainSignals, ", "))
}

// timeoutFlag is the value of --probe-timeout and --drain-timeout: a
// positive duration of at most maxHandoverTimeout. Unset, it stays 0 and the
// daemon applies its default.
type timeoutFlag api.Duration

func (d *timeoutFlag) String() string {
	if *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}
func (d *timeoutFlag) Type() string { return "duration" }
func (d *timeoutFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New(`want a duration such as "10s" or "1m30s"`)
	case v <= 0:
		return errors.New("want a duration > 0")
	case v > maxHandoverTimeout:
		return fmt.Errorf("want at most %v", maxHandoverTimeout)
	}
	*d = timeoutFlag(v)
	return nil
}

// envFlag is the value of --env: KEY=VALUE, repeatable; commas are part of
// the value.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }
func (e *envFlag) Type() string   { return "KEY=VALUE" }
func (e *envFlag) Set(s string) error {
	k, _, ok := strings.Cut(s, "=")
	if !ok || k == "" || strings.ContainsRune(s, 0) {
		return errors.New("want KEY=VALUE")
	}
	*e = append(*e, s)
	return nil
}
