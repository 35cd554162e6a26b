package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/clonebot/clonebot/api"
)

// Request bounds when --timeout is 0 (its help text repeats them). A clone
// waits for CRIU to dump and restore the target's whole memory.
const (
	cloneTimeout   = 5 * time.Minute
	requestTimeout = 30 * time.Second
)

// app is one invocation of clonebotctl: its flags and where output goes.
type app struct {
	stdout, stderr io.Writer
	now            func() time.Time
	getenv         func(string) string

	socket  string
	output  outputFormat
	timeout time.Duration
	wait    time.Duration // the bound of the last request, for messages
}

func (a *app) client() *api.Client { return api.NewClient(a.socket) }

// context bounds one request by --timeout, or def when it is 0.
func (a *app) context(cmd *cobra.Command, def time.Duration) (context.Context, context.CancelFunc) {
	a.wait = def
	if a.timeout > 0 {
		a.wait = a.timeout
	}
	return context.WithTimeout(cmd.Context(), a.wait)
}

// failing marks the errors of f as operation failures (exit status 1),
// except usage errors.
func failing(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		if err == nil || errors.As(err, new(usageError)) {
			return err
		}
		return failure{err}
	}
}

func (a *app) rootCmd(env func(string) string) *cobra.Command {
	a.output = outputTable
	a.getenv = env
	socket := env(api.SocketEnv)
	if socket == "" {
		socket = api.DefaultSocket
	}

	root := &cobra.Command{
		Use:   "clonebotctl",
		Short: "Live-clone running processes through clonebotd",
		Long: `clonebotctl drives clonebotd, the daemon that live-clones a running process
tree with CRIU into a new PID namespace and cgroup, pinned to one NUMA node,
sharing the original's listening sockets. It can also move a server's traffic
to such a clone (takeover) or to a new binary that inherits its sockets
(upgrade), and run a debugger or a shell inside a clone's namespaces (exec).

It talks to the daemon's unix socket: --socket, else $` + api.SocketEnv + `, else
` + api.DefaultSocket + `.

Exit status: 0 on success, 1 when an operation failed, 2 on a usage error.`,
		Example: `  clonebotctl status
  clonebotctl clone 1234 --numa spread --name web-2
  clonebotctl clone 1234 --isolate-net && clonebotctl exec c-1 -- gdb -p 1234
  clonebotctl takeover 1234 --probe http://127.0.0.1:8080/healthz
  clonebotctl upgrade 1234 --exec ./server-v2 -- --port 8080
  clonebotctl ls -o json`,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("missing command")
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.timeout < 0 {
				return usagef("--timeout %v: want a duration >= 0", a.timeout)
			}
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.VarP(&a.output, "output", "o", "how to print results: table for people, json (the API's records, indented) for scripts")
	pf.StringVar(&a.socket, "socket", socket, "`path` of clonebotd's unix socket; $"+api.SocketEnv+" sets the default")
	pf.DurationVar(&a.timeout, "timeout", 0, "bound on each request to clonebotd; 0 means 5m for clone, 5m plus the probe and drain\ntimeouts for takeover and upgrade, no bound for events, 30s otherwise")

	root.AddCommand(a.cloneCmd(), a.takeoverCmd(), a.upgradeCmd(), a.execCmd(), a.eventsCmd(),
		a.lsCmd(), a.inspectCmd(), a.rmCmd(), a.statusCmd())
	return root
}

func (a *app) cloneCmd() *cobra.Command {
	req := api.CloneRequest{NUMA: api.PlaceSame}
	cmd := &cobra.Command{
		Use:   "clone PID",
		Short: "Clone a running process tree",
		Long: `Clone checkpoints the process tree rooted at PID with CRIU and restores a copy
in a new PID namespace and cgroup, pinned to one NUMA node. The original is
frozen only while it is checkpointed (frozen_ms in the record). The command
returns once the clone runs, or once a failed attempt has been undone, and
prints the clone's record.

--numa picks the node: "same" is the node holding most of the original's
memory, "spread" the node with the most free memory not crowded by other
clones, a number that node.

--isolate-net restores the clone in a network namespace of its own with only
loopback up: it shares no listener with the original and takes no production
traffic, so it can be stopped in a debugger or poked on its own loopback
('clonebotctl exec ID -- CMD' runs a command in there).

` + progressHelp,
		Example: `  clonebotctl clone 1234
  clonebotctl clone 1234 --numa spread --name web-2 --memory-max 2G --pids-max 512
  clonebotctl clone 1234 --isolate-net --name debug && clonebotctl exec c-1 -- curl -s 127.0.0.1:8080/
  clonebotctl clone 1234 --numa 1 -o json | jq -r .id`,
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
			ctx, cancel := a.context(cmd, cloneTimeout)
			defer cancel()
			c := a.client()
			cl, err := a.operate(ctx, c, &req.Operation, func() (*api.Clone, error) {
				return c.CreateClone(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(cl, func(w io.Writer) error { return writeClone(w, cl) })
		}),
	}
	f := cmd.Flags()
	placementFlags(f, &req.NUMA, &req.Name, &req.MemoryMax, &req.PidsMax, "clone")
	f.BoolVar(&req.IsolateNet, "isolate-net", false, "restore the clone in a network namespace of its own, loopback only (a debug clone: no production traffic)")
	memoryCopyFlags(f, &req.Precopy, &req.LazyPages)
	operationFlag(f, &req.Operation)
	return cmd
}

// memoryCopyFlags adds --precopy and --lazy-pages.
func memoryCopyFlags(f *pflag.FlagSet, precopy, lazy *string) {
	f.Var((*modeFlag)(precopy), "precopy", "copy the memory while the original runs, in rounds, then freeze it only for the pages dirtied since (needs soft-dirty tracking; 'clonebotctl status' says): auto (above 64 MiB), on or off (default auto)")
	f.Var((*modeFlag)(lazy), "lazy-pages", "start the clone before its memory is all in, its pages then served on demand and in the background: auto (above 64 MiB), on or off (default auto)")
}

// modeFlag is an auto|on|off value.
type modeFlag string

func (m *modeFlag) String() string { return string(*m) }
func (m *modeFlag) Type() string   { return "auto|on|off" }
func (m *modeFlag) Set(s string) error {
	switch s {
	case "auto", "on", "off":
		*m = modeFlag(s)
		return nil
	}
	return fmt.Errorf("%q: want auto, on or off", s)
}

// placementFlags adds --numa, --name, --memory-max and --pids-max; what
// names the process they apply to in the help texts.
func placementFlags(f *pflag.FlagSet, numa *api.Placement, name *string, mem *api.ByteSize, pids *int64, what string) {
	f.Var((*placementFlag)(numa), "numa", "NUMA placement of the "+what+": same, spread or a node number")
	f.StringVar(name, "name", "", "label for the "+what+" (letters, digits, '-', '_', '.'; at most 64)")
	f.Var((*byteSizeFlag)(mem), "memory-max", "memory.max of the "+what+"'s cgroup, e.g. 512M or 2G (default: no limit)")
	f.Int64Var(pids, "pids-max", 0, "pids.max of the "+what+"'s cgroup (default: no limit)")
}

// parsePID parses a PID argument: a usage error unless it is a positive integer.
func parsePID(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, usagef("PID %q: want a positive integer", s)
	}
	return pid, nil
}

func (a *app) lsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List clones",
		Long: `Ls lists every clone the daemon knows, running or exited: its source PID and
host PID, NUMA node, how it is pinned, its state, how long the original was
frozen and how long the whole clone took.`,
		Example: `  clonebotctl ls
  clonebotctl ls -o json | jq -r '.[] | select(.state == "running") | .id'`,
		Args: noArgs,
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.context(cmd, requestTimeout)
			defer cancel()
			cls, err := a.client().ListClones(ctx)
			if err != nil {
				return err
			}
			if cls == nil {
				cls = []api.Clone{} // [] rather than null
			}
			return a.print(cls, func(w io.Writer) error { return writeClones(w, cls, a.now()) })
		}),
	}
}

