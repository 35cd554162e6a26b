//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/numa"
)

// DefaultTimeout bounds Freeze, Thaw, Kill and Destroy when their context
// has no deadline.
const DefaultTimeout = 5 * time.Second

// Seams for tests; production code never changes them.
var (
	// openFile opens a cgroup interface file, confined under /sys/fs/cgroup.
	openFile = cgroups.OpenFile
	// mountinfoPath is parsed by Detect.
	mountinfoPath = "/proc/self/mountinfo"
	// killFile is the file Kill writes to; tests point it at a missing file
	// to exercise the fallback for kernels before 5.14.
	killFile = "cgroup.kill"
	// testHookAfterMkdir runs in Create once the leaf exists.
	testHookAfterMkdir func(dir string) error
)

// controllers Create enables on the way down to the leaf, when offered.
var wantControllers = []string{"cpuset", "cpu", "memory", "pids"}

// Detect finds the cgroup2 mount in /proc/self/mountinfo and reads its
// cgroup.controllers. It wraps ErrNoCgroup2, with the remedy, when no cgroup2
// file system is mounted.
func Detect() (*Hierarchy, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, fmt.Errorf("detect cgroup v2: %w", err)
	}
	defer f.Close()
	mounts, err := ParseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("detect cgroup v2: %s: %w", mountinfoPath, err)
	}
	mount, mode, err := pickHierarchy(mounts)
	if err != nil {
		return nil, fmt.Errorf("detect cgroup v2: %w", err)
	}
	s, err := readFile(mount, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("detect cgroup v2 at %s: %w", mount, err)
	}
	return &Hierarchy{Mount: mount, Mode: mode, Controllers: strings.Fields(s)}, nil
}

