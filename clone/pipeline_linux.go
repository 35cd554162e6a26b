//go:build linux

package clone

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/cgroup"
	"github.com/clonebot/clonebot/criu"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/internal/failpoint"
	"github.com/clonebot/clonebot/nsinit"
	"github.com/clonebot/clonebot/numa"
	"github.com/clonebot/clonebot/proc"
	"golang.org/x/sys/unix"
)

// plan is everything preflight decided, before anything is frozen.
type plan struct {
	pid     int
	tree    []ProcInfo
	sockets []handover.Socket
	// freezeCgroup is the target's own cgroup v2 directory when it holds just
	// the tree; "" means CRIU seizes the tasks with ptrace.
	freezeCgroup string
	shellJob     bool
	stdio        StdioPlan
	// streams are the tree's journald streams, replaced in the clone.
	streams  []OutsideStream
	ttyKeys  []string
	rss      uint64
	node     numa.Node
	pinning  string
	warnings []string
}

// Clone makes a live copy of the process tree rooted at req.PID. The
// original keeps running; the clone runs in new PID and mount namespaces
// inside clonebot.slice/<id>, pinned to one NUMA node, and binds the
// original's listeners beside it (SO_REUSEPORT, set from outside if needed).
//
// Whatever fails, the target is left running and released, any SO_REUSEPORT
// clonebot set is cleared again, and the half-made clone (init, namespace,
// cgroup, images) is removed.
func (m *Manager) Clone(ctx context.Context, req api.CloneRequest, who Caller) (*api.Clone, error) {
	op, err := m.beginOp(req.Operation, "clone", who)
	if err != nil {
		return nil, err
	}
	rec, err := m.clone(ctx, req, who, op, false)
	m.endOp(op, err)
	return rec, err
}

// clone runs the pipeline; claimed is true when the caller already holds
// the target (a takeover).
func (m *Manager) clone(ctx context.Context, req api.CloneRequest, who Caller, op *operation, claimed bool) (*api.Clone, error) {
	t0 := time.Now()
	if err := validate(req); err != nil {
		return nil, err
	}
	if _, err := m.ready(ctx); err != nil {
		return nil, err
	}
	if !claimed {
		release, err := m.claim(req.PID, "clone")
		if err != nil {
			return nil, err
		}
		defer release()
	}

	var tm api.Timings
	var p *plan
	err := op.phase("preflight", func() (err error) {
		if err := failpoint.Inject("preflight"); err != nil {
			return fault.New(fault.Failed, fmt.Sprintf("preflight of PID %d", req.PID), "", err)
		}
		p, err = m.preflight(req, who)
		return err
	})
	tm.Preflight = ms(time.Since(t0))
	if err != nil {
		return nil, err
	}
	id := newID()
	op.setClone(id)
	log := m.log.With("id", id, "source_pid", req.PID)
	log.Info("cloning", "processes", len(p.tree), "node", p.node.ID, "pinning", p.pinning, "freeze", freezeMode(p), "isolate_net", req.IsolateNet)

	c := &making{m: m, p: p, id: id, req: req, who: who, log: log, op: op}
	rec, err := c.run(ctx, &tm, t0)
	if err != nil {
		uerr := c.undo()
		var ce *criu.Error
		if errors.As(err, &ce) {
			if kept, ok := c.keptLogs[ce.LogPath]; ok {
				ce.LogPath = kept
			}
		}
		if uerr != nil {
			log.Error("cleanup after a failed clone was incomplete", "err", uerr)
			err = errors.Join(err, uerr)
		}
		log.Warn("clone failed", "err", err)
		return nil, err
	}
	log.Info("cloned", "pid", rec.PID, "frozen_ms", rec.FrozenMS, "total_ms", rec.TimingsMS.Total)
	return rec, nil
}

func freezeMode(p *plan) string {
	if p.freezeCgroup != "" {
		return "cgroup"
	}
	return "ptrace"
}

func validate(req api.CloneRequest) error {
	if req.PID <= 0 {
		return fault.New(fault.Invalid, fmt.Sprintf("pid %d: want a positive process ID", req.PID), "", nil)
	}
	if err := req.NUMA.Validate(); err != nil {
		return fault.New(fault.Invalid, err.Error(), "", nil)
	}
	if err := ValidName(req.Name); err != nil {
		return fault.New(fault.Invalid, err.Error(), "", nil)
	}
	if req.MemoryMax < 0 || req.PidsMax < 0 {
		return fault.New(fault.Invalid, "memory_max and pids_max must not be negative", "", nil)
	}
	switch req.LazyPages {
	case "", "auto", "on", "off":
	default:
		return fault.New(fault.Invalid, fmt.Sprintf("lazy_pages %q: want auto, on or off", req.LazyPages), "", nil)
	}
	switch req.Precopy {
	case "", "auto", "on", "off":
	default:
		return fault.New(fault.Invalid, fmt.Sprintf("precopy %q: want auto, on or off", req.Precopy), "", nil)
	}
	return nil
}

// exitedBeforeClone is the error for a target that exited after
// preflight, before its checkpoint was complete.
func exitedBeforeClone(pid int) error {
	return fault.New(fault.NotFound, fmt.Sprintf("PID %d exited before it could be cloned", pid), "there is nothing left to clone", nil)
}

// exited reports whether a step that failed with err failed because the
// target is exiting or gone: ESRCH (pidfd_getfd's answer for a process that
// has freed its files), or a process that is no longer alive. A process
// killed a moment ago may still look alive in /proc while its files are
// already gone, so the error is asked first.
func (m *Manager) exited(pid int, err error) bool {
	return errors.Is(err, unix.ESRCH) || !m.opts.Proc.Alive(pid)
}

func refuse(pid int, what, hint string) error {
	return fault.New(fault.Refused, fmt.Sprintf("cannot clone PID %d: %s", pid, what), hint, nil)
}

