//go:build linux

package proc

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/internal/testutil"
)

// fakeTree builds a proc tree under t.TempDir(). files maps a path relative
// to the root to its contents; links maps one to a symlink target.
func fakeTree(t *testing.T, files, links map[string]string) FS {
	t.Helper()
	root := t.TempDir()
	for rel, body := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for rel, target := range links {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return FS{Root: root}
}

// A nonexistent PID: above PID_MAX_LIMIT (4194304), so never allocated.
const noSuchPID = 1<<22 + 1

func TestFakeTreeProcesses(t *testing.T) {
	p := fakeTree(t, map[string]string{
		// 100 has two threads; each lists the children it forked.
		"100/task/100/children": "101 102 ",
		"100/task/103/children": "104 102 ",
		"101/task/101/children": "105",
		"102/task/102/children": "",
		// 104 exited before the walk reached it: no /proc/104.
		"105/task/105/children": "100 ", // impossible, but must not loop
		"100/cgroup":            "0::/app.slice/web.service\n",
		"100/net/tcp":           string(readTestdata(t, "net_tcp_edge.txt")),
		"100/status":            "Name:\tweb\nState:\tS (sleeping)\nPid:\t100\nUid:\t1 2\n",
		"100/fdinfo/3":          "pos:\t0\nflags:\t02004002\nmnt_id:\t9\nino:\t555\n",
		"100/stat":              "100 (web) S 1 100 100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 2 0 4242\n",
		"100/maps":              "00400000-00401000 r-xp 00000000 fe:00 1 /bin/web\n",
		"100/numa_maps":         "00400000 default file=/bin/web mapped=1 N0=1 kernelpagesize_kB=4\n",
	}, nil)

	t.Run("Threads", func(t *testing.T) {
		got, err := p.Threads(100)
		if want := []int{100, 103}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, %v; want %v, nil", got, err, want)
		}
	})
	t.Run("Children", func(t *testing.T) {
		got, err := p.Children(100)
		if want := []int{101, 102, 104}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, %v; want %v, nil", got, err, want)
		}
	})
	t.Run("Tree", func(t *testing.T) {
		got, err := p.Tree(100)
		if want := []int{100, 101, 102, 105}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, %v; want %v, nil", got, err, want)
		}
		// From 101 the walk reaches 100 through 105, then 100's children;
		// the vanished 104 is left out.
		got, err = p.Tree(101)
		if want := []int{101, 105, 100, 102}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Tree(101): got %v, %v; want %v, nil", got, err, want)
		}
	})
	t.Run("missing process", func(t *testing.T) {
		for name, f := range map[string]func() error{
			"Tree":     func() error { _, err := p.Tree(104); return err },
			"Children": func() error { _, err := p.Children(104); return err },
			"Status":   func() error { _, err := p.Status(104); return err },
			"Stat":     func() error { _, err := p.Stat(104); return err },
			"FDs":      func() error { _, err := p.FDs(104); return err },
			"NetTCP":   func() error { _, err := p.NetTCP(104); return err },
		} {
			err := f()
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s(104): got %v; want an error satisfying errors.Is(err, fs.ErrNotExist)", name, err)
			} else if !strings.Contains(err.Error(), filepath.Join(p.Root, "104")) {
				t.Errorf("%s(104): got %q; want it to name the path", name, err)
			}
		}
		if p.Exists(104) || !p.Exists(100) || p.Exists(0) || p.Exists(-1) {
			t.Errorf("Exists: got 104:%v 100:%v 0:%v -1:%v; want false true false false",
				p.Exists(104), p.Exists(100), p.Exists(0), p.Exists(-1))
		}
	})
	t.Run("parse error names path", func(t *testing.T) {
		_, err := p.Status(100)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("got %v; want a *ParseError", err)
		}
		if want := filepath.Join(p.Root, "100", "status"); pe.Path != want || pe.Line != 4 {
			t.Errorf("got Path %q Line %d; want %q line 4", pe.Path, pe.Line, want)
		}
		if !strings.Contains(err.Error(), pe.Path+":4") {
			t.Errorf("got message %q; want it to contain %q", err, pe.Path+":4")
		}
	})
	t.Run("other files", func(t *testing.T) {
		cg, err := p.Cgroup(100)
		if path, ok := UnifiedPath(cg); err != nil || path != "/app.slice/web.service" || !ok {
			t.Errorf("Cgroup: got %v, %v; want /app.slice/web.service", cg, err)
		}
		// tcp6 is missing, as with IPv6 disabled.
		socks, err := p.NetTCP(100)
		if err != nil || len(socks) != 2 {
			t.Errorf("NetTCP: got %v, %v; want 2 sockets", socks, err)
		}
		fi, err := p.FDInfo(100, 3)
		if err != nil || fi.Ino != 555 || fi.Flags != 02004002 || fi.MntID != 9 {
			t.Errorf("FDInfo: got %+v, %v; want ino 555 flags 02004002 mnt_id 9", fi, err)
		}
		st, err := p.Stat(100)
		if err != nil || st.Comm != "web" || st.StartTime != 4242 || st.NumThreads != 2 {
			t.Errorf("Stat: got %+v, %v; want web, 2 threads, start 4242", st, err)
		}
		maps, err := p.Maps(100)
		if err != nil || len(maps) != 1 || maps[0].Path != "/bin/web" {
			t.Errorf("Maps: got %+v, %v; want one mapping of /bin/web", maps, err)
		}
		nm, err := p.NUMAMaps(100)
		if err != nil || len(nm) != 1 || nm[0].Mapped != 1 {
			t.Errorf("NUMAMaps: got %+v, %v; want one area with mapped=1", nm, err)
		}
	})
}