// Create makes the cgroup <Mount>/<parent>/<name> and applies cfg.
//
// parent is a relative path ("clonebot.slice"); its missing components are
// created. In the root and in each component of parent, Create enables in
// cgroup.subtree_control those of cpuset, cpu, memory and pids that the
// directory's cgroup.controllers offers (cpu best-effort; a controller cfg
// needs must succeed). Because of cgroup v2's no-internal-process rule,
// parent directories must hold no processes themselves: only leaves do.
//
// Every value written is read back: cpuset.cpus against cpuset.cpus and
// cpuset.cpus.effective as CPU lists, cpuset.mems likewise, memory.max
// (rounded down to the page size by the kernel) and pids.max. When the cgroup
// has no cpuset controller, CPUs and Mems are not written and Pinning is
// api.PinAffinity: the caller pins with numa.SetAffinity and numa.BindMemory.
// MemoryMax or PidsMax without the memory or pids controller give an
// *UnavailableError naming the remedy.
//
// On failure Create removes what it made (the leaf, and parent directories it
// made if they are empty) and returns the error joined with any cleanup error.
func (h *Hierarchy) Create(parent, name string, cfg Config) (_ *Cgroup, retErr error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	parentRel, err := cleanRel(parent)
	if err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if parentRel == "/" {
		return nil, errors.New("create cgroup: empty parent: want a parent such as \"clonebot.slice\", never the root")
	}
	rel := path.Join(parentRel, name)
	c := &Cgroup{H: h, Rel: rel, Dir: h.Path(rel)}
	if cfg.MemoryMax < 0 || cfg.PidsMax < 0 {
		return nil, fmt.Errorf("create cgroup %s: negative limit (memory.max %d, pids.max %d): 0 means none", c.Dir, cfg.MemoryMax, cfg.PidsMax)
	}
	var cpus, mems []int
	if strings.TrimSpace(cfg.CPUs) != "" {
		if cpus, err = numa.ParseCPUList(cfg.CPUs); err != nil {
			return nil, fmt.Errorf("create cgroup %s: cpuset.cpus: %w", c.Dir, err)
		}
	}
	if strings.TrimSpace(cfg.Mems) != "" {
		if mems, err = numa.ParseCPUList(cfg.Mems); err != nil {
			return nil, fmt.Errorf("create cgroup %s: cpuset.mems: %w", c.Dir, err)
		}
	}
	needed := map[string]bool{
		"cpuset": len(cpus) > 0 || len(mems) > 0,
		"memory": cfg.MemoryMax > 0,
		"pids":   cfg.PidsMax > 0,
	}
	if needed["memory"] && !h.Has("memory") {
		return nil, unavailable(h, "memory", "memory_max")
	}
	if needed["pids"] && !h.Has("pids") {
		return nil, unavailable(h, "pids", "pids_max")
	}

	var created []string // directories made here, outermost first
	defer func() {
		if retErr == nil {
			return
		}
		var errs []error
		for i := len(created) - 1; i >= 0; i-- {
			err := unix.Rmdir(created[i])
			switch {
			case err == nil, errors.Is(err, unix.ENOENT):
			case i < len(created)-1 && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY)):
				// A parent someone else filled meanwhile: not ours to remove.
			default:
				errs = append(errs, fmt.Errorf("clean up: %w", &os.PathError{Op: "rmdir", Path: created[i], Err: err}))
			}
		}
		retErr = errors.Join(append([]error{retErr}, errs...)...)
	}()

	dir := h.Mount
	if err := enableControllers(dir, needed); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", c.Dir, err)
	}
	for comp := range strings.SplitSeq(strings.TrimPrefix(parentRel, "/"), "/") {
		dir = filepath.Join(dir, comp)
		switch err := os.Mkdir(dir, 0o755); {
		case err == nil:
			created = append(created, dir)
		case errors.Is(err, fs.ErrExist):
		default:
			return nil, fmt.Errorf("create cgroup %s: %w", c.Dir, err)
		}
		if err := enableControllers(dir, needed); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", c.Dir, err)
		}
	}
	if err := os.Mkdir(c.Dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create cgroup %s: already exists (Load it, or Destroy it first): %w", c.Dir, err)
		}
		return nil, fmt.Errorf("create cgroup %s: %w", c.Dir, err)
	}
	created = append(created, c.Dir)
	if testHookAfterMkdir != nil {
		if err := testHookAfterMkdir(c.Dir); err != nil {
			return nil, err
		}
	}

	own, err := readFile(c.Dir, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", c.Dir, err)
	}
	have := strings.Fields(own)
	c.Pinning = api.PinAffinity
	if slices.Contains(have, "cpuset") {
		c.Pinning = api.PinCgroup
		if len(cpus) > 0 {
			if err := writeList(c.Dir, "cpuset.cpus", cpus); err != nil {
				return nil, err
			}
		}
		if len(mems) > 0 {
			if err := writeList(c.Dir, "cpuset.mems", mems); err != nil {
				return nil, err
			}
		}
	}
	if cfg.MemoryMax > 0 {
		if !slices.Contains(have, "memory") {
			return nil, unavailable(h, "memory", "memory_max")
		}
		page := int64(os.Getpagesize())
		if err := writeChecked(c.Dir, "memory.max", cfg.MemoryMax, cfg.MemoryMax/page*page); err != nil {
			return nil, err
		}
	}
	if cfg.PidsMax > 0 {
		if !slices.Contains(have, "pids") {
			return nil, unavailable(h, "pids", "pids_max")
		}
		if err := writeChecked(c.Dir, "pids.max", cfg.PidsMax, cfg.PidsMax); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// enableControllers enables in dir's cgroup.subtree_control those of
// wantControllers that dir's cgroup.controllers offers. Failing to enable a
// controller that is not needed is ignored (cpu, for one, refuses while
// realtime tasks sit outside the root).
func enableControllers(dir string, needed map[string]bool) error {
	offered, err := readFile(dir, "cgroup.controllers")
	if err != nil {
		return err
	}
	enabled, err := readFile(dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	for _, ctl := range wantControllers {
		if !slices.Contains(strings.Fields(offered), ctl) || slices.Contains(strings.Fields(enabled), ctl) {
			continue
		}
		if err := writeFile(dir, "cgroup.subtree_control", "+"+ctl); err != nil && needed[ctl] {
			hint := ""
			if errors.Is(err, unix.EBUSY) {
				hint = " (the cgroup holds processes: move them into a leaf cgroup)"
			}
			return fmt.Errorf("enable the %s controller%s: %w", ctl, hint, err)
		}
	}
	return nil
}

// writeList writes a CPU or node list to file (cpuset.cpus or cpuset.mems)
// and checks that both file and file.effective read back the same set.
func writeList(dir, file string, want []int) error {
	s := numa.FormatCPUList(want)
	if err := writeFile(dir, file, s); err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	for _, f := range []string{file, file + ".effective"} {
		got, err := readFile(dir, f)
		if err != nil {
			return fmt.Errorf("cgroup %s: read back: %w", dir, err)
		}
		list, err := numa.ParseCPUList(got)
		if err != nil {
			return fmt.Errorf("cgroup %s: %s: %w", dir, f, err)
		}
		if !slices.Equal(list, want) {
			return fmt.Errorf("cgroup %s: wrote %s %q but %s reads %q (not all of them are in the parent's %s.effective)",
				dir, file, s, f, strings.TrimSpace(got), file)
		}
	}
	return nil
}

// writeChecked writes v to file and checks that it reads back as want.
func writeChecked(dir, file string, v, want int64) error {
	if err := writeFile(dir, file, strconv.FormatInt(v, 10)); err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	s, err := readFile(dir, file)
	if err != nil {
		return fmt.Errorf("cgroup %s: read back: %w", dir, err)
	}
	got, err := parseLimit(s)
	if err != nil || got != want {
		return fmt.Errorf("cgroup %s: wrote %s %d but it reads %q, want %d", dir, file, v, strings.TrimSpace(s), want)
	}
	return nil
}

// Load opens an existing cgroup by its relative path, for instance after a
// daemon restart. The root cgroup cannot be loaded.
func (h *Hierarchy) Load(rel string) (*Cgroup, error) {
	r, err := cleanRel(rel)
	if err != nil {
		return nil, fmt.Errorf("load cgroup: %w", err)
	}
	if r == "/" {
		return nil, errors.New("load cgroup: the root cgroup is not clonebot's to manage")
	}
	c := &Cgroup{H: h, Rel: r, Dir: h.Path(r)}
	own, err := readFile(c.Dir, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", c.Dir, err)
	}
	c.Pinning = api.PinAffinity
	if slices.Contains(strings.Fields(own), "cpuset") {
		c.Pinning = api.PinCgroup
	}
	return c, nil
}

// OpenFD opens the cgroup directory (O_PATH|O_DIRECTORY|O_CLOEXEC) for
// syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}, which starts
// a child directly in the cgroup with clone3(CLONE_INTO_CGROUP), Linux 5.7.
// The file must stay open until the child has started; close it after.
func (c *Cgroup) OpenFD() (*os.File, error) {
	f, err := openFile(c.Dir, "", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.Dir, err)
	}
	return f, nil
}

// Procs returns the pids in the cgroup and its child cgroups, ascending.
func (c *Cgroup) Procs() ([]int, error) {
	pids, err := procsUnder(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("processes of cgroup %s: %w", c.Dir, err)
	}
	return pids, nil
}

// procsUnder reads cgroup.procs of dir and of every cgroup below it. Child
// cgroups removed during the walk, and threaded ones (their processes are
// listed by the threaded domain above), are skipped.
func procsUnder(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && isGone(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		s, err := readFile(p, "cgroup.procs")
		if err != nil {
			if p != dir && (isGone(err) || errors.Is(err, unix.EOPNOTSUPP)) {
				return nil
			}
			return err
		}
		for line := range strings.SplitSeq(s, "\n") {
			if line == "" {
				continue
			}
			pid, err := strconv.Atoi(line)
			if err != nil {
				return fmt.Errorf("%s: bad pid %q", filepath.Join(p, "cgroup.procs"), line)
			}
			pids = append(pids, pid)
		}
		return nil
	})
	slices.Sort(pids)
	return slices.Compact(pids), err
}

