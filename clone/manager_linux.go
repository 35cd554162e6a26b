//go:build linux

package clone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/cgroup"
	"github.com/clonebot/clonebot/criu"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/internal/atomicfile"
	"github.com/clonebot/clonebot/journal"
	"github.com/clonebot/clonebot/nsinit"
	"github.com/clonebot/clonebot/proc"
	"golang.org/x/sys/unix"
)

// Options configure a Manager. Every zero field means the default documented
// on it.
type Options struct {
	// CRIUPath is the criu binary; "" looks "criu" up on PATH.
	CRIUPath string
	// CRIULogLevel is CRIU's verbosity 1..4; 0 means 2 (errors and
	// warnings: no logging cost inside the freeze window).
	CRIULogLevel int
	// StateDir holds clone records and CRIU logs; "" means /var/lib/clonebot.
	StateDir string
	// ImageDir holds checkpoint images while a clone is made; "" means
	// /run/clonebot/images. A private tmpfs is mounted there unless one
	// already is (lying on a shared tmpfs such as /run is not enough).
	ImageDir string
	// CgroupParent is the parent of every clone's cgroup; "" means clonebot.slice.
	CgroupParent string
	// NodeRoot is the NUMA topology in sysfs; "" means /sys/devices/system/node.
	NodeRoot string
	// InitExe is the binary re-executed as each clone's init; "" means
	// /proc/self/exe (the caller must call nsinit.Main when nsinit.IsInit).
	InitExe string
	// JournalSocket is journald's stdout stream socket; "" means
	// /run/systemd/journal/stdout. A target's stream to it is replaced in
	// the clone by a new one; other unix connections out of the tree are
	// refused.
	JournalSocket string
	// Proc reads /proc; the zero value means proc.Default.
	Proc proc.FS
	// Log receives the manager's logs; nil discards them.
	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if o.StateDir == "" {
		o.StateDir = "/var/lib/clonebot"
	}
	if o.ImageDir == "" {
		o.ImageDir = "/run/clonebot/images"
	}
	if o.CgroupParent == "" {
		o.CgroupParent = "clonebot.slice"
	}
	if o.NodeRoot == "" {
		o.NodeRoot = "/sys/devices/system/node"
	}
	if o.JournalSocket == "" {
		o.JournalSocket = journal.DefaultStdoutSocket
	}
	if o.Proc.Root == "" {
		o.Proc = proc.Default
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CRIULogLevel == 0 {
		o.CRIULogLevel = 2
	}
}

// Manager makes, tracks and removes clones. It is safe for concurrent use;
// operations on one target are serialized (a second one gets a Conflict).
type Manager struct {
	opts      Options
	log       *slog.Logger
	cg        *cgroup.Hierarchy
	cgErr     error
	ancestors map[int]bool // the daemon and its ancestors: never cloned
	caps      map[string]bool

	criuMu   sync.Mutex
	criuInfo *criu.Info
	criuErr  error

	// mountedImages is true when New mounted the image tmpfs (Close
	// unmounts it).
	mountedImages bool
	// kdatInstalled is true when New installed CRIU's kerndat cache on a
	// /run that is not a tmpfs (Close removes it).
	kdatInstalled bool

	ops      ops
	migrate  *sysctlGuard // net.ipv4.tcp_migrate_req=1 during handovers
	pipeSize *sysctlGuard // fs.pipe-max-size raised during dumps

	mu     sync.Mutex
	clones map[string]*entry
	busy   map[int]string // target PID -> operation
	closed bool
	wg     sync.WaitGroup
}

// entry is one clone known to the manager.
type entry struct {
	rec  api.Clone
	st   stored
	init *nsinit.Process // nil when adopted after a restart
	// wait, when set, waits for the clone's end (the daemon's own child).
	wait func() (*nsinit.ExitStatus, error)
	// handover names the handover phase while the clone replaces its
	// original (it cannot be removed then), rollingBack that the handover
	// itself is removing it; both under Manager.mu.
	handover    string
	rollingBack bool
	cg          *cgroup.Cgroup
	dir         string
	done        chan struct{} // closed once the clone has exited and is recorded
}

// stored is what a clone's directory keeps across daemon restarts.
type stored struct {
	Record     api.Clone `json:"record"`
	InitPID    int       `json:"init_pid"`
	InitStart  uint64    `json:"init_start"` // start time, to tell a reused PID
	CgroupRel  string    `json:"cgroup_rel"`
	StatusFile string    `json:"status_file"`
	OwnerUID   int       `json:"owner_uid"`
	// FreezeCgroup is the target's cgroup CRIU freezes, if any: a daemon
	// that dies during the dump leaves it to be thawed at the next start.
	FreezeCgroup string `json:"freeze_cgroup,omitempty"`
	// ListenerOwners are the original's listeners that root does not own,
	// lent to root during the restore: a daemon that dies then gives them
	// back at the next start.
	ListenerOwners []sockOwner `json:"listener_owners,omitempty"`
}

// New returns a Manager, creating its directories, probing CRIU and the
// cgroup hierarchy, and re-adopting the clones a previous daemon left
// running. A missing or broken CRIU does not fail New: Status says what is
// wrong and Clone answers Unavailable until it is fixed.
func New(ctx context.Context, opts Options) (*Manager, error) {
	opts.setDefaults()
	m := &Manager{opts: opts, log: opts.Log, clones: map[string]*entry{}, busy: map[int]string{}}
	for _, d := range []string{opts.StateDir, filepath.Join(opts.StateDir, "clones"), filepath.Join(opts.StateDir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("chmod 0700 %s: %w", d, err)
		}
	}
	mounted, err := prepareImageDir(opts.ImageDir)
	if err != nil {
		return nil, err
	}
	m.mountedImages = mounted
	m.migrate = &sysctlGuard{path: migrateReqPath, want: "1", journal: filepath.Join(opts.StateDir, "tcp_migrate_req.json")}
	m.pipeSize = &sysctlGuard{path: pipeMaxSizePath, want: pipeMaxSize, raiseOnly: true, journal: filepath.Join(opts.StateDir, "pipe_max_size.json")}
	for _, g := range []*sysctlGuard{m.migrate, m.pipeSize} {
		if err := g.recover(); err != nil {
			m.log.Warn("could not put back a sysctl left changed by a previous daemon", "sysctl", g.path, "err", err)
		}
	}
	m.cg, m.cgErr = cgroup.Detect()
	m.ancestors = ancestors(opts.Proc, os.Getpid())
	m.caps = capabilities(opts.Proc)
	m.probeCRIU(ctx)
	if err := m.adopt(); err != nil {
		return nil, err
	}
	return m, nil
}

// prepareImageDir makes dir a private tmpfs (mode 0700): images hold process
// memory, and keeping them off disks keeps dumps fast. A tmpfs already
// mounted at dir (by the administrator, or left by a daemon that crashed) is
// used as it is. A dir that merely lies on a shared tmpfs (/run, /tmp,
// /dev/shm) gets its own: the shared one is sized for other uses (/run is
// often 10-20% of RAM: a large clone's images would not fit) and its mount
// options are not the daemon's.
func prepareImageDir(dir string) (mounted bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create image dir %s: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	// STATX_ATTR_MOUNT_ROOT: Linux >= 5.8.
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, 0, &stx); err != nil {
		return false, fmt.Errorf("statx %s: %w", dir, err)
	}
	mountRoot := stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	if st.Type != unix.TMPFS_MAGIC || !mountRoot {
		const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		// huge=within_size: the page images (hundreds of MiB written by
		// splice in large chunks) get huge folios, the small images 4 KiB
		// pages. CRIU's dump writes into the tmpfs with the target frozen,
		// and allocating 2 MiB at a time instead of 4 KiB cut that write
		// by a third (1 GiB heap: memwrite 540 -> 290 ms, frozen 630 ->
		// 410 ms, interleaved runs). Appended files qualify from Linux
		// 6.12 on (within_size counts the end of the write); older
		// kernels give them 4 KiB pages, as without the option, where
		// huge=always would give each small image (one per thread) 2 MiB.
		// A kernel without THP for tmpfs refuses the option: the plain
		// tmpfs is just slower.
		err := unix.Mount("clonebot-images", dir, "tmpfs", flags, "mode=0700,huge="+imageHuge)
		if err != nil {
			err = unix.Mount("clonebot-images", dir, "tmpfs", flags, "mode=0700")
		}
		if err != nil {
			return false, fmt.Errorf("mount a tmpfs on image dir %s: %w (images must stay off disks; pass --image-dir on a tmpfs)", dir, err)
		}
		mounted = true
	}
	return mounted, os.Chmod(dir, 0o700)
}

