//go:build linux

package integration

// Helpers of the hardening tests (hardening_*_test.go): raw HTTP on the
// daemon's socket for requests the typed client cannot express, running
// clients under other uids, and measuring the daemon's fds and memory.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/require"
)

// rawResp is one answer of the daemon to a raw request.
type rawResp struct {
	Status int
	Body   []byte
	Err    api.ErrorDetail // decoded when Status >= 400
}

func (r rawResp) String() string {
	return fmt.Sprintf("%d %s", r.Status, strings.TrimSpace(string(r.Body)))
}

// rawClient sends requests to sock with a new connection each time (no
// keep-alive), so that it leaves no connection open in the daemon.
func rawClient(sock string) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// raw sends method path with body (nil: none) to the daemon on sock.
func raw(t testing.TB, sock, method, path string, body []byte) rawResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://clonebotd"+path, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := rawClient(sock).Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := rawResp{Status: resp.StatusCode, Body: b}
	if r.Status >= 400 {
		var eb api.ErrorBody
		require.NoError(t, json.Unmarshal(b, &eb), "error body of %s %s: got %q; want a JSON ErrorBody", method, path, b)
		r.Err = eb.Error
	}
	return r
}

// requireAnswering checks that the daemon still serves GET /v1/status.
func requireAnswering(t testing.TB, d *daemon) {
	t.Helper()
	r := raw(t, d.sock, http.MethodGet, "/v1/status", nil)
	require.Equal(t, http.StatusOK, r.Status, "GET /v1/status after the bad input: got %s; want 200", r)
}

// startDaemonAt starts a clonebotd whose socket is sock (in a directory
// other uids can reach; startDaemon's lies under a 0700 directory).
func startDaemonAt(t testing.TB, sock string, extra ...string) *daemon {
	t.Helper()
	need(t)
	dir := t.TempDir()
	d := &daemon{t: t, sock: sock, state: filepath.Join(dir, "state"),
		img: filepath.Join(dir, "img"), logPath: filepath.Join(dir, "clonebotd.log"), extra: extra}
	d.start()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			t.Logf("clonebotd log:\n%s", b)
		}
	})
	return d
}

// publicDir returns a fresh directory of mode 0755 under /tmp, which any
// uid can traverse (t.TempDir's parent is 0700).
func publicDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "clonebot-pub-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	return dir
}

// copyExecutable copies src into dir with mode, for uids that cannot reach
// the original (test binaries live under 0700 directories).
func copyExecutable(t testing.TB, src, dir string, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	dst := filepath.Join(dir, filepath.Base(src))
	require.NoError(t, os.WriteFile(dst, b, mode))
	require.NoError(t, os.Chmod(dst, mode)) // past the umask
	return dst
}

// cred is who a command runs as.
type cred struct {
	uid, gid uint32
	groups   []uint32
}

// runAs runs argv as c, with a bounded time, and returns its output and
// exit code.
func runAs(t testing.TB, c cred, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: c.groups}}
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	require.NoError(t, err, "run %v as uid %d", argv, c.uid)
	return o.String(), e.String(), 0
}

// curlAs sends a request to the daemon's socket with curl running as c,
// and returns the HTTP status and body.
func curlAs(t testing.TB, c cred, curl, sock, method, path, body string) (int, string) {
	t.Helper()
	args := []string{curl, "-s", "-S", "--max-time", "60", "--unix-socket", sock, "-X", method,
		"-w", "\n%{http_code}", "http://clonebotd" + path}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	out, errOut, code := runAs(t, c, args...)
	require.Equal(t, 0, code, "curl %s %s as uid %d: got exit %d (%s); want 0", method, path, c.uid, code, errOut)
	i := strings.LastIndexByte(out, '\n')
	require.GreaterOrEqual(t, i, 0, "curl output %q", out)
	st, err := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	require.NoError(t, err, "curl status in %q", out)
	return st, out[:i]
}

// ensureGroup returns the gid of group name, creating it (and removing it
// when the test ends) if it does not exist.
func ensureGroup(t testing.TB, name string) uint32 {
	t.Helper()
	if g, err := user.LookupGroup(name); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		return uint32(gid)
	}
	out, err := exec.Command("groupadd", "--system", name).CombinedOutput()
	require.NoError(t, err, "groupadd %s: %s", name, out)
	t.Cleanup(func() { _ = exec.Command("groupdel", name).Run() })
	g, err := user.LookupGroup(name)
	require.NoError(t, err)
	gid, _ := strconv.Atoi(g.Gid)
	return uint32(gid)
}

// daemonUsage is a snapshot of the daemon's resources.
type daemonUsage struct {
	FDs      int // every open fd
	APIConns int // of which API connections (accepted on the socket)
	RSSKiB   int
	Threads  int
}

// Other is the fds that are not API connections: what a clone could leak.
func (u daemonUsage) Other() int { return u.FDs - u.APIConns }

func (u daemonUsage) String() string {
	return fmt.Sprintf("%d fds (%d API connections), RSS %d KiB, %d threads", u.FDs, u.APIConns, u.RSSKiB, u.Threads)
}

// usageOf measures the daemon process pid serving sock.
func usageOf(t testing.TB, pid int, sock string) daemonUsage {
	t.Helper()
	var u daemonUsage
	conns := apiConnInodes(sock)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	for _, e := range ents {
		u.FDs++
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil && conns[l] {
			u.APIConns++
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			u.RSSKiB, _ = strconv.Atoi(f[1])
		case "Threads:":
			u.Threads, _ = strconv.Atoi(f[1])
		}
	}
	return u
}

// apiConnInodes returns "socket:[inode]" of the connections accepted on the
// unix socket at path (not the listener), from /proc/net/unix.
func apiConnInodes(path string) map[string]bool {
	out := map[string]bool{}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 || fs[7] != path || fs[3] == "00010000" {
			continue
		}
		out["socket:["+fs[6]+"]"] = true
	}
	return out
}

// statusIn reports whether got is one of want.
func statusIn(got int, want ...int) bool {
	for _, w := range want {
		if got == w {
			return true
		}
	}
	return false
}