// AddProc moves process pid (all its threads) into the cgroup.
func (c *Cgroup) AddProc(pid int) error {
	var err error
	for range 5 {
		err = writeFile(c.Dir, "cgroup.procs", strconv.Itoa(pid))
		// EINVAL can mean the task is still being forked (TASK_NEW): retry.
		if !errors.Is(err, unix.EINVAL) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, unix.ESRCH):
			hint = " (no such process)"
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EOPNOTSUPP):
			hint = " (only leaf cgroups without controllers enabled for children may hold processes)"
		}
		return fmt.Errorf("move pid %d into cgroup %s%s: %w", pid, c.Dir, hint, err)
	}
	return nil
}

// Freeze freezes every process of the cgroup: it writes "1" to cgroup.freeze
// (Linux 5.2), checks it reads back, and waits until cgroup.events says
// "frozen 1". The wait is bounded by ctx, or by DefaultTimeout when ctx has
// no deadline; on timeout Freeze writes "0" back so nothing stays half frozen.
func (c *Cgroup) Freeze(ctx context.Context) error {
	ctx, cancel, limit := bound(ctx)
	defer cancel()
	if err := c.setFreeze("1"); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", c.Dir, err)
	}
	if err := waitEvent(ctx, c.Dir, "frozen", "1", nil); err != nil {
		err = fmt.Errorf("freeze cgroup %s: not frozen within %v (a task in uninterruptible sleep?); thawed it again: %w", c.Dir, limit, err)
		if terr := c.setFreeze("0"); terr != nil {
			err = errors.Join(err, fmt.Errorf("thaw cgroup %s: %w", c.Dir, terr))
		}
		return err
	}
	return nil
}

