//go:build linux

// Package integration runs clonebot end to end: the real clonebotd and
// clonebotctl binaries, real CRIU, the real kernel and real servers (the Go
// server in testdata, python3's http.server, nginx). It needs root and CRIU
// (make deps); with CI=true or CLONEBOT_STRICT=1 a missing prerequisite fails
// instead of skipping.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/require"
)

// pipeMaxAtStart is fs.pipe-max-size before any test ran: clonebot raises
// it during dumps and must put it back.
var pipeMaxAtStart = func() string {
	b, _ := os.ReadFile("/proc/sys/fs/pipe-max-size")
	return strings.TrimSpace(string(b))
}()

// bins are the binaries under test.
var bins struct {
	dir, daemon, ctl, goserver string
	buildErr                   error
}

func TestMain(m *testing.M) {
	code := func() int {
		tmp, err := os.MkdirTemp("", "clonebot-it-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		bins.dir = os.Getenv("CLONEBOT_BIN")
		if bins.dir == "" {
			bins.dir = tmp
			bins.buildErr = goBuild(tmp, "./cmd/clonebotd", "./cmd/clonebotctl")
		}
		bins.daemon = filepath.Join(bins.dir, "clonebotd")
		bins.ctl = filepath.Join(bins.dir, "clonebotctl")
		// CLONEBOT_GOSERVER names a prebuilt test server (the VM has no Go).
		bins.goserver = os.Getenv("CLONEBOT_GOSERVER")
		if bins.goserver == "" {
			bins.goserver = filepath.Join(tmp, "goserver")
			if err := goBuild(tmp, "./integration/testdata/goserver"); err != nil && bins.buildErr == nil {
				bins.buildErr = err
			}
		}
		code := m.Run()
		if err := writeBenchReport(); err != nil {
			fmt.Fprintln(os.Stderr, "write benchmark report:", err)
			return 1
		}
		return code
	}()
	os.Exit(code)
}

// goBuild builds packages (module-relative) into dir.
func goBuild(dir string, pkgs ...string) error {
	args := append([]string{"build", "-o", dir + "/"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", pkgs, err, out)
	}
	return nil
}

// need checks what every end-to-end test needs.
func need(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "criu")
	require.NoError(t, bins.buildErr)
}

// daemon is a clonebotd started for one test.
type daemon struct {
	t                testing.TB
	sock, state, img string
	cmd              *exec.Cmd
	logPath          string
	c                *api.Client
	extra            []string // flags
	exited           chan struct{}
}

func startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, nil, extra...)
}

// startDaemonEnv starts clonebotd with extra environment (e.g. failpoints).
func startDaemonEnv(t testing.TB, env []string, extra ...string) *daemon {
	t.Helper()
	need(t)
	dir := t.TempDir()
	d := &daemon{t: t, sock: filepath.Join(dir, "sock"), state: filepath.Join(dir, "state"),
		img: filepath.Join(dir, "img"), logPath: filepath.Join(dir, "clonebotd.log"), extra: extra}
	d.startEnv(env)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			t.Logf("clonebotd log:\n%s", b)
		}
	})
	return d
}

// start (re)starts the daemon with its flags.
func (d *daemon) start() { d.startEnv(nil) }

