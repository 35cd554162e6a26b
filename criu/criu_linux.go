//go:build linux

package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	gocriu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/checkpoint-restore/go-criu/v8/stats"
)

// Runner runs CRIU operations. The zero value uses "criu" from PATH.
type Runner struct {
	// Path is the criu binary; "" means "criu" looked up on PATH.
	Path string
}

func (r Runner) bin() string {
	if r.Path == "" {
		return "criu"
	}
	return r.Path
}

func (r Runner) newCriu() *gocriu.Criu {
	c := gocriu.MakeCriu()
	c.SetCriuPath(r.bin())
	return c
}

// Info is what Probe learns about the CRIU binary.
type Info struct {
	Path    string
	Version int // 40201 for 4.2.1
	// CheckOK is true when `criu check` says the kernel has what a dump needs.
	CheckOK     bool
	CheckOutput string
	// Features are CRIU's optional kernel features: "mem_track" (soft-dirty,
	// needed for pre-dump), "lazy_pages" (userfaultfd), "pidfd_store".
	Features map[string]bool
}

// VersionString is Version as "4.2.1".
func (i *Info) VersionString() string { return FormatVersion(i.Version) }

// Probe finds CRIU, asks its version over RPC, runs `criu check` and asks for
// its optional features. The error, if any, says what is wrong and how to fix
// it; Info is filled as far as it got.
func (r Runner) Probe(ctx context.Context) (*Info, error) {
	info := &Info{Path: r.bin(), Features: map[string]bool{}}
	p, err := exec.LookPath(r.bin())
	if err != nil {
		return info, &Error{Op: "check", Message: fmt.Sprintf("criu binary %q not found", r.bin()), Err: err,
			Hint: "install CRIU >= 4.2 (make deps builds 4.2.1 into /usr/local/sbin) or pass --criu PATH"}
	}
	info.Path = p
	c := r.newCriu()
	c.SetCriuPath(p)
	v, err := c.GetCriuVersion()
	if err != nil {
		return info, &Error{Op: "check", Message: fmt.Sprintf("%s does not answer its RPC version request", p), Err: err,
			Hint: "install CRIU >= 4.2 (make deps)"}
	}
	info.Version = v
	if v < MinVersion {
		return info, &Error{Op: "check", Message: fmt.Sprintf("%s is CRIU %s; clonebot needs >= %s", p, FormatVersion(v), FormatVersion(MinVersion)),
			Hint: "install CRIU >= 4.2 (make deps builds 4.2.1 into /usr/local/sbin) or pass --criu PATH"}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, p, "check").CombinedOutput()
	info.CheckOutput = strings.TrimSpace(string(out))
	info.CheckOK = err == nil
	feats, ferr := c.FeatureCheck(&rpc.CriuFeatures{MemTrack: ptr(true), LazyPages: ptr(true), PidfdStore: ptr(true)})
	if ferr == nil && feats != nil {
		info.Features["lazy_pages"] = feats.GetLazyPages()
		info.Features["pidfd_store"] = feats.GetPidfdStore()
	}
	// The RPC feature check answers mem_track=true on kernels without
	// CONFIG_MEM_SOFT_DIRTY (seen with 4.2.1 on 6.18); 'criu check
	// --feature mem_dirty_track' asks the kernel.
	info.Features["mem_track"] = exec.CommandContext(cctx, p, "check", "--feature", "mem_dirty_track").Run() == nil
	if !info.CheckOK {
		lines := lastLines(info.CheckOutput, 3)
		return info, &Error{Op: "check", Message: fmt.Sprintf("'%s check' fails: %s", p, lines), Err: err,
			Hint: "run 'criu check' for details; CRIU >= 4.2 is needed on Linux >= 6.16 (make deps)"}
	}
	return info, nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

func ptr[T any](v T) *T { return &v }

// DumpOptions configure Dump. The zero value of each optional field is the
// default documented on it.
type DumpOptions struct {
	// PID is the root of the tree to dump.
	PID int
	// ImageDir receives the images; it must exist (mode 0700: images hold
	// process memory).
	ImageDir string
	// WorkDir receives dump.log; "" means ImageDir.
	WorkDir string
	// LogLevel is CRIU's verbosity, 0..4; 0 means 2 (errors and warnings),
	// which keeps logging out of the freeze window.
	LogLevel int
	// FreezeCgroup, when set, is the absolute path of a cgroup v2 directory
	// holding just the target's tree: CRIU freezes it with cgroup.freeze
	// instead of seizing each task with ptrace.
	FreezeCgroup string
	// External lists CRIU --external specs, e.g. "unix[12345]".
	External []string
	// ExtUnixSk allows unix sockets connected to peers outside the tree.
	ExtUnixSk bool
	// ShellJob allows a tree that shares its session with a terminal.
	ShellJob bool
	// Timeout bounds CRIU's collection (freezing) phase in seconds; 0 means 10.
	Timeout uint32
	// ParentImg names the previous (pre-)dump's image directory, relative
	// to ImageDir: only pages dirtied since go into this one.
	ParentImg string
	// TrackMem makes the kernel track the pages dirtied from now on
	// (soft-dirty), for a later dump with ParentImg.
	TrackMem bool
	// OnFrozen, when set, runs after the memory dump while the tree is still
	// frozen (CRIU's post-dump notification); an error aborts the dump and
	// CRIU releases the tree. It costs a round trip inside the freeze
	// window, so it is for tests (failpoints) only.
	OnFrozen func() error
}

type frozenHook struct {
	gocriu.NoNotify
	f func() error
}

func (h frozenHook) PostDump() error { return h.f() }

// Dump checkpoints the tree rooted at opts.PID, leaving it running. Open TCP
// connections are not dumped as such (tcp-close): no repair mode, no network
// lock. The dump is not interrupted by the caller: killing CRIU while its
// parasite runs inside the target is not safe, so CRIU's own Timeout bounds it.
func (r Runner) Dump(opts DumpOptions) (*DumpStats, error) {
	return r.dump(opts, false)
}

// PreDump copies the tree's memory while it runs (it is frozen only to
// collect its page map: CRIU's VM_READ mode reads the pages after the
// thaw) and starts dirty-page tracking, so that a later Dump with
// ParentImg pointing here writes only what changed. Needs soft-dirty
// tracking in the kernel (Info.Features["mem_track"]).
func (r Runner) PreDump(opts DumpOptions) (*DumpStats, error) {
	return r.dump(opts, true)
}

// preDump runs one pre-dump on a service worker of its own. go-criu's PreDump
// sends CRIU's PRE_DUMP request, after which the worker waits on the same
// connection for the next pre-dump or the final dump: closed instead, it
// exits with status 255 ("Can't recv request"), which go-criu's one-shot
// call reports as a failure of the pre-dump that succeeded ("criu swrk
// failed: exit status 255", and an empty log). The answer to the request
// says whether the pre-dump worked; the worker's exit status after the
// hang-up says nothing.
func preDump(c *gocriu.Criu, o *rpc.CriuOpts, nfy gocriu.Notify) error {
	if err := c.Prepare(); err != nil {
		return err
	}
	err := c.PreDump(o, nfy)
	cerr := c.Cleanup()
	if err != nil {
		return errors.Join(err, cerr)
	}
	return nil
}

func (r Runner) dump(opts DumpOptions, pre bool) (*DumpStats, error) {
	img, err := os.Open(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("open image dir %s: %w", opts.ImageDir, err)
	}
	defer img.Close()
	work := img
	if opts.WorkDir != "" && opts.WorkDir != opts.ImageDir {
		work, err = os.Open(opts.WorkDir)
		if err != nil {
			return nil, fmt.Errorf("open work dir %s: %w", opts.WorkDir, err)
		}
		defer work.Close()
	}
	lvl := opts.LogLevel
	if lvl == 0 {
		lvl = 2
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10
	}
	logName := "dump.log"
	if pre {
		logName = "pre-dump.log"
	}
	o := &rpc.CriuOpts{
		ImagesDirFd:  ptr(int32(img.Fd())),
		WorkDirFd:    ptr(int32(work.Fd())),
		Pid:          ptr(int32(opts.PID)),
		LeaveRunning: ptr(true),
		TcpClose:     ptr(true),
		// Connections waiting in a listener's accept queue stay with the
		// original, which accepts them; a busy server always has some.
		TcpSkipInFlight: ptr(true),
		NetworkLock:     rpc.CriuNetworkLockMethod_SKIP.Enum(),
		LogLevel:        ptr(int32(lvl)),
		LogFile:         ptr(logName),
		Timeout:         ptr(timeout),
		ShellJob:        ptr(opts.ShellJob),
		ExtUnixSk:       ptr(opts.ExtUnixSk),
		External:        opts.External,
		// File locks are dumped; a clone holding a copy of a lock is what a
		// user expects of a copy.
		FileLocks: ptr(true),
		// The clone's cgroups are clonebot's business, not a copy of the
		// original's: CRIU neither dumps nor restores them.
		ManageCgroupsMode: rpc.CriuCgMode_IGNORE.Enum(),
		TrackMem:          ptr(opts.TrackMem),
	}
	if opts.ParentImg != "" {
		o.ParentImg = ptr(opts.ParentImg)
	}
	if pre {
		o.PreDumpMode = rpc.CriuPreDumpMode_VM_READ.Enum()
	}
	if opts.FreezeCgroup != "" {
		o.FreezeCgroup = ptr(opts.FreezeCgroup)
	}
	logPath := filepath.Join(work.Name(), logName)
	var nfy gocriu.Notify
	if opts.OnFrozen != nil && !pre {
		nfy = frozenHook{f: opts.OnFrozen}
	}
	c := r.newCriu()
	if pre {
		err = preDump(c, o, nfy)
	} else {
		err = c.Dump(o, nfy)
	}
	if err != nil {
		op := "dump"
		if pre {
			op = "pre-dump"
		}
		return nil, newError(op, opts.PID, logPath, err)
	}
	st, err := stats.CriuGetDumpStats(work)
	if err != nil {
		// The dump succeeded; figures are a nicety.
		return &DumpStats{}, nil
	}
	return &DumpStats{
		FreezingUS:   st.GetFreezingTime(),
		FrozenUS:     st.GetFrozenTime(),
		MemdumpUS:    st.GetMemdumpTime(),
		MemwriteUS:   st.GetMemwriteTime(),
		PagesScanned: st.GetPagesScanned(),
		PagesWritten: st.GetPagesWritten(),
		PagesLazy:    st.GetPagesLazy(),
	}, nil
}

// InheritFd replaces, in the restored tree, the resource CRIU knows by Key
// ("pipe:[123]", "socket:[456]", "tty[88:0]", "file[...]") with File.
type InheritFd struct {
	Key  string
	File *os.File
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	ImageDir string
	// WorkDir receives restore.log; "" means ImageDir.
	WorkDir  string
	LogLevel int // 0 means 2
	// InheritFds substitute resources the clone cannot share with the
	// original (its stdout pipe, its journal stream).
	InheritFds []InheritFd
	ExtUnixSk  bool
	ShellJob   bool
	External   []string
	// LazyPages restores memory on demand from a lazy-pages server
	// (StartLazyPages) sharing the work dir.
	LazyPages bool
}

// StartLazyPages starts `criu lazy-pages` serving the images in imgDir to
// a restore that uses the same workDir (their socket lives there), and
// waits for it to listen. The caller waits for it: it exits 0 once every
// page of the restored tree is in, non-zero if it could not serve them.
func (r Runner) StartLazyPages(imgDir, workDir string, logLevel int) (*exec.Cmd, error) {
	if logLevel == 0 {
		logLevel = 2
	}
	sock := filepath.Join(workDir, "lazy-pages.socket")
	_ = os.Remove(sock)
	cmd := exec.Command(r.bin(), "lazy-pages", "-D", imgDir, "-W", workDir, "-o", "lazy-pages.log", "-v"+strconv.Itoa(logLevel))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start criu lazy-pages: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return cmd, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, newError("lazy-pages", 0, filepath.Join(workDir, "lazy-pages.log"), fmt.Errorf("criu lazy-pages did not listen within 10s"))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type postRestore struct {
	gocriu.NoNotify
	pid int
}

func (p *postRestore) PostRestore(pid int32) error {
	p.pid = int(pid)
	return nil
}

// Restore restores the images as a sibling of the caller: the restored root
// becomes the caller's child (CRIU's rst_sibling), which is what a namespace
// init needs to reap it. It returns the root's PID as seen from the caller's
// PID namespace. Connections that were open at the dump come back closed
// (tcp-close): the clone never owns the original's connections.
func (r Runner) Restore(opts RestoreOptions) (int, *RestoreStats, error) {
	img, err := os.Open(opts.ImageDir)
	if err != nil {
		return 0, nil, fmt.Errorf("open image dir %s: %w", opts.ImageDir, err)
	}
	defer img.Close()
	work := img
	if opts.WorkDir != "" && opts.WorkDir != opts.ImageDir {
		work, err = os.Open(opts.WorkDir)
		if err != nil {
			return 0, nil, fmt.Errorf("open work dir %s: %w", opts.WorkDir, err)
		}
		defer work.Close()
	}
	lvl := opts.LogLevel
	if lvl == 0 {
		lvl = 2
	}
	o := &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(img.Fd())),
		WorkDirFd:   ptr(int32(work.Fd())),
		RstSibling:  ptr(true),
		TcpClose:    ptr(true),
		NetworkLock: rpc.CriuNetworkLockMethod_SKIP.Enum(),
		LogLevel:    ptr(int32(lvl)),
		LogFile:     ptr("restore.log"),
		ShellJob:    ptr(opts.ShellJob),
		ExtUnixSk:   ptr(opts.ExtUnixSk),
		External:    opts.External,
		FileLocks:   ptr(true),
		// The init already runs in the clone's cgroup; CRIU must not move
		// the restored tasks to the original's.
		ManageCgroupsMode: rpc.CriuCgMode_IGNORE.Enum(),
		LazyPages:         ptr(opts.LazyPages),
	}
	c := r.newCriu()
	for _, in := range opts.InheritFds {
		c.AddInheritFd(in.Key, in.File)
	}
	n := &postRestore{}
	logPath := filepath.Join(work.Name(), "restore.log")
	if err := c.Restore(o, n); err != nil {
		return 0, nil, newError("restore", 0, logPath, err)
	}
	var rs *RestoreStats
	if st, err := stats.CriuGetRestoreStats(work); err == nil {
		rs = &RestoreStats{ForkingUS: st.GetForkingTime(), RestoreUS: st.GetRestoreTime(), PagesRestored: st.GetPagesRestored()}
	}
	return n.pid, rs, nil
}