func (a *app) inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Show the full record of a clone",
		Long: `Inspect prints everything the daemon records about a clone: PIDs, cgroup,
NUMA placement and locality, the time each phase took, the listening sockets
it shares with the original, where its output goes, and any warnings.`,
		Example: `  clonebotctl inspect c-1
  clonebotctl inspect c-1 -o json | jq .timings_ms`,
		Args: exactArgs("ID"),
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.context(cmd, requestTimeout)
			defer cancel()
			cl, err := a.client().GetClone(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(cl, func(w io.Writer) error { return writeClone(w, cl) })
		}),
	}
}

func (a *app) rmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID...",
		Short: "Remove clones",
		Long: `Rm asks the daemon to remove each clone given: its processes are killed and
its cgroup removed. A clone that shares its original's ports first stops
getting new connections (they go to the original and its other clones) and
answers what it had accepted, for at most a second, so that no request is
lost. Every ID is attempted; the IDs removed are printed (with -o json,
their final records), and the exit status is 1 if any failed.`,
		Example: `  clonebotctl rm c-1
  clonebotctl rm $(clonebotctl ls -o json | jq -r '.[].id')`,
		Args: minArgs("ID"),
		RunE: failing(func(cmd *cobra.Command, ids []string) error {
			c := a.client()
			removed := []api.Clone{}
			failed := false
			for _, id := range ids {
				if cmd.Context().Err() != nil {
					return cmd.Context().Err()
				}
				ctx, cancel := a.context(cmd, requestTimeout)
				cl, err := c.DeleteClone(ctx, id)
				cancel()
				if err != nil {
					a.report(id+": ", err)
					failed = true
					continue
				}
				removed = append(removed, *cl)
				if a.output == outputTable {
					fmt.Fprintln(a.stdout, cl.ID)
				}
			}
			if a.output == outputJSON {
				if err := writeJSON(a.stdout, removed); err != nil {
					return err
				}
			}
			if failed {
				return errReported
			}
			return nil
		}),
	}
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's versions and what the host supports",
		Long: `Status reports the versions of clonebotd, the kernel and CRIU (and whether
CRIU works), the cgroup hierarchy and how clones are pinned, the NUMA nodes
with their free memory and clones, the daemon's capabilities, and each
feature clones depend on, with the reason when one is missing.`,
		Example: `  clonebotctl status
  clonebotctl status -o json | jq .features`,
		Args: noArgs,
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.context(cmd, requestTimeout)
			defer cancel()
			st, err := a.client().Status(ctx)
			if err != nil {
				return err
			}
			return a.print(st, func(w io.Writer) error { return writeStatus(w, st) })
		}),
	}
}