// imageHuge is the tmpfs huge-page policy of the image dir clonebotd mounts.
const imageHuge = "within_size"

// hugeImages reports the huge= option of the tmpfs mounted at dir ("" when
// it has none, or dir is no mount point), and whether the kernel honours it
// (/sys/kernel/mm/transparent_hugepage/shmem_enabled is not "deny").
func hugeImages(dir string) (policy string, ok bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	mounts, err := cgroup.ParseMountinfo(f)
	if err != nil {
		return "", false
	}
	dir = filepath.Clean(dir)
	for _, mt := range mounts { // the last mount on dir is the visible one
		if mt.MountPoint != dir || mt.FSType != "tmpfs" {
			continue
		}
		policy = ""
		for o := range strings.SplitSeq(mt.SuperOptions, ",") {
			if v, found := strings.CutPrefix(o, "huge="); found {
				policy = v
			}
		}
	}
	if policy == "" || policy == "never" {
		return policy, false
	}
	b, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
	return policy, !strings.Contains(string(b), "[deny]")
}

// probeCRIU (re)checks CRIU; it keeps a good result.
func (m *Manager) probeCRIU(ctx context.Context) (*criu.Info, error) {
	m.criuMu.Lock()
	defer m.criuMu.Unlock()
	if m.criuInfo != nil && m.criuErr == nil {
		return m.criuInfo, nil
	}
	info, err := criu.Runner{Path: m.opts.CRIUPath}.Probe(ctx)
	m.criuInfo, m.criuErr = info, err
	if err != nil {
		m.log.Warn("CRIU is not usable; clone requests will be refused until it is fixed", "err", err)
		return info, err
	}
	m.log.Info("CRIU ready", "path", info.Path, "version", info.VersionString(), "features", info.Features)
	installed, kerr := criu.Runner{Path: info.Path}.WarmKerndatCache()
	if kerr != nil {
		m.log.Warn("CRIU will probe the kernel at every call (no kerndat cache)", "err", kerr)
	}
	m.kdatInstalled = m.kdatInstalled || installed
	return info, nil
}

