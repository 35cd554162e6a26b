//go:build linux

package nsinit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/clonebot/clonebot/criu"
	"github.com/clonebot/clonebot/journal"
	"github.com/clonebot/clonebot/numa"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ctlFD is the init's end of the control socket.
const ctlFD = 3

// IsInit reports whether this process was started as a clone's init.
func IsInit() bool { return os.Getenv(EnvMarker) == "1" }

// Main runs the init and never returns. Call it first thing in main (and in
// TestMain of packages whose tests clone) when IsInit is true.
func Main() {
	// The restore must run on the thread whose affinity and memory policy we
	// set: the fork of criu happens on the calling thread.
	runtime.LockOSThread()
	os.Unsetenv(EnvMarker)
	// Re-executed through /proc/self/exe, the init would be "exe" in ps
	// and in journald's _COMM of the clone's journal streams.
	_ = os.WriteFile("/proc/self/comm", []byte("clonebot-init"), 0)
	ctl := os.NewFile(ctlFD, "clonebot-ctl")
	code := run(ctl)
	os.Exit(code)
}

func send(ctl *os.File, r Report) {
	b, _ := json.Marshal(r)
	// The daemon may be gone (restarted); the status file is the record.
	_, _ = ctl.Write(b)
}

func fail(ctl *os.File, err error) int {
	r := Report{Phase: PhaseFailed, Error: err.Error()}
	var ce *criu.Error
	if errors.As(err, &ce) {
		// The daemon rebuilds the criu.Error from these fields.
		r.Error, r.Hint, r.LogPath, r.Lines = ce.Message, ce.Hint, ce.LogPath, ce.Lines
	}
	fmt.Fprintf(os.Stderr, "clonebot-init: %v\n", err)
	send(ctl, r)
	return 1
}

func run(ctl *os.File) int {
	buf := make([]byte, 1<<20)
	n, err := ctl.Read(buf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "clonebot-init: read config: %v\n", err)
		return 1
	}
	var cfg Config
	if err := json.Unmarshal(buf[:n], &cfg); err != nil {
		return fail(ctl, fmt.Errorf("decode config: %w", err))
	}
	if err := setupNamespace(cfg); err != nil {
		return fail(ctl, err)
	}
	// Forward signals from the first moment: a TERM that arrives during the
	// restore is delivered once the root exists.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)

	var files []*os.File
	var inherit []criu.InheritFd
	for _, in := range cfg.Inherit {
		var f *os.File
		var err error
		if in.Journal != nil {
			f, err = journal.Connect(in.Path, *in.Journal)
			err = wrapErr(err, "open a journal stream (identifier %q) to replace %s in the clone", in.Journal.Identifier, in.Key)
		} else {
			f, err = os.OpenFile(in.Path, in.Flags, 0o600)
			err = wrapErr(err, "open %s to replace %s in the clone", in.Path, in.Key)
		}
		if err != nil {
			return fail(ctl, err)
		}
		files = append(files, f)
		inherit = append(inherit, criu.InheritFd{Key: in.Key, File: f})
	}
	for _, key := range cfg.TTYs {
		slave, err := newTerminal(cfg.TTYLog)
		if err != nil {
			return fail(ctl, fmt.Errorf("give the clone a terminal for %s: %w", key, err))
		}
		files = append(files, slave)
		inherit = append(inherit, criu.InheritFd{Key: key, File: slave})
	}
	start := time.Now()
	r := criu.Runner{Path: cfg.CRIUPath}
	var lazy *exec.Cmd
	if cfg.Lazy {
		var err error
		if lazy, err = r.StartLazyPages(cfg.ImageDir, cfg.WorkDir, cfg.LogLevel); err != nil {
			return fail(ctl, err)
		}
	}
	pid, st, err := r.Restore(criu.RestoreOptions{
		ImageDir: cfg.ImageDir, WorkDir: cfg.WorkDir, LogLevel: cfg.LogLevel,
		InheritFds: inherit, ShellJob: cfg.ShellJob, ExtUnixSk: cfg.ExtUnixSk, External: cfg.External,
		LazyPages: cfg.Lazy,
	})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		if lazy != nil {
			_ = lazy.Process.Kill()
		}
		return fail(ctl, err)
	}
	if pid <= 0 {
		return fail(ctl, errors.New("criu restored no process"))
	}
	rep := Report{Phase: PhaseRestored, NSPID: pid, RestoreMS: ms(time.Since(start))}
	if st != nil {
		rep.PagesRestored = st.PagesRestored
	}
	send(ctl, rep)
	lazyPID := 0
	if lazy != nil {
		lazyPID = lazy.Process.Pid
	}
	return reap(ctl, cfg, pid, lazyPID, start, sigs)
}