// preflight reads the target tree and refuses, with the cause and the
// remedy, whatever cannot work. Nothing is changed yet. A target that exits
// while it is read is a 404, whichever read noticed first.
func (m *Manager) preflight(req api.CloneRequest, who Caller) (*plan, error) {
	p, err := m.readPlan(req, who)
	if err != nil && fault.Is(err, fault.Internal) && m.exited(req.PID, err) {
		return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", req.PID), "it exited during preflight", nil)
	}
	return p, err
}

func (m *Manager) readPlan(req api.CloneRequest, who Caller) (*plan, error) {
	pid := req.PID
	pfs := m.opts.Proc
	p := &plan{pid: pid}
	if pid == 1 {
		return nil, refuse(pid, "it is the host's init", "clone a service's own process instead")
	}
	st, err := pfs.Status(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", pid), "check the PID with 'ps'", nil)
		}
		return nil, fault.New(fault.Internal, fmt.Sprintf("read the status of PID %d", pid), "", err)
	}
	stat, err := pfs.Stat(pid)
	if err != nil {
		return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", pid), "it exited", err)
	}
	switch {
	case stat.IsKernelThread() || st.Kthread || st.PPid == 2 || pid == 2:
		return nil, refuse(pid, fmt.Sprintf("it is a kernel thread (%s)", st.Name), "only user-space processes can be cloned")
	case st.State == 'Z' || st.State == 'X':
		return nil, refuse(pid, "it is a zombie (exited, not yet reaped)", "clone a live process")
	case m.ancestors[pid]:
		return nil, refuse(pid, "it is clonebotd itself or one of its ancestors", "clone another process")
	case st.TracerPid != 0:
		return nil, refuse(pid, fmt.Sprintf("it is traced by PID %d (a debugger or strace?)", st.TracerPid), "detach the tracer and retry")
	case len(st.NSpid) > 1:
		return nil, refuse(pid, fmt.Sprintf("it runs in a nested PID namespace (PID %d there), e.g. a container or another clone", st.NSpid[len(st.NSpid)-1]),
			"clone the original process on the host instead")
	}
	if !who.Root() {
		if err := m.checkOwner(pid, st, who); err != nil {
			return nil, err
		}
	}

	pids, err := pfs.Tree(pid)
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("walk the process tree of PID %d", pid), "", err)
	}
	inTree := map[int]bool{}
	for _, q := range pids {
		inTree[q] = true
	}
	var rm room
	for _, q := range pids {
		pi, err := m.inspect(q)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && q != pid {
				continue // a child exited meanwhile (the target: preflight's 404)
			}
			return nil, fault.New(fault.Internal, fmt.Sprintf("inspect PID %d of the tree of PID %d", q, pid), "", err)
		}
		if m.ancestors[q] {
			return nil, refuse(pid, fmt.Sprintf("its tree contains clonebotd or an ancestor of it (PID %d)", q), "clone another process")
		}
		if !who.Root() {
			if err := m.checkOwner(q, pi.Status, who); err != nil {
				return nil, err
			}
		}
		if !m.caps["sys_resource"] && !sameIDs(pi.Status) {
			return nil, refuse(pid, fmt.Sprintf("PID %d (%s) of its tree runs as uid %d gid %d, and CRIU must read the rlimits of every process, which needs CAP_SYS_RESOURCE for another uid; clonebotd lacks it",
				q, pi.Status.Name, pi.Status.Uid[1], pi.Status.Gid[1]),
				"give clonebotd CAP_SYS_RESOURCE, or run the whole tree as root (nginx: 'user root;')")
		}
		for _, fd := range pi.FDs {
			if why, bad := fd.Unsupported(); bad {
				return nil, refuse(pid, fmt.Sprintf("PID %d (%s) has fd %d open on %s (%s), which CRIU cannot checkpoint", q, pi.Status.Name, fd.Num, fd.Target, why),
					"clone a process that does not use it")
			}
		}
		if len(pi.Status.NSsid) > 0 && !inTree[pi.Status.NSsid[0]] {
			p.shellJob = true // its session leader (a shell) stays behind
		}
		p.rss += pi.Status.VmRSS
		own := pi.Status.RssAnon + pi.Status.RssShmem
		rm.dump += own
		rm.largest = max(rm.largest, own)
		p.tree = append(p.tree, *pi)
	}

	socks, err := handover.FindSockets(pfs, pids)
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("read the sockets of the tree of PID %d", pid), "", err)
	}
	for _, s := range socks {
		if s.MPTCP() {
			return nil, refuse(pid, fmt.Sprintf("it has a Multipath TCP socket (%s), which CRIU cannot dump; Go >= 1.24 listens with MPTCP by default", s),
				"start the server with GODEBUG=multipathtcp=0, or call ListenConfig.SetMultipathTCP(false)")
		}
	}
	p.sockets = socks
	if p.streams, err = m.planStreams(pid, p.tree); err != nil {
		return nil, err
	}

	if m.cg != nil {
		if rel, err := m.cg.Of(pid); err == nil && rel != "/" && rel != "" {
			if only, err := m.cg.HoldsOnly(rel, pids); err == nil && only {
				p.freezeCgroup = m.cg.Path(rel)
			}
		}
	}

	// The chosen node's shortage is the more useful refusal ("pick another
	// node"), so placement is checked first, then the host as a whole.
	if err := m.planPlacement(req, p); err != nil {
		return nil, err
	}
	m.measureRoom(&rm)
	if err := rm.check(pid); err != nil {
		return nil, err
	}
	return p, nil
}

// sameIDs reports whether a process runs with the daemon's ids (root):
// prlimit(2) on it then needs no CAP_SYS_RESOURCE.
func sameIDs(st *proc.Status) bool {
	u, g := os.Geteuid(), os.Getegid()
	for i := 0; i < 3; i++ {
		if st.Uid[i] != u || st.Gid[i] != g {
			return false
		}
	}
	return true
}