// ready returns an Unavailable error while CRIU or cgroup v2 is unusable.
func (m *Manager) ready(ctx context.Context) (*criu.Info, error) {
	info, err := m.probeCRIU(ctx)
	if err != nil {
		var ce *criu.Error
		hint := "install CRIU >= 4.2 (make deps)"
		if errors.As(err, &ce) && ce.Hint != "" {
			hint = ce.Hint
		}
		return nil, fault.New(fault.Unavailable, "CRIU is not usable on this host", hint, err)
	}
	if m.cg == nil {
		return nil, fault.New(fault.Unavailable, "no cgroup v2 hierarchy is mounted", "mount one: mount -t cgroup2 none /sys/fs/cgroup/unified", m.cgErr)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fault.New(fault.Unavailable, "clonebotd is shutting down", "retry once it is back", nil)
	}
	return info, nil
}

// claim marks pid as the target of an operation; the returned func releases it.
func (m *Manager) claim(pid int, op string) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.busy[pid]; ok {
		return nil, fault.New(fault.Conflict, fmt.Sprintf("PID %d is already the target of a running %s", pid, cur),
			"wait for it to finish, then retry", nil)
	}
	m.busy[pid] = op
	return func() {
		m.mu.Lock()
		delete(m.busy, pid)
		m.mu.Unlock()
	}, nil
}

