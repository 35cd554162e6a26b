package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/clonebot/clonebot/api"
)

// How exec reaches the OS; tests replace these.
var (
	lookPath = exec.LookPath
	geteuid  = os.Geteuid
	// execve replaces the process with argv (execve(2)); it returns only on
	// failure. See exec_linux.go.
	execve = sysExec
)

// hinted is an error with a hint for the user.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + " (" + h.hint + ")" }
func (h hinted) Unwrap() error { return h.err }

func (a *app) execCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "exec ID -- CMD [ARGS...]",
		Short: "Run a command inside a clone's namespaces",
		Long: `Exec runs CMD inside the PID, mount and network namespaces of clone ID, in /,
for debugging: gdb or strace attached to the clone's processes by the PIDs
they have in there (the original's), curl on the loopback of a clone made
with --isolate-net. clonebotctl becomes the command (through nsenter from
util-linux), so the terminal, signals and exit status are the command's.

It needs root (entering namespaces takes CAP_SYS_ADMIN) and a running clone.`,
		Example: `  clonebotctl exec c-1 -- sh
  clonebotctl exec c-1 -- gdb -p 1234
  clonebotctl exec c-1 -- strace -f -p 1234
  clonebotctl exec c-1 -- curl -s http://127.0.0.1:8080/debug/vars`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch n := cmd.ArgsLenAtDash(); {
			case len(args) == 0 || n == 0:
				return usagef("missing ID")
			case n < 0 && len(args) == 1:
				return usagef("missing command: clonebotctl exec %s -- CMD [ARGS...]", args[0])
			case n < 0:
				return usagef("unexpected argument %q: put the command after --, as in clonebotctl exec %s -- %s", args[1], args[0], args[1])
			case n > 1:
				return usagef("unexpected argument %q after ID, before --", args[1])
			case len(args) == 1:
				return usagef("missing command after --")
			}
			return nil
		},
		RunE: failing(func(cmd *cobra.Command, args []string) error {
			id, command := args[0], args[1:]
			nsenter, err := lookPath("nsenter")
			if err != nil {
				return hinted{fmt.Errorf("exec needs nsenter: %w", err), "install util-linux"}
			}
			if geteuid() != 0 {
				return hinted{errors.New("exec needs root: entering a clone's namespaces takes CAP_SYS_ADMIN"),
					"run it with sudo: sudo clonebotctl exec " + id + " -- ..."}
			}
			ctx, cancel := a.context(cmd, requestTimeout)
			defer cancel()
			cl, err := a.client().GetClone(ctx, id)
			if err != nil {
				return err
			}
			if cl.State != api.StateRunning {
				return hinted{fmt.Errorf("clone %s is %s: exec needs a running clone", id, orDash(cl.State)),
					"clonebotctl inspect " + id + " shows its state and exit code"}
			}
			if cl.PID <= 0 {
				return fmt.Errorf("clone %s has no host PID in its record", id)
			}
			argv := nsenterArgv(nsenter, cl.PID, command)
			if err := execve(nsenter, argv, os.Environ()); err != nil {
				return fmt.Errorf("exec %s: %w", nsenter, err)
			}
			return nil
		}),
	}
}

// nsenterArgv is the command line that runs command in the PID, mount and
// network namespaces of host PID pid, in /. nsenter forks once it has
// entered the PID namespace, so the command is a process of that namespace.
func nsenterArgv(nsenter string, pid int, command []string) []string {
	return append([]string{nsenter, "--target", strconv.Itoa(pid), "--pid", "--mount", "--net", "--wd=/", "--"},
		command...)
}
