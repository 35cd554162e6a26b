//go:build linux

package clone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clonebot/clonebot/activation"
	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/cgroup"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/nsinit"
	"github.com/clonebot/clonebot/proc"
	"golang.org/x/sys/unix"
)

// Upgrade starts req.Exec as a new process that inherits the original's
// listening sockets (socket activation), with the original's working
// directory, environment (plus req.Env), uid and gids, in a cgroup slice of
// its own on a NUMA node; checks it; then drains the original. Both share
// the very same sockets, so no connection is refused or reset during the
// switch, and no SO_REUSEPORT or sysctl is needed.
func (m *Manager) Upgrade(ctx context.Context, req api.UpgradeRequest, who Caller) (*api.Clone, error) {
	hp, err := parseHandover(req.Handover)
	if err != nil {
		return nil, err
	}
	if hp.shutdown {
		return nil, fault.New(fault.Invalid, "shutdown_listener does not apply to an upgrade: the new process may share some of the original's very sockets, and shutting them down would stop both",
			"drop --shutdown-listener; new connections are steered to the new process before the original is signalled", nil)
	}
	if err := validateUpgrade(req); err != nil {
		return nil, err
	}
	if _, err := m.ready(ctx); err != nil {
		return nil, err
	}
	op, err := m.beginOp(req.Operation, "upgrade", who)
	if err != nil {
		return nil, err
	}
	rec, err := m.upgrade(ctx, req, hp, who, op)
	m.endOp(op, err)
	return rec, err
}

func validateUpgrade(req api.UpgradeRequest) error {
	if req.PID <= 0 {
		return fault.New(fault.Invalid, fmt.Sprintf("pid %d: want a positive process ID", req.PID), "", nil)
	}
	if err := req.NUMA.Validate(); err != nil {
		return fault.New(fault.Invalid, err.Error(), "", nil)
	}
	if err := ValidName(req.Name); err != nil {
		return fault.New(fault.Invalid, err.Error(), "", nil)
	}
	if !filepath.IsAbs(req.Exec) {
		return fault.New(fault.Invalid, fmt.Sprintf("exec %q: want an absolute path", req.Exec), "", nil)
	}
	st, err := os.Stat(req.Exec)
	if err != nil {
		return fault.New(fault.Refused, fmt.Sprintf("cannot upgrade PID %d: %s does not exist", req.PID, req.Exec), "check the path of the new binary", nil)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 || unix.Access(req.Exec, unix.X_OK) != nil {
		return fault.New(fault.Refused, fmt.Sprintf("cannot upgrade PID %d: %s is not an executable file", req.PID, req.Exec), "chmod +x it, or give the path of the binary", nil)
	}
	if _, err := activation.MergeEnv(nil, req.Env); err != nil {
		return fault.New(fault.Invalid, err.Error(), "", nil)
	}
	return nil
}

func (m *Manager) upgrade(ctx context.Context, req api.UpgradeRequest, hp *handoverPlan, who Caller, op *operation) (*api.Clone, error) {
	t0 := time.Now()
	release, err := m.claim(req.PID, "upgrade")
	if err != nil {
		return nil, err
	}
	defer release()

	var p *plan
	var listeners []handover.Socket
	err = op.phase("preflight", func() error {
		var err error
		p, err = m.preflightUpgrade(req, who)
		if err != nil {
			return err
		}
		listeners, err = m.listenersOf(req.PID, "upgrade")
		return err
	})
	if err != nil {
		return nil, err
	}
	orig, err := readLaunch(m.opts.Proc, req.PID)
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("read how PID %d was started", req.PID), "", err)
	}
	args := req.Args
	if args == nil && len(orig.argv) > 1 {
		args = orig.argv[1:]
	}
	env, _ := activation.MergeEnv(orig.env, req.Env)

	id := newID()
	op.setClone(id)
	log := m.log.With("id", id, "source_pid", req.PID, "exec", req.Exec)
	u := &upgrading{m: m, id: id, log: log}
	rec, err := u.start(req, p, orig, append([]string{req.Exec}, args...), env, listeners, who, op, t0)
	if err != nil {
		if uerr := u.undo(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		log.Warn("upgrade failed", "err", err)
		return nil, err
	}
	log.Info("upgrade started", "pid", rec.PID)
	return m.handOver(ctx, rec, req.PID, listeners, hp, op, t0)
}