// setupNamespace gives the new mount namespace its own /proc, brings up
// loopback when asked, leads a session of its own, and applies the placement
// the restore must inherit.
func setupNamespace(cfg Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private in the clone's mount namespace: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc for the clone's PID namespace: %w", err)
	}
	if cfg.LoopbackUp {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find loopback in the clone's network namespace: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bring up loopback in the clone's network namespace: %w", err)
		}
	}
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("setsid: %w", err)
	}
	if len(cfg.CPUs) > 0 {
		if err := numa.SetAffinity(0, cfg.CPUs); err != nil {
			return fmt.Errorf("pin the restore to CPUs %v: %w", cfg.CPUs, err)
		}
	}
	if len(cfg.MemNodes) > 0 {
		if err := numa.BindMemory(cfg.MemNodes); err != nil {
			return fmt.Errorf("bind the restore's memory to nodes %v: %w", cfg.MemNodes, err)
		}
	}
	return nil
}

// reap waits for the clone's root, reaping every orphan the namespace hands
// to its init, and forwards signals to the root. It returns the root's exit
// code (128+signal when killed).
func reap(ctl *os.File, cfg Config, root, lazyPID int, start time.Time, sigs <-chan os.Signal) int {
	exited := make(chan unix.WaitStatus, 1)
	lazyDone := make(chan unix.WaitStatus, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil { // ECHILD: nothing left, root already gone
				exited <- 0
				return
			}
			switch pid {
			case root:
				exited <- ws
				return
			case lazyPID:
				lazyDone <- ws
			}
		}
	}()
	for {
		select {
		case ws := <-lazyDone:
			// The page server is done. Unless it served every page, the
			// clone has holes in its memory: it must not run on.
			if ws.Exited() && ws.ExitStatus() == 0 {
				send(ctl, Report{Phase: PhaseResident, ResidentMS: ms(time.Since(start))})
				continue
			}
			_ = unix.Kill(root, unix.SIGKILL)
			msg := fmt.Sprintf("the lazy-pages server exited (%v) before every page was in: the clone was killed", describe(ws))
			fmt.Fprintf(os.Stderr, "clonebot-init: %s\n", msg)
			send(ctl, Report{Phase: PhaseResident, Error: msg, LogPath: filepath.Join(cfg.WorkDir, "lazy-pages.log")})
		case s := <-sigs:
			_ = unix.Kill(root, s.(syscall.Signal))
		case ws := <-exited:
			st := ExitStatus{Code: ws.ExitStatus(), ExitedAt: time.Now().UTC()}
			if ws.Signaled() {
				st.Code = 128 + int(ws.Signal())
				st.Signal = unix.SignalName(ws.Signal())
			}
			if cfg.StatusFile != "" {
				if err := writeStatusFile(cfg.StatusFile, st); err != nil {
					fmt.Fprintf(os.Stderr, "clonebot-init: write %s: %v\n", cfg.StatusFile, err)
				}
			}
			send(ctl, Report{Phase: PhaseExited, Exit: &st})
			return st.Code
		}
	}
}

// newTerminal opens a new pseudo-terminal and returns its slave end; a
// goroutine copies what is written to it into logPath for as long as the
// init lives (a terminal nobody reads would block the clone once full).
func newTerminal(logPath string) (*os.File, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, err
	}
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		master.Close()
		slave.Close()
		return nil, err
	}
	go func() {
		_, _ = io.Copy(out, master)
		out.Close()
	}()
	return slave, nil
}

