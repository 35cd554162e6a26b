//go:build linux

package cgroup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/clonebot/clonebot/numa"
)

// testParent holds every cgroup the tests make.
const testParent = "clonebot-test.slice"

// fakeTree points openFile at plain files under a temporary directory.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	replace(t, &openFile, func(dir, file string, flags int) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, filepath.Clean("/"+file)), flags, 0)
	})
	return root
}

func TestFreezeTimeoutThawsAgain(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"cg/cgroup.freeze": "0\n",
		"cg/cgroup.events": "populated 1\nfrozen 0\n",
	})
	c := &Cgroup{H: &Hierarchy{Mount: root}, Rel: "/cg", Dir: filepath.Join(root, "cg")}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Freeze(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), c.Dir) {
		t.Fatalf("Freeze of a cgroup that never freezes: got %v; want a deadline error naming %s", err, c.Dir)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Freeze took %v; want about 100ms", d)
	}
	if b, _ := os.ReadFile(filepath.Join(c.Dir, "cgroup.freeze")); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("cgroup.freeze after the timeout = %q; want 0 written back", b)
	}
	if frozen, err := c.Frozen(); err != nil || frozen {
		t.Errorf("Frozen() = %v, %v; want false", frozen, err)
	}
}

func TestFrozenOldKernel(t *testing.T) {
	root := fakeTree(t, map[string]string{"cg/cgroup.events": "populated 1\n"})
	c := &Cgroup{Dir: filepath.Join(root, "cg")}
	if _, err := c.Frozen(); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Frozen without a frozen key: got %v; want ErrUnsupported", err)
	}
}

func TestStatsFake(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"a/memory.current": "4096\n", "a/memory.max": "max\n",
		"a/pids.current": "3\n", "a/pids.max": "64\n",
		"b/cgroup.procs":   "",
		"c/memory.current": "x\n", "c/memory.max": "max\n",
	})
	got, err := (&Cgroup{Dir: filepath.Join(root, "a")}).Stats()
	if want := (Stats{HasMemory: true, MemoryCurrent: 4096, MemoryMax: -1, HasPids: true, PidsCurrent: 3, PidsMax: 64}); err != nil || got != want {
		t.Errorf("Stats(a) = %+v, %v; want %+v", got, err, want)
	}
	if got, err := (&Cgroup{Dir: filepath.Join(root, "b")}).Stats(); err != nil || got != (Stats{}) {
		t.Errorf("Stats(b) = %+v, %v; want nothing present", got, err)
	}
	if _, err := (&Cgroup{Dir: filepath.Join(root, "c")}).Stats(); err == nil {
		t.Errorf("Stats(c) with a garbage memory.current: got nil error")
	}
	if _, err := (&Cgroup{Dir: filepath.Join(root, "gone")}).Stats(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stats of a missing cgroup: got %v; want ErrNotExist", err)
	}
}

func TestProcsFake(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"a/cgroup.procs":       "10\n12\n",
		"a/b/cgroup.procs":     "11\n",
		"a/b/c/cgroup.procs":   "",
		"a/d/cgroup.procs":     "13\n10\n",
		"other/cgroup.procs":   "99\n",
		"a/cgroup.controllers": "",
	})
	h := &Hierarchy{Mount: root}
	c := &Cgroup{H: h, Rel: "/a", Dir: h.Path("/a")}
	got, err := c.Procs()
	if want := []int{10, 11, 12, 13}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Procs() = %v, %v; want %v", got, err, want)
	}
	for _, tc := range []struct {
		rel  string
		pids []int
		want bool
	}{
		{"/a", []int{13, 12, 11, 10}, true},
		{"a", []int{10, 11, 12, 13, 13}, true},
		{"/a", []int{10, 11, 12}, false},
		{"/a", []int{10, 11, 12, 13, 14}, false},
		{"/a/b", []int{11}, true},
		{"/a/b/c", nil, false},
		{"/", []int{10, 11, 12, 13, 99}, false},
	} {
		if got, err := h.HoldsOnly(tc.rel, tc.pids); err != nil || got != tc.want {
			t.Errorf("HoldsOnly(%q, %v) = %v, %v; want %v", tc.rel, tc.pids, got, err, tc.want)
		}
	}
	if _, err := h.HoldsOnly("/missing", []int{1}); err == nil {
		t.Errorf("HoldsOnly of a missing cgroup: got nil error")
	}
	if _, err := h.HoldsOnly("../x", []int{1}); err == nil {
		t.Errorf("HoldsOnly(../x): got nil error")
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	h := &Hierarchy{Mount: t.TempDir(), Mode: ModeHybrid, Controllers: []string{"hugetlb"}}
	for _, tc := range []struct {
		parent, name string
		cfg          Config
	}{
		{testParent, "", Config{}},
		{testParent, "..", Config{}},
		{testParent, "a/b", Config{}},
		{testParent, "a\nb", Config{}},
		{"", "x", Config{}},
		{"/", "x", Config{}},
		{"../etc", "x", Config{}},
		{testParent, "x", Config{CPUs: "3-1"}},
		{testParent, "x", Config{Mems: "a"}},
		{testParent, "x", Config{MemoryMax: -1}},
	} {
		if c, err := h.Create(tc.parent, tc.name, tc.cfg); err == nil {
			t.Errorf("Create(%q, %q, %+v) = %+v; want an error", tc.parent, tc.name, tc.cfg, c)
		}
	}
	_, err := h.Create(testParent, "x", Config{PidsMax: 5})
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Controller != "pids" || ue.Hierarchy != h.Mount || ue.Hint == "" {
		t.Errorf("Create with PidsMax and no pids controller: got %v; want *UnavailableError for pids", err)
	}
	if entries, _ := os.ReadDir(h.Mount); len(entries) != 0 {
		t.Errorf("rejected Creates left %d entries behind", len(entries))
	}
	if _, err := h.Load("/"); err == nil {
		t.Errorf("Load(/): got nil error")
	}
}