// Thaw writes "0" to cgroup.freeze and waits, bounded like Freeze, until
// cgroup.events says "frozen 0".
func (c *Cgroup) Thaw(ctx context.Context) error {
	ctx, cancel, limit := bound(ctx)
	defer cancel()
	if err := c.setFreeze("0"); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", c.Dir, err)
	}
	if err := waitEvent(ctx, c.Dir, "frozen", "0", nil); err != nil {
		return fmt.Errorf("thaw cgroup %s: still frozen after %v: %w", c.Dir, limit, err)
	}
	return nil
}

// Frozen reports whether cgroup.events says "frozen 1": every process of the
// cgroup is frozen (not merely asked to freeze).
func (c *Cgroup) Frozen() (bool, error) {
	kv, err := readEvents(c.Dir)
	if err != nil {
		return false, err
	}
	v, ok := kv["frozen"]
	if !ok {
		return false, fmt.Errorf("cgroup %s: cgroup.events has no \"frozen\" key: %w (cgroup.freeze needs Linux 5.2)", c.Dir, ErrUnsupported)
	}
	return v == "1", nil
}

func (c *Cgroup) setFreeze(v string) error {
	if err := writeFile(c.Dir, "cgroup.freeze", v); err != nil {
		if errors.Is(err, fs.ErrNotExist) && dirExists(c.Dir) {
			return fmt.Errorf("%w: no cgroup.freeze (needs Linux 5.2): %w", ErrUnsupported, err)
		}
		return err
	}
	got, err := readFile(c.Dir, "cgroup.freeze")
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if strings.TrimSpace(got) != v {
		return fmt.Errorf("wrote %q to cgroup.freeze but it reads %q", v, strings.TrimSpace(got))
	}
	return nil
}