// print writes v as JSON or with table, as --output says.
func (a *app) print(v any, table func(io.Writer) error) error {
	if a.output == outputJSON {
		return writeJSON(a.stdout, v)
	}
	return table(a.stdout)
}

func exactArgs(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usagef("missing %s", name)
		case len(args) > 1:
			return usagef("unexpected argument %q after %s", args[1], name)
		}
		return nil
	}
}

func minArgs(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usagef("missing %s", name)
		}
		return nil
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// outputFormat is the value of --output.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "table|json" }
func (o *outputFormat) Set(s string) error {
	switch v := outputFormat(s); v {
	case outputTable, outputJSON:
		*o = v
		return nil
	}
	return errors.New("want table or json")
}

// placementFlag is the value of --numa.
type placementFlag api.Placement

func (p *placementFlag) String() string { return string(*p) }
func (p *placementFlag) Type() string   { return "same|spread|N" }
func (p *placementFlag) Set(s string) error {
	v, err := api.ParsePlacement(s)
	if err != nil {
		return err
	}
	*p = placementFlag(v)
	return nil
}

// byteSizeFlag is the value of --memory-max.
type byteSizeFlag api.ByteSize

func (b *byteSizeFlag) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *byteSizeFlag) Type() string   { return "size" }
func (b *byteSizeFlag) Set(s string) error {
	v, err := api.ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSizeFlag(v)
	return nil
}