func TestFakeTreeMissingChildrenFile(t *testing.T) {
	p := fakeTree(t, map[string]string{"7/task/7/stat": ""}, nil)
	_, err := p.Children(7)
	if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "CONFIG_PROC_CHILDREN") {
		t.Errorf("got %v; want an error naming CONFIG_PROC_CHILDREN that is not fs.ErrNotExist", err)
	}
}

func TestFakeTreeFDs(t *testing.T) {
	p := fakeTree(t, map[string]string{"100/fd/junk": ""}, map[string]string{
		"100/fd/0":  "/dev/pts/0",
		"100/fd/1":  "socket:[123]",
		"100/fd/2":  "pipe:[9]",
		"100/fd/7":  "/memfd:x (deleted)",
		"100/fd/10": "anon_inode:[io_uring]",
	})
	want := []FD{
		{Num: 0, Target: "/dev/pts/0", Kind: FDTTY},
		{Num: 1, Target: "socket:[123]", Kind: FDSocket, Inode: 123},
		{Num: 2, Target: "pipe:[9]", Kind: FDPipe, Inode: 9},
		{Num: 7, Target: "/memfd:x (deleted)", Kind: FDMemfd},
		{Num: 10, Target: "anon_inode:[io_uring]", Kind: FDAnon, AnonType: "io_uring"},
	}
	got, err := p.FDs(100)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v;\nwant %+v, nil", got, err, want)
	}

	t.Run("vanished fd", func(t *testing.T) {
		// Close fd 7 between the directory read and its readlink.
		dir := filepath.Join(p.Root, "100", "fd")
		got, err := readFDs(dir, func(path string) (string, error) {
			if filepath.Base(path) == "7" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			return os.Readlink(path)
		})
		want := slices.DeleteFunc(slices.Clone(want), func(fd FD) bool { return fd.Num == 7 })
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, %v;\nwant %+v, nil", got, err, want)
		}
	})
	t.Run("readlink error", func(t *testing.T) {
		bad := fakeTree(t, map[string]string{"5/fd/3": "not a symlink"}, nil)
		_, err := bad.FDs(5)
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), filepath.Join(bad.Root, "5", "fd", "3")) {
			t.Errorf("got %v; want EINVAL naming the fd path", err)
		}
	})
}