// preflightUpgrade checks the target as for a clone, minus what only CRIU
// cares about (fd kinds, rlimits, MPTCP is fine: the socket is passed as is).
func (m *Manager) preflightUpgrade(req api.UpgradeRequest, who Caller) (*plan, error) {
	pid := req.PID
	st, err := m.opts.Proc.Status(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", pid), "check the PID with 'ps'", nil)
		}
		return nil, fault.New(fault.Internal, fmt.Sprintf("read the status of PID %d", pid), "", err)
	}
	switch {
	case pid == 1:
		return nil, refuse(pid, "it is the host's init", "")
	case st.Kthread || st.PPid == 2 || pid == 2:
		return nil, refuse(pid, "it is a kernel thread", "only user-space processes can be upgraded")
	case st.State == 'Z' || st.State == 'X':
		return nil, refuse(pid, "it is a zombie", "")
	case m.ancestors[pid]:
		return nil, refuse(pid, "it is clonebotd itself or one of its ancestors", "")
	}
	if !who.Root() {
		if err := m.checkOwner(pid, st, who); err != nil {
			return nil, err
		}
	}
	p := &plan{pid: pid, rss: st.VmRSS}
	pi, err := m.inspect(pid)
	if err != nil {
		return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", pid), "it exited", err)
	}
	p.tree = []ProcInfo{*pi}
	if err := m.planPlacement(api.CloneRequest{PID: pid, NUMA: req.NUMA}, p); err != nil {
		return nil, err
	}
	return p, nil
}

// launch is how the original was started.
type launch struct {
	argv, env []string
	cwd       string
	cred      *syscall.Credential
	stdout    string // a regular file the original writes to, or ""
}

func readLaunch(pfs proc.FS, pid int) (*launch, error) {
	dir := filepath.Join(pfs.Root, strconv.Itoa(pid))
	l := &launch{}
	b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return nil, err
	}
	l.argv = splitNUL(b)
	if b, err = os.ReadFile(filepath.Join(dir, "environ")); err != nil {
		return nil, err
	}
	l.env = splitNUL(b)
	if l.cwd, err = os.Readlink(filepath.Join(dir, "cwd")); err != nil {
		return nil, err
	}
	st, err := pfs.Status(pid)
	if err != nil {
		return nil, err
	}
	if st.Uid[1] != 0 || st.Gid[1] != 0 {
		groups := make([]uint32, 0, len(st.Groups))
		for _, g := range st.Groups {
			groups = append(groups, uint32(g))
		}
		l.cred = &syscall.Credential{Uid: uint32(st.Uid[1]), Gid: uint32(st.Gid[1]), Groups: groups}
	}
	if t, err := os.Readlink(filepath.Join(dir, "fd", "1")); err == nil && filepath.IsAbs(t) && !strings.HasSuffix(t, " (deleted)") {
		if fi, err := os.Stat(t); err == nil && fi.Mode().IsRegular() {
			l.stdout = t
		}
	}
	return l, nil
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// upgrading is one upgrade being started, with what to undo on failure.
type upgrading struct {
	m   *Manager
	id  string
	log interface{ Warn(string, ...any) }
	dir string
	cg  *cgroup.Cgroup
	cmd *exec.Cmd
	e   *entry
	// reuseSet are the original's listeners that got SO_REUSEPORT from
	// the upgrade.
	reuseSet []handover.Socket
}