// checkOwner lets a non-root caller act only on processes it could ptrace
// (the kernel's PTRACE_MODE_ATTACH_REALCREDS rules): the process's real,
// effective and saved uids and gids are the caller's, it holds no
// capability the caller lacks (a non-root caller has none), and it is
// dumpable (the kernel then keeps /proc/PID/stat owned by its uid; a
// setuid or prctl(PR_SET_DUMPABLE, 0) process has it owned by root).
func (m *Manager) checkOwner(pid int, st *proc.Status, who Caller) error {
	deny := func(why string) error {
		return fault.New(fault.Forbidden, fmt.Sprintf("uid %d may not act on PID %d: %s", who.UID, pid, why),
			"you may act only on processes you could debug (same uid and gid, no extra privileges); ask root", nil)
	}
	for i := 0; i < 3; i++ {
		if st.Uid[i] != who.UID {
			return deny(fmt.Sprintf("it runs as uid %d", st.Uid[i]))
		}
		if st.Gid[i] != who.GID {
			return deny(fmt.Sprintf("it runs with gid %d", st.Gid[i]))
		}
	}
	if st.CapPrm != 0 {
		return deny(fmt.Sprintf("it holds capabilities (CapPrm %x)", st.CapPrm))
	}
	var sb unix.Stat_t
	if err := unix.Stat(filepath.Join(m.opts.Proc.Root, strconv.Itoa(pid), "stat"), &sb); err == nil && int(sb.Uid) != who.UID {
		return deny("it is not dumpable (setuid, or prctl PR_SET_DUMPABLE 0)")
	}
	return nil
}

// inspect reads what planning needs of one process.
func (m *Manager) inspect(pid int) (*ProcInfo, error) {
	pfs := m.opts.Proc
	st, err := pfs.Status(pid)
	if err != nil {
		return nil, err
	}
	stat, err := pfs.Stat(pid)
	if err != nil {
		return nil, err
	}
	fds, err := pfs.FDs(pid)
	if err != nil {
		return nil, err
	}
	pi := &ProcInfo{PID: pid, Status: st, Stat: stat, FDs: fds, Flags: map[int]uint32{}, FileKeys: map[int]string{}}
	for _, fd := range fds {
		stdFile := fd.Kind == proc.FDFile && (fd.Num == 1 || fd.Num == 2)
		if fd.Kind != proc.FDPipe && fd.Kind != proc.FDTTY && !stdFile {
			continue
		}
		info, err := pfs.FDInfo(pid, fd.Num)
		if err != nil {
			continue
		}
		pi.Flags[fd.Num] = info.Flags
		if stdFile {
			var sb unix.Stat_t
			if err := unix.Stat(filepath.Join(pfs.Root, strconv.Itoa(pid), "fd", strconv.Itoa(fd.Num)), &sb); err == nil && sb.Mode&unix.S_IFMT == unix.S_IFREG {
				pi.FileKeys[fd.Num] = fmt.Sprintf("file[%x:%x]", info.MntID, sb.Ino)
			}
		}
	}
	return pi, nil
}

// planPlacement chooses the NUMA node and how the clone is pinned to it.
func (m *Manager) planPlacement(req api.CloneRequest, p *plan) error {
	topo, err := numa.ReadTopology(m.opts.NodeRoot)
	if err != nil {
		return fault.New(fault.Internal, "read the NUMA topology", "", err)
	}
	in := numa.Inputs{Topology: topo, ClonesPerNode: m.clonesPerNode(), NeedBytes: p.rss}
	if len(topo.Nodes) > 1 && (req.NUMA == "" || req.NUMA == api.PlaceSame) {
		in.TargetBytes = map[int]uint64{}
		for _, pi := range p.tree {
			maps, err := m.opts.Proc.NUMAMaps(pi.PID)
			if err != nil {
				continue
			}
			for n, b := range proc.NodeBytes(maps) {
				in.TargetBytes[n] += b
			}
		}
	}
	id, err := numa.Choose(req.NUMA, in)
	if err != nil {
		var nsn *numa.NoSuchNodeError
		var nm *numa.NoMemoryError
		switch {
		case errors.As(err, &nsn):
			return fault.New(fault.Invalid, err.Error(), "pick one of the nodes 'clonebotctl status' lists", nil)
		case errors.As(err, &nm):
			return refuse(p.pid, err.Error(), "pick another node, or free memory on this one")
		}
		return fault.New(fault.Internal, "choose a NUMA node", "", err)
	}
	p.node, _ = topo.Node(id)
	p.pinning = m.cg.PinningMode()
	return nil
}

func (m *Manager) clonesPerNode() map[int]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int]int{}
	for _, e := range m.clones {
		if e.rec.State != api.StateExited {
			out[e.rec.NUMANode]++
		}
	}
	return out
}

// making is one clone being made, with what must be undone if it fails.
type making struct {
	m   *Manager
	p   *plan
	id  string
	req api.CloneRequest
	who Caller
	log interface {
		Info(string, ...any)
		Warn(string, ...any)
		Error(string, ...any)
	}

	dir, imgDir string
	cg          *cgroup.Cgroup
	init        *nsinit.Process
	reuseSet    []handover.Socket // listeners we set SO_REUSEPORT on
	e           *entry
	op          *operation
	keptLogs    map[string]string // where undo moved the logs
	lazy        bool
	// initWaited, when set, delivers the init's status: something already
	// waits for it.
	initWaited chan *nsinit.ExitStatus
}