func TestZeroFSReadsProc(t *testing.T) {
	var p FS
	if !p.Exists(os.Getpid()) {
		t.Errorf("FS{}.Exists(self): got false; want true (the zero FS reads /proc)")
	}
}

func TestLiveSelf(t *testing.T) {
	pid := os.Getpid()
	st, err := Default.Status(pid)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	wantName := filepath.Base(os.Args[0])
	if len(wantName) > 15 {
		wantName = wantName[:15]
	}
	if st.Pid != pid || st.Tgid != pid || st.PPid != os.Getppid() || st.Name != wantName {
		t.Errorf("Status: got Pid %d Tgid %d PPid %d Name %q; want %d %d %d %q",
			st.Pid, st.Tgid, st.PPid, st.Name, pid, pid, os.Getppid(), wantName)
	}
	if st.Uid[1] != os.Geteuid() || st.Gid[1] != os.Getegid() || st.VmRSS == 0 || st.Kthread {
		t.Errorf("Status: got euid %d egid %d VmRSS %d Kthread %v; want %d %d >0 false",
			st.Uid[1], st.Gid[1], st.VmRSS, st.Kthread, os.Geteuid(), os.Getegid())
	}

	stat, err := Default.Stat(pid)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if stat.PID != pid || stat.Comm != wantName || stat.IsKernelThread() || stat.StartTime == 0 {
		t.Errorf("Stat: got %+v; want PID %d comm %q, not a kernel thread, StartTime > 0", stat, pid, wantName)
	}

	tids, err := Default.Threads(pid)
	if err != nil || !slices.Contains(tids, pid) {
		t.Errorf("Threads: got %v, %v; want a list containing %d", tids, err, pid)
	}

	maps, err := Default.Maps(pid)
	if err != nil || !slices.ContainsFunc(maps, func(m Mapping) bool { return m.Path == "[stack]" }) {
		t.Errorf("Maps: got %d mappings, %v; want some, including [stack]", len(maps), err)
	}

	cg, err := Default.Cgroup(pid)
	if err != nil || len(cg) == 0 {
		t.Errorf("Cgroup: got %v, %v; want at least one entry", cg, err)
	}
}

func TestLiveNUMAMaps(t *testing.T) {
	_, err := os.Stat("/proc/self/numa_maps")
	testutil.Require(t, err == nil, "no /proc/self/numa_maps (kernel without CONFIG_NUMA)")
	maps, err := Default.NUMAMaps(os.Getpid())
	if err != nil {
		t.Fatalf("NUMAMaps: %v", err)
	}
	var total uint64
	for _, b := range NodeBytes(maps) {
		total += b
	}
	if len(maps) == 0 || total == 0 {
		t.Errorf("got %d areas, %d resident bytes; want both > 0", len(maps), total)
	}
}

func TestLiveNotExist(t *testing.T) {
	if Default.Exists(noSuchPID) {
		t.Fatalf("Exists(%d): got true; want false", noSuchPID)
	}
	_, err := Default.Status(noSuchPID)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "/proc/4194305/status") {
		t.Errorf("got %v; want fs.ErrNotExist naming /proc/4194305/status", err)
	}
	_, err = Default.Tree(noSuchPID)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Tree: got %v; want fs.ErrNotExist", err)
	}
}

func TestLiveFDsSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fdNum := -1
	if err := raw.Control(func(fd uintptr) { fdNum = int(fd) }); err != nil {
		t.Fatal(err)
	}

	pid := os.Getpid()
	fds, err := Default.FDs(pid)
	if err != nil {
		t.Fatalf("FDs: %v", err)
	}
	i := slices.IndexFunc(fds, func(fd FD) bool { return fd.Num == fdNum })
	if i < 0 {
		t.Fatalf("FDs: fd %d not found in %+v", fdNum, fds)
	}
	sock := fds[i]
	if sock.Kind != FDSocket || sock.Inode == 0 {
		t.Fatalf("FDs: got %+v; want a socket with an inode", sock)
	}
	if !slices.IsSortedFunc(fds, func(a, b FD) int { return a.Num - b.Num }) {
		t.Errorf("FDs: got %+v; want sorted by Num", fds)
	}

	fi, err := Default.FDInfo(pid, fdNum)
	if err != nil || fi.Ino != sock.Inode || fi.Flags&syscall.O_ACCMODE != syscall.O_RDWR {
		t.Errorf("FDInfo: got %+v, %v; want ino %d and O_RDWR", fi, err, sock.Inode)
	}

	socks, err := Default.NetTCP(pid)
	if err != nil {
		t.Fatalf("NetTCP: %v", err)
	}
	want := ln.Addr().(*net.TCPAddr).AddrPort()
	j := slices.IndexFunc(socks, func(s Socket) bool { return s.Inode == sock.Inode })
	if j < 0 {
		t.Fatalf("NetTCP: inode %d not found", sock.Inode)
	}
	if got := socks[j]; got.Local != want || got.State != TCPListen || got.UID != os.Geteuid() {
		t.Errorf("NetTCP: got %+v; want Local %v, LISTEN, UID %d", got, want, os.Geteuid())
	}
}

func TestLiveTree(t *testing.T) {
	sleep := testutil.RequireBinary(t, "sleep")
	cmd := exec.Command(sleep, "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	child := cmd.Process.Pid
	kids, err := Default.Children(os.Getpid())
	if err != nil || !slices.Contains(kids, child) {
		t.Errorf("Children: got %v, %v; want a list containing %d", kids, err, child)
	}
	tree, err := Default.Tree(os.Getpid())
	if err != nil || len(tree) < 2 || tree[0] != os.Getpid() || !slices.Contains(tree, child) {
		t.Errorf("Tree: got %v, %v; want [%d ...] containing %d", tree, err, os.Getpid(), child)
	}
}

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"/usr/bin/python3\x00-m\x00http.server\x00", []string{"/usr/bin/python3", "-m", "http.server"}},
		{"nginx: worker process", []string{"nginx: worker process"}},
		{"a\x00\x00b\x00", []string{"a", "", "b"}},
		{"", nil},
	} {
		if got := ParseCmdline([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCmdline(%q): got %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestSocketHolders finds this process as the holder of a socket of its own.
func TestSocketHolders(t *testing.T) {
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(a.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	got, err := Default.SocketHolders(st.Ino, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, os.Getpid()) {
		t.Errorf("SocketHolders(%d): got %v; want it to contain our PID %d", st.Ino, got, os.Getpid())
	}
	args, err := Default.Cmdline(os.Getpid())
	if err != nil || len(args) == 0 || args[0] != os.Args[0] {
		t.Errorf("Cmdline(own PID): got %q, %v; want to start with %q", args, err, os.Args[0])
	}
}

func socketPair() (*os.File, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b"), nil
}

// TestAlive: a running process is alive; a killed one is not, already while
// it is a zombie waiting for its parent.
func TestAlive(t *testing.T) {
	if !Default.Alive(os.Getpid()) {
		t.Fatalf("Alive(self): got false; want true")
	}
	if Default.Alive(noSuchPID) || Default.Alive(0) || Default.Alive(-1) {
		t.Fatalf("Alive of a missing PID: got true; want false")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	pid := cmd.Process.Pid
	if !Default.Alive(pid) {
		t.Errorf("Alive(sleep %d): got false; want true", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: wait until the kernel has made it a zombie.
	for i := 0; i < 1000; i++ {
		if st, err := Default.Stat(pid); err == nil && st.State == 'Z' {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !Default.Exists(pid) {
		t.Fatalf("Exists(zombie %d): got false; want true before it is reaped", pid)
	}
	if Default.Alive(pid) {
		t.Errorf("Alive(zombie %d): got true; want false", pid)
	}
	_ = cmd.Wait()
	if Default.Alive(pid) {
		t.Errorf("Alive(reaped %d): got true; want false", pid)
	}
}
