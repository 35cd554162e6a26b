//go:build linux

package activation

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"github.com/clonebot/clonebot/numa"
	"golang.org/x/sys/unix"
)

// configEnv carries the shim's configuration.
const configEnv = "_CLONEBOT_EXECSHIM_CONFIG"

// IsShim reports whether this process was started as the exec shim.
func IsShim() bool { return os.Getenv(EnvMarker) == "1" }

// ShimMain runs the shim and never returns: it applies the placement, sets
// LISTEN_PID to its own PID and execs the target, which keeps the PID and
// the inherited fds 3..3+n-1.
func ShimMain() {
	runtime.LockOSThread()
	var c shimConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &c); err != nil {
		fmt.Fprintf(os.Stderr, "clonebot-exec: bad configuration: %v\n", err)
		os.Exit(127)
	}
	if len(c.CPUs) > 0 {
		if err := numa.SetAffinity(0, c.CPUs); err != nil {
			fmt.Fprintf(os.Stderr, "clonebot-exec: %v\n", err)
			os.Exit(127)
		}
	}
	if len(c.MemNodes) > 0 {
		if err := numa.BindMemory(c.MemNodes); err != nil {
			fmt.Fprintf(os.Stderr, "clonebot-exec: %v\n", err)
			os.Exit(127)
		}
	}
	// The inherited sockets must survive the exec.
	for fd := FirstFD; fd < FirstFD+c.NFDs; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			fmt.Fprintf(os.Stderr, "clonebot-exec: inherited fd %d: %v\n", fd, err)
			os.Exit(127)
		}
	}
	env := append(c.Env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err := unix.Exec(c.Path, c.Args, env)
	fmt.Fprintf(os.Stderr, "clonebot-exec: exec %s: %v\n", c.Path, err)
	os.Exit(127)
}

// StartOptions describe the process to start.
type StartOptions struct {
	// Shim is the binary re-executed as the shim; "" means /proc/self/exe.
	Shim string
	Path string
	// Args is argv including argv[0].
	Args []string
	// Env is the environment without LISTEN_*; Start adds them.
	Env []string
	// Files are the sockets to pass, in order, and Names their names.
	Files []*os.File
	Names []string
	Dir   string
	// Credential is the uid/gid/groups to run as; nil keeps root.
	Credential *syscall.Credential
	// Cgroup is a cgroup v2 directory fd to start in (CLONE_INTO_CGROUP).
	Cgroup         *os.File
	CPUs, MemNodes []int
	Stdout, Stderr *os.File
}

// Start starts the process in a session of its own and returns it; the
// caller waits for it.
func Start(o StartOptions) (*exec.Cmd, error) {
	if len(o.Files) != len(o.Names) {
		return nil, fmt.Errorf("activation: %d files but %d names", len(o.Files), len(o.Names))
	}
	shim := o.Shim
	if shim == "" {
		shim = "/proc/self/exe"
	}
	cfg, err := encodeConfig(shimConfig{Path: o.Path, Args: o.Args, Env: Env(o.Env, o.Names), NFDs: len(o.Files), CPUs: o.CPUs, MemNodes: o.MemNodes})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(shim)
	cmd.Args = []string{"clonebot-exec"}
	cmd.Env = []string{EnvMarker + "=1", configEnv + "=" + cfg}
	cmd.ExtraFiles = o.Files
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: o.Credential}
	if o.Cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(o.Cgroup.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Path, err)
	}
	return cmd, nil
}