func (c *making) run(ctx context.Context, tm *api.Timings, t0 time.Time) (*api.Clone, error) {
	m, p := c.m, c.p
	c.op.emit("prepare", api.EventStart, 0, "")
	c.dir = filepath.Join(m.opts.StateDir, "clones", c.id)
	c.imgDir = filepath.Join(m.opts.ImageDir, c.id)
	for _, d := range []string{c.dir, c.imgDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fault.New(fault.Internal, fmt.Sprintf("create %s for clone %s", d, c.id), "", err)
		}
	}
	logPath := filepath.Join(c.dir, "output.log")
	p.stdio = PlanStdio(p.tree, logPath)
	if p.stdio.ShellJob {
		p.shellJob = true
	}
	var inherit []nsinit.InheritSpec
	var warnings []string
	for _, in := range p.stdio.Inherit {
		if strings.HasPrefix(in.Key, "/dev/") {
			key, err := ttyKey(p, in.Key)
			if err != nil {
				return nil, fault.New(fault.Internal, fmt.Sprintf("identify terminal %s of PID %d", in.Key, p.pid), "", err)
			}
			p.ttyKeys = append(p.ttyKeys, key)
			warnings = append(warnings, fmt.Sprintf("the original's terminal %s (%s) is a new terminal in the clone, logged to %s", in.Key, in.Why, logPath))
			continue
		}
		inherit = append(inherit, nsinit.InheritSpec{Key: in.Key, Path: in.Path, Flags: in.Flags})
		switch {
		case strings.HasPrefix(in.Key, "file["):
			warnings = append(warnings, fmt.Sprintf("the original's output file %s goes to %s in the clone", in.Why, logPath))
		case in.Path == logPath:
			warnings = append(warnings, fmt.Sprintf("the original's pipe %s (%s) goes to %s in the clone", in.Key, in.Why, logPath))
		}
	}
	streamInherit, streamRecs, streamExternal, streamWarnings := c.streamInherits()
	inherit = append(inherit, streamInherit...)
	warnings = append(warnings, streamWarnings...)

	now := time.Now().UTC()
	c.e = &entry{dir: c.dir, done: make(chan struct{})}
	c.e.rec = api.Clone{
		ID: c.id, Name: c.req.Name, SourcePID: p.pid, NUMANode: p.node.ID, CPUs: p.node.CPUList,
		Mems: strconv.Itoa(p.node.ID), Pinning: p.pinning, Freeze: freezeMode(p), State: api.StateCreating,
		CreatedAt: now, MemoryMax: c.req.MemoryMax, PidsMax: c.req.PidsMax, LogPath: logPath,
		Kind: api.KindClone, IsolatedNet: c.req.IsolateNet, Operation: c.op.id, Streams: streamRecs,
	}
	if c.e.rec.Name == "" {
		c.e.rec.Name = sanitizeName(p.tree[0].Status.Name)
	}
	c.e.st = stored{OwnerUID: c.who.UID, StatusFile: filepath.Join(c.dir, "exit.json")}

	// Cgroup first: the init is created inside it so that everything the
	// restore allocates is charged and placed there.
	cg, err := m.makeCgroup("clone", p, c.id, int64(c.req.MemoryMax), c.req.PidsMax)
	if err != nil {
		return nil, err
	}
	c.cg = cg
	c.e.cg = cg
	c.e.rec.Cgroup = cg.Rel
	c.e.st.CgroupRel = cg.Rel
	c.e.rec.Pinning = cg.Pinning
	c.e.st.FreezeCgroup = p.freezeCgroup
	// Listeners root does not own are lent to root for the restore
	// (sockowner_linux.go); the journal names their owners.
	if !c.req.IsolateNet {
		owners, err := listenerOwners(p.sockets)
		if err != nil {
			if m.exited(p.pid, err) {
				return nil, exitedBeforeClone(p.pid)
			}
			return nil, fault.New(fault.Failed, fmt.Sprintf("read the owners of the listeners of PID %d", p.pid), "", err)
		}
		c.e.st.ListenerOwners = owners
	}
	if err := m.register(c.e); err != nil {
		return nil, err
	}
	// From here on, the record is the journal a restarted daemon undoes a
	// half-made clone from.
	if err := m.persistLocked(c.e); err != nil {
		return nil, fault.New(fault.Internal, "record the clone", "", err)
	}

	// Listeners lacking SO_REUSEPORT get it now, so the clone can bind
	// beside the original (an isolated clone binds in its own namespace).
	for _, s := range p.sockets {
		if s.ReusePort || c.req.IsolateNet {
			continue
		}
		if err := handover.SetReusePort(s, true); err != nil {
			if m.exited(p.pid, err) {
				return nil, exitedBeforeClone(p.pid)
			}
			return nil, fault.New(fault.Failed, fmt.Sprintf("set SO_REUSEPORT on %s of PID %d", s.Local, s.PID), "the clone could not bind beside the original without it", err)
		}
		c.reuseSet = append(c.reuseSet, s)
	}
	for _, s := range p.sockets {
		c.e.rec.Listeners = append(c.e.rec.Listeners, api.Listener{PID: s.PID, FD: s.FD, Addr: s.Local.String(), Inode: s.Inode, ReusePortSet: !s.ReusePort && !c.req.IsolateNet})
	}

	// The init waits in its namespaces for the restore request: starting it
	// now keeps its cost out of the window between dump and restore.
	cgfd, err := cg.OpenFD()
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("open cgroup %s", cg.Rel), "", err)
	}
	initLog, err := os.OpenFile(filepath.Join(c.dir, "init.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		cgfd.Close()
		return nil, fault.New(fault.Internal, "create the init's log", "", err)
	}
	c.init, err = nsinit.Start(nsinit.StartOptions{Exe: m.opts.InitExe, Cgroup: cgfd, Log: initLog, NewNet: c.req.IsolateNet})
	cgfd.Close()
	initLog.Close()
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("start the init of clone %s", c.id), "", err)
	}
	if w := m.registerScope(cg, c.init.Pid, fmt.Sprintf("clonebot clone %s of PID %d", c.id, p.pid)); w != "" {
		p.warnings = append(p.warnings, w)
	}
	c.e.init = c.init
	c.e.wait = c.init.Wait
	c.e.st.InitPID = c.init.Pid
	if s, err := m.opts.Proc.Stat(c.init.Pid); err == nil {
		c.e.st.InitStart = s.StartTime
	}
	if err := m.persistLocked(c.e); err != nil {
		return nil, fault.New(fault.Internal, "record the clone", "", err)
	}

	c.op.emit("prepare", api.EventDone, 0, "")

	// Freeze and checkpoint: CRIU freezes (cgroup or ptrace), dumps, thaws.
	c.op.emit("checkpoint", api.EventStart, 0, "")
	dopts := criu.DumpOptions{
		PID: p.pid, ImageDir: c.imgDir, WorkDir: c.dir, LogLevel: m.opts.CRIULogLevel,
		FreezeCgroup: p.freezeCgroup, ExtUnixSk: true, ShellJob: p.shellJob,
		External: append(slices.Clone(p.stdio.External), streamExternal...),
	}
	if failpoint.Enabled() {
		dopts.OnFrozen = func() error { return failpoint.Inject("after-freeze") }
		_ = failpoint.Inject("during-dump")
	}
	// Pre-copy: the memory goes out while the original runs; the final dump
	// (and the freeze) then covers only what was dirtied since.
	restoreDir := c.imgDir
	c.e.rec.Precopy = c.precopy(&dopts)
	if c.e.rec.Precopy != nil && c.e.rec.Precopy.Used {
		restoreDir = dopts.ImageDir
	}
	restorePipes, serr := m.pipeSize.acquire()
	if serr != nil {
		c.log.Warn("dumping with the default pipe size", "err", serr)
		restorePipes = func() error { return nil }
	}
	tDump := time.Now()
	ds, err := criu.Runner{Path: m.opts.CRIUPath}.Dump(dopts)
	dumpWall := ms(time.Since(tDump))
	if rerr := restorePipes(); rerr != nil {
		c.log.Error("could not put back fs.pipe-max-size", "err", rerr)
	}
	if err != nil {
		return nil, c.criuFault("checkpoint", err)
	}
	if err := failpoint.Inject("after-dump"); err != nil {
		return nil, fault.New(fault.Failed, fmt.Sprintf("after the checkpoint of PID %d", p.pid), "", err)
	}
	c.e.rec.DumpedBytes = int64(ds.PagesWritten) * int64(os.Getpagesize())
	c.op.emit("checkpoint", api.EventDone, c.e.rec.DumpedBytes,
		fmt.Sprintf("original frozen %.1f ms", float64(ds.FreezingUS+ds.FrozenUS)/1000))
	tm.Freeze = float64(ds.FreezingUS) / 1000
	tm.Checkpoint = dumpWall - tm.Freeze
	c.e.rec.FrozenMS = float64(ds.FreezingUS+ds.FrozenUS) / 1000
	if len(p.ttyKeys) > 0 {
		if err := criu.DetachTerminals(restoreDir); err != nil {
			return nil, fault.New(fault.Internal, fmt.Sprintf("detach the terminal of PID %d in the images", p.pid), "", err)
		}
	}
	if err := criu.SkipSizeCheck(restoreDir, p.stdio.External); err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("give the clone of PID %d output files of its own in the images", p.pid), "", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, c.ctxFault("after the checkpoint", err)
	}

	// Restore in the init's namespaces.
	c.op.emit("restore", api.EventStart, 0, "")
	tRestore := time.Now()
	icfg := nsinit.Config{
		CRIUPath: m.opts.CRIUPath, ImageDir: restoreDir, WorkDir: c.dir, LogLevel: m.opts.CRIULogLevel,
		Inherit: inherit, ShellJob: p.shellJob, ExtUnixSk: true, StatusFile: c.e.st.StatusFile,
		TTYs: p.ttyKeys, TTYLog: logPath, LoopbackUp: c.req.IsolateNet,
	}
	if cg.Pinning == api.PinAffinity {
		icfg.CPUs, icfg.MemNodes = p.node.CPUs, []int{p.node.ID}
	}
	icfg.Lazy = m.useLazy(c.req.LazyPages, c.e.rec.DumpedBytes)
	c.e.rec.LazyPages = icfg.Lazy
	c.lazy = icfg.Lazy
	if err := lendListeners(c.e.st.ListenerOwners); err != nil {
		return nil, fault.New(fault.Failed, fmt.Sprintf("lend the listeners of PID %d to root for the restore", p.pid),
			"CRIU restores listeners as root, and only sockets of one owner share a port", err)
	}
	_ = failpoint.Inject("during-restore")
	rep, err := c.init.Restore(ctx, icfg)
	tm.Restore = ms(time.Since(tRestore))
	if rerr := returnListeners(c.e.st.ListenerOwners); rerr != nil {
		c.log.Warn("could not give the original's listeners their owner back", "err", rerr)
		warnings = append(warnings, rerr.Error())
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, c.ctxFault("during the restore", ctx.Err())
		}
		var re *nsinit.RestoreError
		if errors.As(err, &re) {
			if ranAndExited(re.Report) {
				return nil, c.exitedAfterRestore("before CRIU had let go of all its threads")
			}
			return nil, c.criuFault("restore", &criu.Error{Op: "restore", Message: re.Report.Error, Hint: re.Report.Hint,
				LogPath: re.Report.LogPath, Lines: re.Report.Lines})
		}
		return nil, fault.New(fault.Failed, fmt.Sprintf("restore the clone of PID %d", p.pid), "", err)
	}
	c.op.emit("restore", api.EventDone, int64(rep.PagesRestored)*int64(os.Getpagesize()), "")
	c.e.rec.NSPID = rep.NSPID
	tm.Serving = ms(time.Since(t0))
	if !icfg.Lazy {
		tm.Resident = tm.Serving
		// The images have served their purpose; they hold a copy of the
		// original's memory, so they go now.
		c.removeImages()
	} else {
		// Pages still come from the images: they go once all are in.
		e := c.e
		c.init.OnReport = func(r nsinit.Report) { m.resident(e, c.imgDir, t0, r) }
	}

	if err := failpoint.Inject("after-restore"); err != nil {
		return nil, fault.New(fault.Failed, fmt.Sprintf("after the restore of PID %d", p.pid), "", err)
	}

	// Place and verify.
	c.op.emit("place", api.EventStart, 0, "")
	tPlace := time.Now()
	hostPID, err := c.findRoot(rep.NSPID)
	if err != nil {
		if st := c.exitedEarly(); st != nil {
			how := fmt.Sprintf("exit code %d", st.Code)
			if st.Signal != "" {
				how = "signal " + st.Signal
			}
			return nil, c.exitedAfterRestore(how)
		}
		return nil, fault.New(fault.Failed, fmt.Sprintf("find the restored clone of PID %d", p.pid), "", err)
	}
	c.e.rec.PID = hostPID
	c.e.rec.InitPID = c.init.Pid
	cloneTree, _ := m.opts.Proc.Tree(hostPID)
	if err := fillStreamInodes(m.opts.Proc, cloneTree, c.e.rec.Streams, p.streams); err != nil {
		warnings = append(warnings, fmt.Sprintf("could not check the clone's new journal streams: %v", err))
	}
	if cg.Pinning == api.PinAffinity {
		if err := pinTree(m.opts.Proc, cloneTree, p.node.CPUs); err != nil {
			return nil, fault.New(fault.Failed, fmt.Sprintf("pin the clone (PID %d) to node %d's CPUs %s", hostPID, p.node.ID, p.node.CPUList), "", err)
		}
	}
	c.e.rec.NUMALocalFraction = localFraction(m.opts.Proc, cloneTree, p.node.ID)
	if len(c.e.st.ListenerOwners) > 0 {
		if socks, err := handover.FindSockets(m.opts.Proc, cloneTree); err != nil {
			warnings = append(warnings, fmt.Sprintf("could not give the clone's listeners the original's owners: %v", err))
		} else {
			warnings = append(warnings, ownClonesListeners(c.e.st.ListenerOwners, socks)...)
		}
	}
	warnings = append(warnings, c.verifyListeners(cloneTree)...)
	tm.Place = ms(time.Since(tPlace))
	c.op.emit("place", api.EventDone, 0, fmt.Sprintf("node %d, %s pinning, %.0f%% of memory local", p.node.ID, cg.Pinning, 100*c.e.rec.NUMALocalFraction))
	tm.Total = ms(time.Since(t0))
	c.e.rec.TimingsMS = *tm
	c.e.rec.Warnings = append(p.warnings, warnings...)

	m.mu.Lock()
	c.e.rec.State = api.StateRunning
	c.e.rec.TimingsMS.Serving, c.e.rec.TimingsMS.Resident = tm.Serving, max(c.e.rec.TimingsMS.Resident, tm.Resident)
	perr := m.persist(c.e)
	m.mu.Unlock()
	if perr != nil {
		return nil, fault.New(fault.Internal, "record the clone", "", perr)
	}
	m.watch(c.e)
	rec := c.e.rec
	return &rec, nil
}