// Kill kills every process of the cgroup and its children through
// cgroup.kill (Linux 5.14), or on older kernels by sending SIGKILL to each
// process through a pidfd, and waits until cgroup.events says "populated 0".
// Frozen processes die too. The wait is bounded by ctx, or by DefaultTimeout
// when ctx has no deadline. A cgroup that no longer exists is not an error.
func (c *Cgroup) Kill(ctx context.Context) error {
	ctx, cancel, limit := bound(ctx)
	defer cancel()
	var each func() error
	if err := writeFile(c.Dir, killFile, "1"); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kill cgroup %s: %w", c.Dir, err)
		}
		if !dirExists(c.Dir) {
			return nil
		}
		each = func() error { return c.killEach() }
	}
	if err := waitEvent(ctx, c.Dir, "populated", "0", each); err != nil {
		if isGone(err) && !dirExists(c.Dir) {
			return nil
		}
		return fmt.Errorf("kill cgroup %s: processes remain after %v: %w", c.Dir, limit, err)
	}
	return nil
}

// killEach sends SIGKILL to every process of the cgroup. A pid is first
// pinned with pidfd_open and checked to still be in the cgroup, so a pid
// reused by an unrelated process is never hit.
func (c *Cgroup) killEach() error {
	pids, err := procsUnder(c.Dir)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if errors.Is(err, unix.ENOSYS) { // before Linux 5.3
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill pid %d: %w", pid, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("pidfd_open pid %d: %w", pid, err)
		}
		cg, err := c.H.Of(pid)
		if err == nil && (cg == c.Rel || strings.HasPrefix(cg, c.Rel+"/")) {
			err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ESRCH) && !isGone(err) {
			return fmt.Errorf("kill pid %d: %w", pid, err)
		}
	}
	return nil
}

// Destroy kills the cgroup's processes (Kill) and removes its directory and
// any child cgroups, retrying while the kernel still reports them busy. It is
// bounded like Kill. Destroying a cgroup that no longer exists is not an error.
func (c *Cgroup) Destroy(ctx context.Context) error {
	ctx, cancel, limit := bound(ctx)
	defer cancel()
	if err := c.Kill(ctx); err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	var dirs []string
	err := filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if isGone(err) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("destroy cgroup %s: %w", c.Dir, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := rmdirRetry(ctx, dirs[i]); err != nil {
			return fmt.Errorf("destroy cgroup %s: still busy after %v (processes or child cgroups remain): %w", c.Dir, limit, err)
		}
	}
	return nil
}