// wrapErr prefixes err with a description, or returns nil.
func wrapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// StartOptions configure Start.
type StartOptions struct {
	// Exe is the binary to re-execute; "" means /proc/self/exe.
	Exe string
	// Cgroup, when set, is an O_PATH directory fd of the cgroup v2 the init
	// is created in (CLONE_INTO_CGROUP), so the restore allocates inside it.
	Cgroup *os.File
	// NewNet puts the clone in a new network namespace.
	NewNet bool
	// Log receives the init's own stderr; nil means /dev/null.
	Log *os.File
}

// Process is a started init, seen from the daemon.
type Process struct {
	cmd *exec.Cmd
	ctl *os.File
	// Pid is the init's host PID.
	Pid int
	// OnReport receives the reports Wait reads other than the exit.
	OnReport func(Report)
}

// Start creates the init in new PID and mount namespaces. It does not
// restore anything until Restore is called.
func Start(opts StartOptions) (*Process, error) {
	exe := opts.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair for the clone's init: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "clonebot-init-ctl")
	theirs := os.NewFile(uintptr(fds[1]), "clonebot-init-ctl")
	defer theirs.Close()

	cmd := exec.Command(exe)
	cmd.Args = []string{"clonebot-init"}
	cmd.Env = []string{EnvMarker + "=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Dir = "/"
	if opts.Log != nil {
		cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	}
	flags := uintptr(unix.CLONE_NEWPID | unix.CLONE_NEWNS)
	if opts.NewNet {
		flags |= unix.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if opts.Cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(opts.Cgroup.Fd())
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("start the clone's init (%s) in new namespaces: %w", exe, err)
	}
	return &Process{cmd: cmd, ctl: ours, Pid: cmd.Process.Pid}, nil
}

// Restore sends cfg and waits for the init's answer. When ctx ends first, or
// the restore fails, the init is killed, which takes the namespace and any
// half-restored process with it.
func (p *Process) Restore(ctx context.Context, cfg Config) (*Report, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := p.ctl.Write(b); err != nil {
		p.Kill()
		return nil, fmt.Errorf("send the restore request to the clone's init (PID %d): %w", p.Pid, err)
	}
	type result struct {
		r   *Report
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := p.next()
		ch <- result{r, err}
	}()
	select {
	case <-ctx.Done():
		p.Kill()
		<-ch
		return nil, fmt.Errorf("restore in the clone's init (PID %d): %w", p.Pid, ctx.Err())
	case res := <-ch:
		if res.err != nil {
			p.Kill()
			return nil, fmt.Errorf("the clone's init (PID %d) ended before reporting the restore: %w", p.Pid, res.err)
		}
		if res.r.Phase != PhaseRestored {
			p.Kill()
			return res.r, &RestoreError{Report: *res.r, InitPID: p.Pid}
		}
		return res.r, nil
	}
}

// next reads one Report.
func (p *Process) next() (*Report, error) {
	buf := make([]byte, 64*1024)
	n, err := p.ctl.Read(buf)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("control socket closed")
	}
	var r Report
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	return &r, nil
}

// Wait waits for the init to exit (the clone's root has exited or the init
// was killed) and returns the clone's exit status. Reports that arrive
// meanwhile (PhaseResident) go to OnReport, if set before Wait is called.
func (p *Process) Wait() (*ExitStatus, error) {
	// The init reports the root's status before it exits; the control socket
	// then reads EOF.
	var st *ExitStatus
	for {
		r, err := p.next()
		if err != nil {
			break
		}
		switch r.Phase {
		case PhaseExited:
			st = r.Exit
		default:
			if p.OnReport != nil {
				p.OnReport(*r)
			}
		}
	}
	err := p.cmd.Wait()
	p.ctl.Close()
	if st == nil {
		// Killed before it could report: take the init's own status.
		st = &ExitStatus{ExitedAt: time.Now().UTC()}
		if ps := p.cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				st.Code = 128 + int(ws.Signal())
				st.Signal = unix.SignalName(ws.Signal())
			} else {
				st.Code = ps.ExitCode()
			}
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = nil
		}
		return st, err
	}
	return st, nil
}

// Kill kills the init with SIGKILL, which kills every process of the
// namespace.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
}

// RestoreError is a restore the init reported as failed.
type RestoreError struct {
	Report  Report
	InitPID int
}

func (e *RestoreError) Error() string { return e.Report.Error }