// Pre-copy bounds.
const (
	// PrecopyThreshold is the resident memory above which "auto" pre-copies.
	PrecopyThreshold = 64 << 20
	// maxPrecopyRounds bounds the pre-dumps of one clone.
	maxPrecopyRounds = 4
	// precopyEnough: a round that wrote less than this ends the rounds.
	precopyEnough = 8 << 20
)

// precopy runs pre-dump rounds while the dirty set shrinks (each at most
// half the one before, at most maxPrecopyRounds, until one is under
// precopyEnough), and points dopts at a final dump that writes only the
// pages dirtied since the last round. It returns nil when pre-copy was not
// asked for, and a note when it is unavailable or failed (the dump is then
// a plain one).
func (c *making) precopy(dopts *criu.DumpOptions) *api.PrecopyInfo {
	m := c.m
	if c.req.Precopy == "off" {
		return nil
	}
	m.criuMu.Lock()
	tracking := m.criuInfo != nil && m.criuInfo.Features["mem_track"]
	m.criuMu.Unlock()
	if !tracking {
		return &api.PrecopyInfo{Note: "the kernel has no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY): the whole dump ran with the original frozen"}
	}
	if c.req.Precopy != "on" && c.p.rss < PrecopyThreshold {
		return nil
	}
	info := &api.PrecopyInfo{}
	runner := criu.Runner{Path: m.opts.CRIUPath}
	page := int64(os.Getpagesize())
	parent := ""
	var prev int64
	for i := 1; i <= maxPrecopyRounds; i++ {
		dir := filepath.Join(c.imgDir, fmt.Sprintf("pre-%d", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			info.Note = "pre-copy stopped: " + err.Error()
			break
		}
		o := *dopts
		o.ImageDir, o.TrackMem, o.OnFrozen, o.ParentImg = dir, true, nil, ""
		if parent != "" {
			o.ParentImg = "../" + parent
		}
		t := time.Now()
		st, err := runner.PreDump(o)
		if err != nil {
			// A failed round leaves nothing to build on: plain dump.
			c.log.Warn("pre-copy failed; dumping plainly", "err", err)
			for j := 1; j <= i; j++ {
				_ = os.RemoveAll(filepath.Join(c.imgDir, fmt.Sprintf("pre-%d", j)))
			}
			return &api.PrecopyInfo{Note: "pre-copy failed, the dump was a plain one: " + err.Error()}
		}
		written := int64(st.PagesWritten) * page
		info.Rounds = append(info.Rounds, api.PrecopyRound{Bytes: written, FrozenMS: float64(st.FreezingUS+st.FrozenUS) / 1000, MS: ms(time.Since(t))})
		c.op.emit("precopy", api.EventDone, written, fmt.Sprintf("round %d", i))
		parent = filepath.Base(dir)
		if written < precopyEnough || (i > 1 && written*2 > prev) {
			break
		}
		prev = written
	}
	if parent == "" {
		return info
	}
	final := filepath.Join(c.imgDir, "final")
	if err := os.Mkdir(final, 0o700); err != nil {
		info.Note = "pre-copy unused: " + err.Error()
		return info
	}
	dopts.ImageDir, dopts.ParentImg, dopts.TrackMem = final, "../"+parent, true
	info.Used = true
	return info
}

// useLazy decides whether memory is restored lazily: only where CRIU and
// the kernel support it, and (auto) when there is enough memory for the
// clone to start noticeably earlier than with a full copy.
func (m *Manager) useLazy(mode string, dumped int64) bool {
	m.criuMu.Lock()
	ok := m.criuInfo != nil && m.criuInfo.Features["lazy_pages"]
	m.criuMu.Unlock()
	switch mode {
	case "on":
		return ok
	case "off":
		return false
	}
	return ok && dumped >= LazyThreshold
}

// LazyThreshold is the dumped memory above which "auto" restores lazily.
const LazyThreshold = 64 << 20

// resident records that a lazily restored clone has all its pages (or that
// its page server failed and the clone was killed), and removes its images.
func (m *Manager) resident(e *entry, imgDir string, t0 time.Time, r nsinit.Report) {
	if err := os.RemoveAll(imgDir); err != nil {
		m.log.Warn("could not remove images", "dir", imgDir, "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Error != "" {
		e.rec.Warnings = append(e.rec.Warnings, r.Error)
		m.log.Error("lazy restore failed: clone killed", "id", e.rec.ID, "err", r.Error, "log", r.LogPath)
	} else {
		e.rec.TimingsMS.Resident = ms(time.Since(t0))
		m.log.Info("clone resident", "id", e.rec.ID, "resident_ms", e.rec.TimingsMS.Resident)
	}
	if err := m.persist(e); err != nil {
		m.log.Warn("could not record residency", "id", e.rec.ID, "err", err)
	}
}

func (c *making) removeImages() {
	if err := os.RemoveAll(c.imgDir); err != nil {
		c.log.Warn("could not remove images", "dir", c.imgDir, "err", err)
	}
}

// makeCgroup creates clonebot.slice/<id> for what (clone, upgrade) of
// p.pid: placed on p.node (cpuset where cgroup v2 has it), with the limits
// asked for. A limit whose controller this host lacks is a refusal naming
// the remedy.
func (m *Manager) makeCgroup(what string, p *plan, id string, memoryMax, pidsMax int64) (*cgroup.Cgroup, error) {
	cfg := cgroup.Config{MemoryMax: memoryMax, PidsMax: pidsMax}
	if p.pinning == api.PinCgroup {
		cfg.CPUs, cfg.Mems = p.node.CPUList, strconv.Itoa(p.node.ID)
	}
	name := id
	if m.cg.Systemd() {
		name = cgroup.ScopeName(id) // see registerScope
	}
	cg, err := m.cg.Create(m.opts.CgroupParent, name, cfg)
	if err != nil {
		var ue *cgroup.UnavailableError
		if errors.As(err, &ue) {
			return nil, fault.New(fault.Refused, fmt.Sprintf("cannot %s PID %d: %v", what, p.pid, err), ue.Hint, nil)
		}
		return nil, fault.New(fault.Internal, fmt.Sprintf("create cgroup %s/%s for the %s of PID %d", m.opts.CgroupParent, id, what, p.pid), "", err)
	}
	return cg, nil
}

// registerScope makes a clone's cgroup a transient systemd scope where
// systemd manages the hierarchy (cgroup.RegisterScope), so that systemctl
// shows the clone in clonebot.slice, once pid, its first process, is in
// it. A failure is only a warning, returned: the clone runs all the same,
// unseen by systemd.
func (m *Manager) registerScope(cg *cgroup.Cgroup, pid int, description string) string {
	if !m.cg.Systemd() {
		return ""
	}
	if err := cg.RegisterScope(context.Background(), pid, description); err != nil {
		m.log.Warn("systemd does not know the clone's cgroup", "cgroup", cg.Rel, "err", err)
		return fmt.Sprintf("systemctl does not show this clone: %v", err)
	}
	return ""
}

// register adds the entry being made to the manager's table.
func (m *Manager) register(e *entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fault.New(fault.Unavailable, "clonebotd is shutting down", "retry once it is back", nil)
	}
	m.clones[e.rec.ID] = e
	return nil
}

// criuFault turns a CRIU failure into a user-facing error that names the
// target, the phase, CRIU's own lines and where its log was kept.
func (c *making) criuFault(phase string, err error) error {
	if phase == "checkpoint" && !c.m.opts.Proc.Alive(c.p.pid) {
		return exitedBeforeClone(c.p.pid)
	}
	var ce *criu.Error
	if !errors.As(err, &ce) {
		return fault.New(fault.Failed, fmt.Sprintf("%s of PID %d failed", phase, c.p.pid), "", err)
	}
	hint := ce.Hint
	if hint == "" {
		hint = "read the CRIU log named above"
	}
	return fault.New(fault.Failed, fmt.Sprintf("clone of PID %d failed during the %s", c.p.pid, phase), hint, err)
}

func (c *making) ctxFault(when string, err error) error {
	k := fault.Timeout
	if errors.Is(err, context.Canceled) {
		k = fault.Failed
	}
	return fault.New(k, fmt.Sprintf("clone of PID %d stopped %s: %v", c.p.pid, when, err), "the original was left running; retry with a longer --timeout", err)
}

// undo removes everything a failed clone made and puts the original back
// as it was. It returns what it could not undo.
func (c *making) undo() error {
	m := c.m
	var errs []error
	if c.init != nil {
		c.init.Kill()
		if c.initWaited != nil {
			<-c.initWaited
		} else {
			_, _ = c.init.Wait()
		}
	}
	if c.cg != nil {
		if err := destroyCgroup(c.cg); err != nil {
			errs = append(errs, err)
		}
	}
	if c.imgDir != "" {
		if err := os.RemoveAll(c.imgDir); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range c.reuseSet {
		if err := handover.SetReusePort(s, false); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("clear SO_REUSEPORT again on %s of PID %d: %w", s.Local, s.PID, err))
		}
	}
	errs = append(errs, ensureReleased(m.opts.Proc, c.p)...)
	if c.e != nil {
		m.mu.Lock()
		delete(m.clones, c.id)
		m.mu.Unlock()
	}
	if c.dir != "" {
		if kept := m.keepLogs(c.id, c.dir); len(kept) > 0 {
			c.log.Info("kept the logs of the failed clone", "logs", kept)
			c.keptLogs = kept
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensureReleased checks that no process of the target tree is left frozen
// by us, and thaws its cgroup if CRIU left it frozen.
func ensureReleased(pfs proc.FS, p *plan) []error {
	var errs []error
	if p.freezeCgroup != "" {
		f := filepath.Join(p.freezeCgroup, "cgroup.freeze")
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "1" {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				errs = append(errs, fmt.Errorf("thaw %s after a failed clone of PID %d: %w", p.freezeCgroup, p.pid, err))
			}
		}
	}
	return errs
}

// ranAndExited tells a restore that CRIU reports failed only because the
// restored process ran and exited at once: CRIU's last step lets each thread
// go (PTRACE_DETACH), one by one, and a process whose first thread let go
// exits before the last is let go fails the detach with ESRCH ("Unable to
// detach 1194: No such process"). Seen under slow emulation (the test VM),
// where detaching a Go program's threads takes tens of milliseconds.
func ranAndExited(r nsinit.Report) bool {
	for _, l := range append([]string{r.Error}, r.Lines...) {
		if strings.Contains(l, "Unable to detach") && strings.Contains(l, "No such process") {
			return true
		}
	}
	return false
}

// exitedAfterRestore is the failure of a clone that exited right after its
// restore (how: its exit code, or when).
func (c *making) exitedAfterRestore(how string) error {
	p := c.p
	if !c.m.opts.Proc.Alive(p.pid) {
		// The original was about to exit, and so was its copy.
		return fault.New(fault.NotFound, fmt.Sprintf("PID %d exited while it was cloned, and its clone right after its restore (%s)", p.pid, how),
			"there is nothing left to clone", nil)
	}
	return fault.New(fault.Failed, fmt.Sprintf("the clone of PID %d exited right after its restore (%s)", p.pid, how),
		"its output is kept in "+filepath.Join(c.m.opts.StateDir, "logs", c.id+"-output.log"), nil)
}

// exitedEarly returns how the clone ended if its init exits within a
// moment (the clone died right after its restore), else nil.
func (c *making) exitedEarly() *nsinit.ExitStatus {
	ch := make(chan *nsinit.ExitStatus, 1)
	go func() {
		st, _ := c.init.Wait()
		ch <- st
	}()
	c.initWaited = ch
	select {
	case st := <-ch:
		c.initWaited = nil
		c.init = nil // reaped
		return st
	case <-time.After(time.Second):
		return nil // undo kills it and takes the status from initWaited
	}
}

// findRoot returns the host PID of the init's child whose PID in the
// namespace is nspid.
func (c *making) findRoot(nspid int) (int, error) {
	kids, err := c.m.opts.Proc.Children(c.init.Pid)
	if err != nil {
		return 0, err
	}
	for _, k := range kids {
		st, err := c.m.opts.Proc.Status(k)
		if err != nil || len(st.NSpid) == 0 {
			continue
		}
		if st.NSpid[len(st.NSpid)-1] == nspid {
			return k, nil
		}
	}
	return 0, fmt.Errorf("no child of the init (PID %d) has PID %d in the namespace", c.init.Pid, nspid)
}

// verifyListeners warns about listeners of the original the clone lacks.
func (c *making) verifyListeners(cloneTree []int) []string {
	var want []string
	for _, s := range c.p.sockets {
		if s.Listening {
			want = append(want, s.Local.String())
		}
	}
	if len(want) == 0 {
		return nil
	}
	got, err := handover.FindSockets(c.m.opts.Proc, cloneTree)
	if err != nil {
		return []string{fmt.Sprintf("could not check the clone's listeners: %v", err)}
	}
	var have []string
	for _, s := range got {
		if s.Listening {
			have = append(have, s.Local.String())
		}
	}
	var warns []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			warns = append(warns, fmt.Sprintf("the clone does not listen on %s like the original", w))
		}
	}
	return warns
}