func rmdirRetry(ctx context.Context, dir string) error {
	delay := time.Millisecond
	for {
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EBUSY):
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		select {
		case <-ctx.Done():
			return errors.Join(&os.PathError{Op: "rmdir", Path: dir, Err: err}, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Stats reads memory.current, memory.max, pids.current and pids.max where
// the cgroup has them. A limit of "max" reads as -1.
func (c *Cgroup) Stats() (Stats, error) {
	var s Stats
	if !dirExists(c.Dir) {
		return s, fmt.Errorf("stats of cgroup %s: %w", c.Dir, fs.ErrNotExist)
	}
	var err error
	if s.HasMemory, err = readStat(c.Dir, "memory.current", "memory.max", &s.MemoryCurrent, &s.MemoryMax); err != nil {
		return s, fmt.Errorf("stats of cgroup %s: %w", c.Dir, err)
	}
	if s.HasPids, err = readStat(c.Dir, "pids.current", "pids.max", &s.PidsCurrent, &s.PidsMax); err != nil {
		return s, fmt.Errorf("stats of cgroup %s: %w", c.Dir, err)
	}
	return s, nil
}

func readStat(dir, curFile, maxFile string, cur *uint64, limit *int64) (bool, error) {
	s, err := readFile(dir, curFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if *cur, err = strconv.ParseUint(strings.TrimSpace(s), 10, 64); err != nil {
		return false, fmt.Errorf("%s: want a number, got %q", curFile, strings.TrimSpace(s))
	}
	if s, err = readFile(dir, maxFile); err != nil {
		return false, err
	}
	if *limit, err = parseLimit(s); err != nil {
		return false, fmt.Errorf("%s: %w", maxFile, err)
	}
	return true, nil
}

// Of returns the cgroup v2 path of process pid (the "0::" line of
// /proc/PID/cgroup), such as "/clonebot.slice/ab12".
func (h *Hierarchy) Of(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	defer f.Close()
	p, err := parseProcCgroup(f)
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %s: %w", pid, f.Name(), err)
	}
	return p, nil
}

// HoldsOnly reports whether cgroup rel and its child cgroups hold exactly
// the processes pids (a process tree) and no other: then the tree can be
// frozen through its own cgroup. The root cgroup ("/") never qualifies, nor
// does an empty pids.
func (h *Hierarchy) HoldsOnly(rel string, pids []int) (bool, error) {
	r, err := cleanRel(rel)
	if err != nil {
		return false, err
	}
	if r == "/" || len(pids) == 0 {
		return false, nil
	}
	have, err := procsUnder(h.Path(r))
	if err != nil {
		return false, fmt.Errorf("processes of cgroup %s: %w", h.Path(r), err)
	}
	want := slices.Clone(pids)
	slices.Sort(want)
	return slices.Equal(have, slices.Compact(want)), nil
}

// bound gives ctx a DefaultTimeout deadline unless it has one, and returns
// the bound for error messages.
func bound(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	if dl, ok := ctx.Deadline(); ok {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, time.Until(dl).Round(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	return ctx, cancel, DefaultTimeout
}

// waitEvent waits until cgroup.events of dir has key = want, bounded by ctx.
// It sleeps in poll(2) on the file (the kernel signals POLLPRI when the file
// changes) with a timeout growing from 1 to 50 ms, so a missed notification
// or a cancelled ctx costs at most 50 ms. each, when set, runs before every
// wait.
func waitEvent(ctx context.Context, dir, key, want string, each func() error) error {
	f, err := openFile(dir, "cgroup.events", unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	delay := time.Millisecond
	for {
		kv, err := readEventsAt(f, buf)
		if err != nil {
			return err
		}
		v, ok := kv[key]
		if !ok {
			return fmt.Errorf("%s has no %q key: %w (needs Linux 5.2)", f.Name(), key, ErrUnsupported)
		}
		if v == want {
			return nil
		}
		if each != nil {
			if err := each(); err != nil {
				return err
			}
		}
		wait := delay
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if ctx.Err() != nil || wait <= 0 {
			if ctx.Err() != nil {
				return fmt.Errorf("%s says %s %s: %w", f.Name(), key, v, ctx.Err())
			}
			return fmt.Errorf("%s says %s %s: %w", f.Name(), key, v, context.DeadlineExceeded)
		}
		ms := max(1, int(wait/time.Millisecond))
		cerr := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
			_, err = unix.Poll(fds, ms)
		})
		if cerr != nil {
			return cerr
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll %s: %w", f.Name(), err)
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func readEvents(dir string) (map[string]string, error) {
	s, err := readFile(dir, "cgroup.events")
	if err != nil {
		return nil, err
	}
	kv, err := parseFlatKeyed(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "cgroup.events"), err)
	}
	return kv, nil
}

func readEventsAt(f *os.File, buf []byte) (map[string]string, error) {
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	kv, err := parseFlatKeyed(string(buf[:n]))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return kv, nil
}

// readFile reads a cgroup interface file; errors name its path.
func readFile(dir, file string) (string, error) {
	f, err := openFile(dir, file, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return string(b), nil
}

// writeFile writes data to a cgroup interface file; errors quote data and
// name the path.
func writeFile(dir, file, data string) error {
	f, err := openFile(dir, file, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		return fmt.Errorf("write %q to %s: %w", data, filepath.Join(dir, file), err)
	}
	return nil
}

func dirExists(dir string) bool {
	st, err := os.Stat(dir)
	return err == nil && st.IsDir()
}

// isGone reports whether err says a cgroup was removed.
func isGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV)
}