// List returns the clones the caller may see, oldest first.
func (m *Manager) List(who Caller) []api.Clone {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Clone, 0, len(m.clones))
	for _, e := range m.clones {
		if who.Root() || e.st.OwnerUID == who.UID {
			out = append(out, e.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// Get returns one clone.
func (m *Manager) Get(id string, who Caller) (api.Clone, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(id, who)
	if err != nil {
		return api.Clone{}, err
	}
	return e.rec, nil
}

// lookup finds id for who; m.mu must be held.
func (m *Manager) lookup(id string, who Caller) (*entry, error) {
	if !ValidID(id) {
		return nil, fault.New(fault.Invalid, fmt.Sprintf("%q is not a clone ID", id), "clone IDs are 12 hex digits; list them with 'clonebotctl ls'", nil)
	}
	e, ok := m.clones[id]
	if !ok || !(who.Root() || e.st.OwnerUID == who.UID) {
		return nil, fault.New(fault.NotFound, fmt.Sprintf("no clone %s", id), "list clones with 'clonebotctl ls'", nil)
	}
	return e, nil
}

// Remove kills the clone's tree, removes its cgroup, images and records, and
// returns its final record.
func (m *Manager) Remove(ctx context.Context, id string, who Caller) (api.Clone, error) {
	m.mu.Lock()
	e, err := m.lookup(id, who)
	if err != nil {
		m.mu.Unlock()
		return api.Clone{}, err
	}
	if e.rec.State == api.StateCreating {
		m.mu.Unlock()
		return api.Clone{}, fault.New(fault.Conflict, fmt.Sprintf("clone %s is still being created", id), "retry when the clone request has returned", nil)
	}
	if e.handover != "" && !e.rollingBack {
		m.mu.Unlock()
		return api.Clone{}, fault.New(fault.Conflict, fmt.Sprintf("clone %s is taking over PID %d (%s)", id, e.rec.SourcePID, e.handover),
			"wait for the handover to finish; it rolls back by itself if the clone fails", nil)
	}
	m.mu.Unlock()

	if err := m.kill(ctx, e); err != nil {
		return api.Clone{}, fault.New(fault.Internal, fmt.Sprintf("remove clone %s (init PID %d, cgroup %s)", id, e.st.InitPID, e.st.CgroupRel),
			"check 'clonebotctl inspect' and retry", err)
	}
	m.mu.Lock()
	delete(m.clones, id)
	rec := e.rec
	m.mu.Unlock()
	if err := os.RemoveAll(e.dir); err != nil {
		return rec, fault.New(fault.Internal, fmt.Sprintf("remove state of clone %s at %s", id, e.dir), "remove the directory by hand", err)
	}
	m.log.Info("clone removed", "id", id, "source_pid", rec.SourcePID)
	return rec, nil
}

// kill ends a clone's processes and removes its cgroup; it waits (bounded by
// ctx, default 10 s) for the exit to be recorded.
func (m *Manager) kill(ctx context.Context, e *entry) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var errs []error
	select {
	case <-e.done:
	default:
		// Stop the clone's listeners first: with tcp_migrate_req the
		// connections queued in them move to the original's instead of
		// being reset by the kill.
		m.stopListeners(e)
		// The cgroup holds the init and every process of the namespace;
		// killing the init alone would also take the namespace down.
		if e.cg != nil {
			if err := e.cg.Kill(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if e.st.InitPID > 0 && initAlive(m.opts.Proc, e.st.InitPID, e.st.InitStart) {
			_ = unix.Kill(e.st.InitPID, unix.SIGKILL)
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("clone %s (init PID %d) did not exit: %w", e.rec.ID, e.st.InitPID, ctx.Err()))
		}
	}
	if e.cg != nil {
		if err := e.cg.Destroy(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopListeners shuts down the listening sockets of a clone that shares
// its original's ports, with tcp_migrate_req on, so that connections queued
// in them move to another listener of the port.
func (m *Manager) stopListeners(e *entry) {
	// An upgrade's listeners may be the original's very sockets (MPTCP,
	// UDP): shutting them down would stop the original too.
	if e.rec.Kind == api.KindUpgrade {
		return
	}
	socks := m.sharedListeners(e)
	if len(socks) == 0 {
		return
	}
	// First new connections go to the other listeners of each port (the
	// original's, other clones'), and the clone answers what it had
	// accepted (at most maxSettle): a request it holds when it is killed
	// is lost.
	if peers := m.peerListeners(e); len(peers) > 0 {
		if unsteer, err := m.steerFrom(socks, peers, fmt.Sprintf("the original (PID %d) or another clone", e.rec.SourcePID)); err == nil {
			defer unsteer()
			if tree, err := m.opts.Proc.Tree(e.rec.PID); err == nil {
				settle(m.opts.Proc, e.rec.PID, tree, socks, maxSettle)
			}
		}
	}
	release, err := m.migrate.acquire()
	if err != nil {
		return
	}
	defer func() { _ = release() }()
	for _, s := range socks {
		_ = handover.Shutdown(s)
	}
}

// peerListeners returns the listening sockets that share ports with clone
// e: its original's and those of the other clones of the same original.
func (m *Manager) peerListeners(e *entry) []handover.Socket {
	var out []handover.Socket
	if pids, err := m.opts.Proc.Tree(e.rec.SourcePID); err == nil {
		if socks, err := handover.FindSockets(m.opts.Proc, pids); err == nil {
			for _, s := range socks {
				if s.Listening {
					out = append(out, s)
				}
			}
		}
	}
	m.mu.Lock()
	var others []*entry
	for _, o := range m.clones {
		if o != e && o.rec.SourcePID == e.rec.SourcePID && o.rec.State == api.StateRunning {
			others = append(others, o)
		}
	}
	m.mu.Unlock()
	for _, o := range others {
		out = append(out, m.sharedListeners(o)...)
	}
	return out
}

// sharedListeners returns the listening sockets of a clone that shares its
// original's ports (none for one in a network namespace of its own).
func (m *Manager) sharedListeners(e *entry) []handover.Socket {
	if e.rec.IsolatedNet || len(e.rec.Listeners) == 0 || e.rec.PID <= 0 {
		return nil
	}
	pids, err := m.opts.Proc.Tree(e.rec.PID)
	if err != nil {
		return nil
	}
	socks, err := handover.FindSockets(m.opts.Proc, pids)
	if err != nil {
		return nil
	}
	var out []handover.Socket
	for _, s := range socks {
		if s.Listening {
			out = append(out, s)
		}
	}
	return out
}

// destroyCgroup kills what is left in cg and removes it, waiting at most
// 10 s.
func destroyCgroup(cg *cgroup.Cgroup) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cg.Destroy(ctx)
}

// Close stops watching clones; the clones keep running and a new daemon
// re-adopts them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.criuMu.Lock()
	kdat := m.kdatInstalled
	m.criuMu.Unlock()
	if kdat {
		if err := criu.RemoveKerndatCache(); err != nil {
			m.log.Warn("could not remove CRIU's kerndat cache", "path", criu.KerndatCache, "err", err)
		}
	}
	if m.mountedImages {
		if err := unix.Unmount(m.opts.ImageDir, unix.MNT_DETACH); err != nil {
			m.log.Warn("could not unmount the image tmpfs", "dir", m.opts.ImageDir, "err", err)
		}
	}
}

// persistLocked is persist under m.mu.
func (m *Manager) persistLocked(e *entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.persist(e)
}

// persist writes the entry's record; m.mu must be held or the entry private.
func (m *Manager) persist(e *entry) error {
	e.st.Record = e.rec
	b, err := json.MarshalIndent(e.st, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(e.dir, "clone.json")
	if err := atomicfile.Write(p, b, 0o600); err != nil {
		return fmt.Errorf("write clone record %s: %w", p, err)
	}
	return nil
}

// adopt loads the records a previous daemon left: live clones are watched
// again, dead ones are marked exited, half-made ones are removed.
func (m *Manager) adopt() error {
	root := filepath.Join(m.opts.StateDir, "clones")
	ents, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("read %s: %w", root, err)
	}
	for _, de := range ents {
		if !de.IsDir() || !ValidID(de.Name()) {
			continue
		}
		dir := filepath.Join(root, de.Name())
		b, err := os.ReadFile(filepath.Join(dir, "clone.json"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				m.log.Warn("removing a clone directory without a record", "dir", dir)
				_ = os.RemoveAll(dir)
				continue
			}
			return err
		}
		var st stored
		if err := json.Unmarshal(b, &st); err != nil {
			m.log.Warn("removing an unreadable clone record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		e := &entry{rec: st.Record, st: st, dir: dir, done: make(chan struct{})}
		if m.cg != nil && st.CgroupRel != "" {
			if c, err := m.cg.Load(st.CgroupRel); err == nil {
				e.cg = c
			}
		}
		switch {
		case e.rec.State == api.StateCreating:
			m.undoHalfMade(e)
			continue
		case e.rec.State == api.StateRunning && initAlive(m.opts.Proc, st.InitPID, st.InitStart):
			m.log.Info("re-adopted running clone", "id", e.rec.ID, "pid", e.rec.PID)
			m.watchAdopted(e)
			m.unsteerLeftover(e)
		case e.rec.State == api.StateRunning:
			m.markExited(e, m.readExit(e))
		default:
			close(e.done)
		}
		m.clones[e.rec.ID] = e
	}
	// Images without a record come from a daemon that died before its first
	// record was written: they hold process memory, they go.
	if imgs, err := os.ReadDir(m.opts.ImageDir); err == nil {
		for _, de := range imgs {
			if _, ok := m.clones[de.Name()]; !ok && ValidID(de.Name()) {
				_ = os.RemoveAll(filepath.Join(m.opts.ImageDir, de.Name()))
			}
		}
	}
	return nil
}

// unsteerLeftover gives the kernel back the choice of listener in the
// SO_REUSEPORT groups of a re-adopted clone: a daemon that died during a
// drain may have left them steered to the clone (clone.drain), which would
// starve an original that was never signalled.
func (m *Manager) unsteerLeftover(e *entry) {
	for _, s := range m.sharedListeners(e) {
		if !s.MPTCP() {
			if err := handover.Unsteer([]handover.Socket{s}); err != nil {
				m.log.Warn("could not unsteer a re-adopted clone's listener", "id", e.rec.ID, "err", err)
			}
		}
	}
}

// undoHalfMade removes a clone a previous daemon died making, and puts its
// original back as it was: CRIU (left running) is waited for, the target's
// cgroup thawed, the SO_REUSEPORT the daemon set cleared.
func (m *Manager) undoHalfMade(e *entry) {
	log := m.log.With("id", e.rec.ID, "source_pid", e.rec.SourcePID)
	log.Warn("removing a clone left half-made by a previous daemon")
	close(e.done)
	// A CRIU dump outlives the daemon that started it (killing it while its
	// parasite runs in the target is not safe); it releases the target when
	// it ends. Wait for it before touching anything.
	waitOrphanCRIU(m.opts.Proc, 2*time.Minute, log)
	waitUntraced(m.opts.Proc, e.rec.SourcePID, time.Minute)
	if e.st.FreezeCgroup != "" {
		f := filepath.Join(e.st.FreezeCgroup, "cgroup.freeze")
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "1" {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				log.Error("could not thaw the target's cgroup", "cgroup", e.st.FreezeCgroup, "err", err)
			} else {
				log.Warn("thawed the target's cgroup", "cgroup", e.st.FreezeCgroup)
			}
		}
	}
	if e.st.InitPID > 0 && initAlive(m.opts.Proc, e.st.InitPID, e.st.InitStart) {
		_ = unix.Kill(e.st.InitPID, unix.SIGKILL)
	}
	if e.cg != nil {
		_ = e.cg.Destroy(context.Background())
	}
	if err := returnListeners(e.st.ListenerOwners); err != nil {
		log.Info("could not give the original's listeners their owner back (gone?)", "err", err)
	}
	for _, l := range e.rec.Listeners {
		if !l.ReusePortSet {
			continue
		}
		s := handover.Socket{PID: l.PID, FD: l.FD, Inode: l.Inode}
		if err := handover.SetReusePort(s, false); err != nil {
			log.Info("could not clear SO_REUSEPORT on the original's listener (gone?)", "pid", l.PID, "fd", l.FD, "err", err)
		}
	}
	_ = os.RemoveAll(filepath.Join(m.opts.ImageDir, e.rec.ID))
	kept := m.keepLogs(e.rec.ID, e.dir)
	_ = os.RemoveAll(e.dir)
	log.Info("half-made clone removed", "logs", kept)
}

// waitOrphanCRIU waits, up to max, for CRIU processes that no longer have a
// daemon to answer (reparented to init): the service worker and the dump
// worker it forks, which renames itself "criu: dump --rpc -t PID" and is
// the one tracing the target.
func waitOrphanCRIU(pfs proc.FS, max time.Duration, log *slog.Logger) {
	deadline := time.Now().Add(max)
	for {
		pids := orphanCRIU(pfs)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			log.Error("CRIU left by a previous daemon is still running; going on", "pids", pids)
			return
		}
		log.Info("waiting for CRIU left by a previous daemon to release its target", "pids", pids)
		time.Sleep(100 * time.Millisecond)
	}
}

func orphanCRIU(pfs proc.FS) []int {
	ents, err := os.ReadDir(pfs.Root)
	if err != nil {
		return nil
	}
	var out []int
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		st, err := pfs.Stat(pid)
		if err != nil || st.Comm != "criu" || st.PPID != 1 || st.State == 'Z' {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// waitUntraced waits, up to max, until no CRIU traces pid.
func waitUntraced(pfs proc.FS, pid int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		st, err := pfs.Status(pid)
		if err != nil || st.TracerPid == 0 {
			return
		}
		if ts, err := pfs.Stat(st.TracerPid); err != nil || ts.Comm != "criu" {
			return // someone else's tracer: not ours to wait for
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readExit reads the status the init wrote, or an unknown status (-1).
func (m *Manager) readExit(e *entry) *nsinit.ExitStatus {
	st, err := nsinit.ReadStatusFile(e.st.StatusFile)
	if err != nil {
		return &nsinit.ExitStatus{Code: -1, ExitedAt: time.Now().UTC()}
	}
	return st
}

// watch waits for a clone this daemon started.
func (m *Manager) watch(e *entry) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		st, err := e.wait()
		if err != nil || st == nil {
			st = m.readExit(e)
		}
		m.markExited(e, st)
	}()
}

// watchAdopted waits for a clone a previous daemon started, through a pidfd
// of its init (not our child, so no wait4).
func (m *Manager) watchAdopted(e *entry) {
	pidfd, err := unix.PidfdOpen(e.st.InitPID, 0)
	if err != nil {
		m.markExited(e, m.readExit(e))
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer unix.Close(pidfd)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		m.markExited(e, m.readExit(e))
	}()
}

// markExited records the clone's end and removes its (now empty) cgroup.
func (m *Manager) markExited(e *entry, st *nsinit.ExitStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-e.done:
		return
	default:
	}
	code := st.Code
	at := st.ExitedAt
	e.rec.State = api.StateExited
	e.rec.ExitCode = &code
	e.rec.ExitedAt = &at
	if err := m.persist(e); err != nil {
		m.log.Warn("could not record a clone's exit", "id", e.rec.ID, "err", err)
	}
	if e.cg != nil {
		if err := e.cg.Destroy(context.Background()); err != nil {
			m.log.Warn("could not remove an exited clone's cgroup", "id", e.rec.ID, "cgroup", e.cg.Rel, "err", err)
		}
	}
	close(e.done)
	m.log.Info("clone exited", "id", e.rec.ID, "pid", e.rec.PID, "exit_code", code, "signal", st.Signal)
}

// initAlive reports whether pid is still the init started at start.
func initAlive(pfs proc.FS, pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := pfs.Stat(pid)
	if err != nil {
		return false
	}
	return s.StartTime == start && s.State != 'Z'
}

// ancestors returns pid and its ancestors.
func ancestors(pfs proc.FS, pid int) map[int]bool {
	out := map[int]bool{}
	for pid > 0 && !out[pid] {
		out[pid] = true
		st, err := pfs.Status(pid)
		if err != nil {
			break
		}
		pid = st.PPid
	}
	return out
}

// capNames are the capabilities Status reports, by bit.
var capNames = map[string]uint{
	"chown": 0, "dac_override": 1, "kill": 5, "setgid": 6, "setuid": 7, "net_admin": 12,
	"sys_chroot": 18, "sys_ptrace": 19, "sys_admin": 21, "sys_resource": 24, "checkpoint_restore": 40,
}

func capabilities(pfs proc.FS) map[string]bool {
	out := map[string]bool{}
	st, err := pfs.Status(os.Getpid())
	if err != nil {
		return out
	}
	for name, bit := range capNames {
		out[name] = st.CapEff&(1<<bit) != 0
	}
	return out
}

// keepLogs moves the logs of a failed clone to StateDir/logs for the user to
// read, and returns where each went.
func (m *Manager) keepLogs(id, dir string) map[string]string {
	kept := map[string]string{}
	for _, name := range []string{"dump.log", "restore.log", "init.log", "output.log"} {
		src := filepath.Join(dir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		dst := filepath.Join(m.opts.StateDir, "logs", id+"-"+name)
		if err := os.Rename(src, dst); err == nil {
			kept[src] = dst
		}
	}
	pruneLogs(filepath.Join(m.opts.StateDir, "logs"), 60)
	return kept
}

// pruneLogs keeps the newest max files of dir.
func pruneLogs(dir string, max int) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= max {
		return
	}
	type f struct {
		name string
		mod  time.Time
	}
	var fs []f
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			fs = append(fs, f{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mod.After(fs[j].mod) })
	for _, x := range fs[min(max, len(fs)):] {
		_ = os.Remove(filepath.Join(dir, x.name))
	}
}

// Events returns the events of operation id so far and a channel of the
// next ones (closed when it ends); cancel ends the subscription.
func (m *Manager) Events(id string, who Caller) (past []api.Event, next <-chan api.Event, cancel func(), err error) {
	if err := ValidOperationID(id); err != nil {
		return nil, nil, nil, fault.New(fault.Invalid, err.Error(), "", nil)
	}
	op, ok := m.ops.get(id)
	if !ok || !(who.Root() || op.owner == who.UID) {
		return nil, nil, nil, fault.New(fault.NotFound, fmt.Sprintf("no operation %s", id),
			"operations are kept for 5 minutes after they end; pass \"operation\" in the request to follow it", nil)
	}
	past, next, cancel = op.subscribe()
	return past, next, cancel, nil
}

// beginOp registers an operation for a request.
func (m *Manager) beginOp(id, kind string, who Caller) (*operation, error) {
	op, err := m.ops.begin(id, kind, who.UID)
	if err != nil {
		if ValidOperationID(id) == nil {
			return nil, fault.New(fault.Conflict, err.Error(), "pick another operation ID, or follow this one's events", nil)
		}
		return nil, fault.New(fault.Invalid, err.Error(), "", nil)
	}
	op.emit("operation", api.EventStart, 0, "")
	return op, nil
}

// endOp records how the operation ended and releases it.
func (m *Manager) endOp(op *operation, err error) {
	if err != nil {
		op.emit("operation", api.EventFailed, 0, err.Error())
	} else {
		op.emit("operation", api.EventDone, 0, "")
	}
	m.ops.finish(op)
}