// Live tests below run against the host's cgroup v2 hierarchy.

func liveHierarchy(t *testing.T) *Hierarchy {
	t.Helper()
	testutil.RequireRoot(t)
	h, err := Detect()
	testutil.Require(t, err == nil, "no cgroup v2 hierarchy: "+errString(err))
	_, err = os.Stat(filepath.Join(h.Mount, "cgroup.subtree_control"))
	testutil.Require(t, err == nil, "cgroup v2 at "+h.Mount+" is not writable here: "+errString(err))
	return h
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func randomName(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}

// cleanupDir removes dir at the end of the test if it is an empty cgroup.
func cleanupDir(t *testing.T, dir string) {
	t.Cleanup(func() {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
}

// newLive creates testParent/<random> and destroys it when the test ends.
func newLive(t *testing.T, h *Hierarchy, cfg Config) *Cgroup {
	t.Helper()
	cleanupDir(t, h.Path(testParent))
	c, err := h.Create(testParent, randomName(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Destroy(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c
}

// startIn starts "sleep 60" directly in c with CLONE_INTO_CGROUP and reaps
// it in the background; the returned channel yields its exit.
func startIn(t *testing.T, c *Cgroup) (*exec.Cmd, <-chan error) {
	t.Helper()
	fd, err := c.OpenFD()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = cmd.Start()
	fd.Close()
	if err != nil {
		t.Fatalf("start sleep in %s: %v", c.Dir, err)
	}
	return cmd, reap(t, cmd)
}

// reap waits for cmd in the background. The returned channel yields the
// exit error once and is then closed; cleanup kills and waits for cmd.
func reap(t *testing.T, cmd *exec.Cmd) <-chan error {
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(done)
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return done
}

func TestDetectLive(t *testing.T) {
	h := liveHierarchy(t)
	t.Logf("cgroup v2 at %s, mode %s, controllers %q", h.Mount, h.Mode, h.Controllers)
	// The library's own probe (statfs of /sys/fs/cgroup) is the oracle.
	switch {
	case cgroups.IsCgroup2UnifiedMode():
		if h.Mount != "/sys/fs/cgroup" || h.Mode != ModeV2 {
			t.Errorf("pure v2 host: got %s %s; want /sys/fs/cgroup v2", h.Mount, h.Mode)
		}
	case cgroups.IsCgroup2HybridMode():
		if h.Mount != "/sys/fs/cgroup/unified" || h.Mode != ModeHybrid {
			t.Errorf("hybrid host: got %s %s; want /sys/fs/cgroup/unified hybrid", h.Mount, h.Mode)
		}
	}
	if h.Controllers == nil {
		t.Errorf("Controllers is nil; want a (possibly empty) list")
	}
	if want := map[bool]string{true: api.PinCgroup, false: api.PinAffinity}[h.Has("cpuset")]; h.PinningMode() != want {
		t.Errorf("PinningMode() = %q; want %q", h.PinningMode(), want)
	}
}

func TestDetectNoCgroup2(t *testing.T) {
	replace(t, &mountinfoPath, filepath.Join("testdata", "mountinfo-v1.txt"))
	if _, err := Detect(); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Detect on a v1-only host: got %v; want ErrNoCgroup2", err)
	}
}

func TestLifecycleLive(t *testing.T) {
	h := liveHierarchy(t)
	c := newLive(t, h, Config{})
	if st, err := os.Stat(c.Dir); err != nil || !st.IsDir() {
		t.Fatalf("cgroup dir %s: %v", c.Dir, err)
	}
	if want := h.PinningMode(); c.Pinning != want {
		t.Errorf("Pinning = %q; want %q", c.Pinning, want)
	}
	if !h.Has("cpuset") && c.Pinning != api.PinAffinity {
		t.Errorf("Pinning without cpuset = %q; want %q", c.Pinning, api.PinAffinity)
	}
	if l, err := h.Load(c.Rel); err != nil || l.Dir != c.Dir || l.Pinning != c.Pinning {
		t.Errorf("Load(%q) = %+v, %v; want %+v", c.Rel, l, err, c)
	}
	if _, err := h.Create(testParent, filepath.Base(c.Rel), Config{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create of an existing cgroup: got %v; want ErrExist", err)
	}
	if _, err := os.Stat(c.Dir); err != nil {
		t.Fatalf("a failed Create removed the existing cgroup: %v", err)
	}

	cmd, done := startIn(t, c)
	pid := cmd.Process.Pid
	if got, err := h.Of(pid); err != nil || got != c.Rel {
		t.Fatalf("Of(%d) = %q, %v; want %q", pid, got, err, c.Rel)
	}
	if got, err := c.Procs(); err != nil || !slices.Equal(got, []int{pid}) {
		t.Fatalf("Procs() = %v, %v; want [%d]", got, err, pid)
	}
	if ok, err := h.HoldsOnly(c.Rel, []int{pid}); err != nil || !ok {
		t.Errorf("HoldsOnly(%s, [%d]) = %v, %v; want true", c.Rel, pid, ok, err)
	}
	if ok, err := h.HoldsOnly(c.Rel, []int{pid, os.Getpid()}); err != nil || ok {
		t.Errorf("HoldsOnly with an extra pid = %v, %v; want false", ok, err)
	}
	if ok, err := h.HoldsOnly("/", []int{pid}); err != nil || ok {
		t.Errorf("HoldsOnly(/) = %v, %v; want false", ok, err)
	}

	ctx := context.Background()
	start := time.Now()
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("freeze took %v", time.Since(start))
	if frozen, err := c.Frozen(); err != nil || !frozen {
		t.Fatalf("Frozen() after Freeze = %v, %v; want true", frozen, err)
	}
	if status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for line := range strings.SplitSeq(string(status), "\n") {
			if strings.HasPrefix(line, "State:") {
				t.Logf("frozen sleep: %s", line)
			}
		}
	}
	if err := c.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if frozen, err := c.Frozen(); err != nil || frozen {
		t.Fatalf("Frozen() after Thaw = %v, %v; want false", frozen, err)
	}

	s, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", s)
	if s.HasPids && s.PidsCurrent < 1 {
		t.Errorf("pids.current = %d with a sleep inside; want >= 1", s.PidsCurrent)
	}

	// Destroy a frozen cgroup: the sleep must die and the directory go.
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("sleep ended with %v; want killed by SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("sleep %d still running after Destroy", pid)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup dir after Destroy: %v; want it gone", err)
	}
	if err := c.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v; want nil for a gone cgroup", err)
	}
	if err := c.Kill(ctx); err != nil {
		t.Errorf("Kill of a gone cgroup: %v; want nil", err)
	}
}

// TestKillFallbackLive covers kernels before 5.14 (no cgroup.kill), AddProc
// and child cgroups.
func TestKillFallbackLive(t *testing.T) {
	h := liveHierarchy(t)
	c := newLive(t, h, Config{})
	replace(t, &killFile, "cgroup.kill-missing")

	cmd1, done1 := startIn(t, c)
	sub := filepath.Join(c.Dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd2 := exec.Command("sleep", "60")
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	done2 := reap(t, cmd2)
	subc := &Cgroup{H: h, Rel: c.Rel + "/sub", Dir: sub}
	if err := subc.AddProc(cmd2.Process.Pid); err != nil {
		t.Fatal(err)
	}
	want := []int{cmd1.Process.Pid, cmd2.Process.Pid}
	slices.Sort(want)
	if got, err := c.Procs(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Procs() = %v, %v; want %v (recursive)", got, err, want)
	}
	if err := subc.AddProc(1 << 30); err == nil || !strings.Contains(err.Error(), strconv.Itoa(1<<30)) {
		t.Errorf("AddProc of a missing pid: got %v; want an error naming the pid", err)
	}

	if err := c.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, done := range []<-chan error{done1, done2} {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("a sleep survived Destroy")
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup dir after Destroy: %v; want it gone", err)
	}
}

func TestCreateLimitsLive(t *testing.T) {
	h := liveHierarchy(t)
	name := randomName(t)
	cleanupDir(t, h.Path(testParent))
	c, err := h.Create(testParent, name, Config{MemoryMax: 64<<20 + 100})
	if !h.Has("memory") {
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.Controller != "memory" || ue.Hierarchy != h.Mount {
			t.Fatalf("Create with MemoryMax and no memory controller: got %v; want *UnavailableError", err)
		}
		t.Logf("as expected: %v", err)
		if _, err := os.Stat(h.Path(testParent + "/" + name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused Create left %s behind", h.Path(testParent+"/"+name))
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Destroy(context.Background()) })
	s, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasMemory || s.MemoryMax != 64<<20 {
		t.Errorf("Stats = %+v; want memory.max %d (rounded down to a page)", s, 64<<20)
	}
}

// TestCreateCPUsLive asks for CPUs and Mems: written and read back with
// cpuset in v2, skipped with Pinning affinity without it (hybrid hosts).
func TestCreateCPUsLive(t *testing.T) {
	h := liveHierarchy(t)
	c := newLive(t, h, Config{CPUs: "0", Mems: "0"})
	if c.Pinning != h.PinningMode() {
		t.Fatalf("Pinning = %q; want %q", c.Pinning, h.PinningMode())
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, "cpuset.cpus"))
	switch c.Pinning {
	case api.PinAffinity:
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cpuset.cpus without the cpuset controller: %q, %v; want no such file", b, err)
		}
	case api.PinCgroup:
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("cpuset.cpus = %q, %v; want 0", b, err)
		}
	}
}

// TestCreatePinnedLive needs cpuset (and pids) in cgroup v2: pure v2 hosts
// such as the integration VM.
func TestCreatePinnedLive(t *testing.T) {
	h := liveHierarchy(t)
	testutil.RequireVMFeature(t, h.Has("cpuset") && h.Has("pids"), "needs the cpuset and pids controllers in cgroup v2 at "+h.Mount+
		" (pure v2 host; this one offers "+strings.Join(h.Controllers, " ")+")")
	topo, err := numa.ReadTopology(numa.DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	node := topo.Nodes[len(topo.Nodes)-1] // node 1 in the integration VM
	mems := strconv.Itoa(node.ID)
	c := newLive(t, h, Config{CPUs: node.CPUList, Mems: mems, PidsMax: 16})
	if c.Pinning != api.PinCgroup {
		t.Errorf("Pinning = %q; want %q", c.Pinning, api.PinCgroup)
	}
	for file, want := range map[string]string{
		"cpuset.cpus": node.CPUList, "cpuset.cpus.effective": node.CPUList,
		"cpuset.mems": mems, "cpuset.mems.effective": mems, "pids.max": "16",
	} {
		b, err := os.ReadFile(filepath.Join(c.Dir, file))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	cmd, _ := startIn(t, c)
	if got, err := numa.Affinity(cmd.Process.Pid); err != nil || numa.FormatCPUList(got) != node.CPUList {
		t.Errorf("affinity of a process in the cgroup: %v, %v; want %s", got, err, node.CPUList)
	}

	// CPUs the parent does not have are refused, and nothing is left behind.
	name := randomName(t)
	_, err = h.Create(testParent, name, Config{CPUs: "8000"})
	if err == nil || !strings.Contains(err.Error(), "cpuset.cpus") {
		t.Errorf("Create with cpu 8000: got %v; want an error naming cpuset.cpus", err)
	}
	if _, err := os.Stat(h.Path(testParent + "/" + name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed Create left %s behind", h.Path(testParent+"/"+name))
	}
}

func TestCreateRollbackLive(t *testing.T) {
	h := liveHierarchy(t)
	cleanupDir(t, h.Path(testParent))
	mid := randomName(t)
	parent := testParent + "/" + mid
	cleanupDir(t, h.Path(parent))
	boom := errors.New("boom")
	replace(t, &testHookAfterMkdir, func(string) error { return boom })
	_, err := h.Create(parent, "leaf", Config{})
	if !errors.Is(err, boom) {
		t.Fatalf("Create with a failing step: got %v; want boom", err)
	}
	for _, rel := range []string{parent + "/leaf", parent} {
		if _, err := os.Stat(h.Path(rel)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind after a failed Create (%v)", h.Path(rel), err)
		}
	}
}