// startEnv (re)starts the daemon with its flags and extra environment.
func (d *daemon) startEnv(env []string) {
	t := d.t
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	args := append([]string{"--socket", d.sock, "--state-dir", d.state, "--image-dir", d.img, "--log-level", "debug"}, d.extra...)
	d.cmd = exec.Command(bins.daemon, args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	require.NoError(t, d.cmd.Start())
	logf.Close()
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(d.cmd, d.exited)
	d.c = api.NewClient(d.sock)
	// The daemon probes CRIU at start (criu check): seconds on a host,
	// up to a minute in a TCG guest on a busy host.
	wait := 30 * time.Second
	if testutil.InVM() {
		wait = 2 * time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.c.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.logPath)
			t.Fatalf("clonebotd did not answer on %s within %v: %v\nlog:\n%s", d.sock, wait, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; the daemon unmounts its image tmpfs.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("clonebotd did not stop within 30s of SIGTERM")
	}
	d.cmd = nil
	_ = syscall.Unmount(d.img, syscall.MNT_DETACH) // in case it died without
}

// waitExit waits for a daemon that killed itself (a failpoint).
func (d *daemon) waitExit(t testing.TB) {
	t.Helper()
	select {
	case <-d.exited:
		d.cmd = nil
	case <-time.After(60 * time.Second):
		t.Fatalf("clonebotd did not exit")
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// clone asks for a clone and removes it when the test ends.
func (d *daemon) clone(t *testing.T, req api.CloneRequest) *api.Clone {
	t.Helper()
	rec, err := d.c.CreateClone(ctx(t), req)
	require.NoError(t, err, "clone PID %d", req.PID)
	t.Cleanup(func() {
		_, _ = d.c.DeleteClone(context.Background(), rec.ID)
	})
	return rec
}

// ctl runs clonebotctl against this daemon.
func (d *daemon) ctl(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(bins.ctl, append([]string{"--socket", d.sock}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return o.String(), e.String(), code
}

// proc is a target process started by a test.
type target struct {
	cmd  *exec.Cmd
	pid  int
	addr string
	dir  string
}

// startTarget starts argv in its own session with output to a file, and
// kills it when the test ends.
func startTarget(t testing.TB, argv []string, env ...string) *target {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "out.log"))
	require.NoError(t, err)
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	return watchTarget(t, cmd)
}

// watchTarget makes a started cmd (the leader of its own session) a test
// target, killed with its process group when the test ends.
func watchTarget(t testing.TB, cmd *exec.Cmd) *target {
	tg := &target{cmd: cmd, pid: cmd.Process.Pid, dir: cmd.Dir}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-tg.pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		<-exited
	})
	return tg
}

// startGoServer starts the testdata server and waits until it listens.
func startGoServer(t testing.TB, args ...string) *target {
	t.Helper()
	pf := filepath.Join(t.TempDir(), "addr")
	tg := startTarget(t, append([]string{bins.goserver, "-port-file", pf}, args...))
	tg.addr = waitFile(t, pf)
	return tg
}

func waitFile(t testing.TB, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within 20s", path)
	return ""
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 20s", addr)
}

// fresh is an HTTP client that opens a new connection per request, so the
// kernel's SO_REUSEPORT spreading picks a listener each time.
var fresh = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := fresh.Get(url)
	require.NoError(t, err, "GET %s", url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// listenersOn counts the processes with a listening socket on port, from
// /proc/net/tcp{,6} and each process's fds.
func listenersOn(t *testing.T, pids []int, port int) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			if i := strings.LastIndex(fs[1], ":"); i > 0 {
				if p, err := strconv.ParseUint(fs[1][i+1:], 16, 32); err == nil && int(p) == port {
					inodes["socket:["+fs[9]+"]"] = true
				}
			}
		}
		fh.Close()
	}
	out := map[int]bool{}
	for _, pid := range pids {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range ents {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && inodes[l] {
				out[pid] = true
			}
		}
	}
	return out
}

// alive reports whether pid still exists as more than a zombie leader: a
// multi-threaded process's leader turns zombie while its other threads,
// which still hold the fd table (and the listeners), are exiting.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i <= 0 || i+2 >= len(s) || s[i+2] != 'Z' {
		return true
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(tasks) > 1
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("PID %d still alive after 10s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nsOf(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	require.NoError(t, err)
	return l
}

func unifiedCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatalf("PID %d has no cgroup v2 line", pid)
	return ""
}

func status(t *testing.T, d *daemon) *api.Status {
	t.Helper()
	st, err := d.c.Status(ctx(t))
	require.NoError(t, err)
	return st
}

// apiErr returns the API error of err, failing the test if it is not one.
func apiErr(t *testing.T, err error) *api.Error {
	t.Helper()
	require.Error(t, err)
	var ae *api.Error
	require.True(t, errors.As(err, &ae), "got %T (%v); want *api.Error", err, err)
	return ae
}

func prettyJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