func (u *upgrading) start(req api.UpgradeRequest, p *plan, orig *launch, argv, env []string, listeners []handover.Socket, who Caller, op *operation, t0 time.Time) (*api.Clone, error) {
	m := u.m
	op.emit("prepare", api.EventStart, 0, "")
	u.dir = filepath.Join(m.opts.StateDir, "clones", u.id)
	if err := os.Mkdir(u.dir, 0o700); err != nil {
		return nil, fault.New(fault.Internal, "create "+u.dir, "", err)
	}
	cg, err := m.makeCgroup("upgrade", p, u.id, int64(req.MemoryMax), req.PidsMax)
	if err != nil {
		return nil, err
	}
	u.cg = cg

	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var names []string
	var recListeners []api.Listener
	for _, s := range listeners {
		l := api.Listener{PID: s.PID, FD: s.FD, Addr: s.Local.String(), Inode: s.Inode}
		f, err := u.listenerFor(s, &l)
		if err != nil {
			return nil, fault.New(fault.Failed, fmt.Sprintf("take a copy of PID %d's listener %s", s.PID, s.Local), "", err)
		}
		files = append(files, f)
		names = append(names, activation.Name(s.Local.String()))
		recListeners = append(recListeners, l)
	}
	logPath := filepath.Join(u.dir, "output.log")
	// The new process writes where the original wrote, unless that is a
	// file of clonebot's own (an upgrade of an upgrade), which goes with
	// its record.
	out := orig.stdout
	if out == "" || strings.HasPrefix(out, m.opts.StateDir+"/") {
		out = logPath
	}
	outf, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fault.New(fault.Internal, "open the new process's output "+out, "", err)
	}
	defer outf.Close()
	cgfd, err := cg.OpenFD()
	if err != nil {
		return nil, fault.New(fault.Internal, "open cgroup "+cg.Rel, "", err)
	}
	defer cgfd.Close()
	so := activation.StartOptions{Shim: m.opts.InitExe, Path: req.Exec, Args: argv, Env: env, Files: files, Names: names,
		Dir: orig.cwd, Credential: orig.cred, Cgroup: cgfd, Stdout: outf, Stderr: outf}
	if cg.Pinning == api.PinAffinity {
		so.CPUs, so.MemNodes = p.node.CPUs, []int{p.node.ID}
	}
	u.cmd, err = activation.Start(so)
	if err != nil {
		return nil, fault.New(fault.Failed, fmt.Sprintf("start %s for the upgrade of PID %d", req.Exec, req.PID), "", err)
	}
	pid := u.cmd.Process.Pid
	scopeWarning := m.registerScope(cg, pid, fmt.Sprintf("clonebot upgrade %s of PID %d", u.id, req.PID))
	now := time.Now().UTC()
	e := &entry{dir: u.dir, done: make(chan struct{}), cg: cg}
	e.rec = api.Clone{ID: u.id, Name: req.Name, SourcePID: req.PID, PID: pid, NSPID: pid, Cgroup: cg.Rel,
		NUMANode: p.node.ID, CPUs: p.node.CPUList, Mems: strconv.Itoa(p.node.ID), Pinning: cg.Pinning, Freeze: "none",
		State: api.StateRunning, CreatedAt: now, MemoryMax: req.MemoryMax, PidsMax: req.PidsMax, LogPath: out,
		Listeners: recListeners, Kind: api.KindUpgrade, Operation: op.id}
	if e.rec.Name == "" {
		e.rec.Name = sanitizeName(filepath.Base(req.Exec))
	}
	if scopeWarning != "" {
		e.rec.Warnings = append(e.rec.Warnings, scopeWarning)
	}
	e.st = stored{OwnerUID: who.UID, InitPID: pid, CgroupRel: cg.Rel}
	if s, err := m.opts.Proc.Stat(pid); err == nil {
		e.st.InitStart = s.StartTime
	}
	cmd := u.cmd
	e.wait = func() (*nsinit.ExitStatus, error) {
		err := cmd.Wait()
		st := &nsinit.ExitStatus{ExitedAt: time.Now().UTC()}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Code = 128 + int(ws.Signal())
			st.Signal = unix.SignalName(ws.Signal())
		} else {
			st.Code = cmd.ProcessState.ExitCode()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = nil
		}
		return st, err
	}
	e.rec.TimingsMS = api.Timings{Total: ms(time.Since(t0))}
	u.e = e
	if err := m.register(e); err != nil {
		return nil, err
	}
	m.mu.Lock()
	perr := m.persist(e)
	m.mu.Unlock()
	if perr != nil {
		return nil, fault.New(fault.Internal, "record the upgrade", "", perr)
	}
	m.watch(e)
	op.emit("prepare", api.EventDone, 0, fmt.Sprintf("PID %d started with %d inherited sockets", pid, len(files)))
	rec := e.rec
	return &rec, nil
}

// listenerFor returns the socket the new process gets for the original's
// listener s: a sibling of its own in s's SO_REUSEPORT group (set from
// outside when s had none, and recorded in l), so that new connections can
// be steered to the new process before the original drains. Where no
// sibling can be made (MPTCP, UDP) it gets s itself: both then accept from
// one queue, and the drain cannot steer.
func (u *upgrading) listenerFor(s handover.Socket, l *api.Listener) (*os.File, error) {
	if s.Listening && !s.MPTCP() {
		set := false
		if !s.ReusePort {
			if err := handover.SetReusePort(s, true); err != nil {
				u.log.Warn("the new process shares the original's socket", "socket", s.String(), "err", err)
				return handover.Dup(s)
			}
			set = true
			u.reuseSet = append(u.reuseSet, s)
		}
		f, err := handover.Sibling(s)
		if err == nil {
			l.ReusePortSet = set
			return f, nil
		}
		u.log.Warn("the new process shares the original's socket", "socket", s.String(), "err", err)
		if set {
			if err := handover.SetReusePort(s, false); err != nil {
				return nil, err
			}
			u.reuseSet = u.reuseSet[:len(u.reuseSet)-1]
		}
	}
	return handover.Dup(s)
}

// undo kills the new process and removes what the upgrade made.
func (u *upgrading) undo() error {
	err := u.remove()
	// The original's listeners as they were, now that the new process
	// (which held their siblings) is gone.
	for _, s := range u.reuseSet {
		if rerr := handover.SetReusePort(s, false); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

func (u *upgrading) remove() error {
	var errs []error
	if u.e != nil {
		if _, err := u.m.Remove(context.Background(), u.id, RootCaller); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if u.cmd != nil {
		_ = u.cmd.Process.Kill()
		_ = u.cmd.Wait()
	}
	if u.cg != nil {
		if err := destroyCgroup(u.cg); err != nil {
			errs = append(errs, err)
		}
	}
	if u.dir != "" {
		if err := os.RemoveAll(u.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