// pinTree sets the affinity of every thread of every process in pids.
func pinTree(pfs proc.FS, pids []int, cpus []int) error {
	for _, pid := range pids {
		tids, err := pfs.Threads(pid)
		if err != nil {
			continue
		}
		for _, tid := range tids {
			if err := numa.SetAffinity(tid, cpus); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// localFraction measures the share of the tree's resident pages on node.
func localFraction(pfs proc.FS, pids []int, node int) float64 {
	total := map[int]uint64{}
	for _, pid := range pids {
		maps, err := pfs.NUMAMaps(pid)
		if err != nil {
			continue
		}
		for n, b := range proc.NodeBytes(maps) {
			total[n] += b
		}
	}
	return numa.LocalFraction(total, node)
}

// ttyKey returns CRIU's name for the terminal path as the target holds it:
// tty[rdev:dev] in hex.
func ttyKey(p *plan, path string) (string, error) {
	for _, pi := range p.tree {
		for _, fd := range pi.FDs {
			if fd.Kind == proc.FDTTY && fd.Target == path {
				var st unix.Stat_t
				if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pi.PID, fd.Num), &st); err != nil {
					return "", err
				}
				return fmt.Sprintf("tty[%x:%x]", st.Rdev, st.Dev), nil
			}
		}
	}
	return "", fmt.Errorf("no fd holds %s", path)
}

// sanitizeName makes a default clone name from a process name.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			b[i] = '-'
		}
	}
	out := strings.TrimLeft(string(b), "-._")
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}
