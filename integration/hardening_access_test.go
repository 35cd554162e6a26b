//go:build linux

package integration

// Access control: the socket is 0660 root:clonebot; the daemon checks every
// connection's SO_PEERCRED; a caller that is not root may act only on
// processes it could ptrace and only on its own clones; images and state
// are 0700. Clients run as other uids through clonebotctl and curl.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Test users: none needs an /etc/passwd entry.
const (
	aliceUID = 64101 // member of group clonebot
	bobUID   = 64102 // member of group clonebot
	nobody   = 65534 // not a member
)

func TestAccessControl(t *testing.T) {
	need(t)
	curl := testutil.RequireBinary(t, "curl")
	gid := ensureGroup(t, "clonebot")
	pub := publicDir(t)
	sock := filepath.Join(pub, "run", "clonebotd.sock")
	d := startDaemonAt(t, sock)
	st := status(t, d)
	ctl := copyExecutable(t, bins.ctl, pub, 0o755)

	outsider := cred{uid: nobody, gid: nobody}
	alice := cred{uid: aliceUID, gid: aliceUID, groups: []uint32{gid}}
	bob := cred{uid: bobUID, gid: bobUID, groups: []uint32{gid}}

	// Root's clone, and the operation that made it.
	const rootOp = "hardening-acl-root-clone"
	rootSrv := startGoServer(t)
	rootClone := d.clone(t, api.CloneRequest{PID: rootSrv.pid, Operation: rootOp})

	t.Run("socket is 0660 root:clonebot", func(t *testing.T) {
		var sb syscall.Stat_t
		require.NoError(t, syscall.Stat(sock, &sb))
		assert.Equal(t, uint32(syscall.S_IFSOCK), sb.Mode&syscall.S_IFMT, "socket type")
		assert.Equal(t, uint32(0o660), sb.Mode&0o7777, "socket mode: got %o; want 660", sb.Mode&0o7777)
		assert.Equal(t, uint32(0), sb.Uid, "socket owner: got uid %d; want 0", sb.Uid)
		assert.Equal(t, gid, sb.Gid, "socket group: got gid %d; want %d (clonebot)", sb.Gid, gid)
	})

	t.Run("state and images are 0700", func(t *testing.T) {
		for _, dir := range []string{d.state, filepath.Join(d.state, "clones"), filepath.Join(d.state, "logs"), d.img} {
			fi, err := os.Stat(dir)
			require.NoError(t, err)
			assert.Equal(t, fs.FileMode(0o700), fi.Mode().Perm(), "%s: got mode %o; want 700", dir, fi.Mode().Perm())
		}
		// Every directory under the state dir is 0700, so nothing in it
		// (clone records, CRIU logs, the clone's output) is reachable by
		// anyone but root, whatever the files' own modes (CRIU writes its
		// stats-* files 0644).
		var files int
		require.NoError(t, filepath.WalkDir(d.state, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := de.Info()
			if err != nil {
				return err
			}
			files++
			if de.IsDir() {
				assert.Equal(t, fs.FileMode(0o700), fi.Mode().Perm(), "%s: got mode %o; want 700", p, fi.Mode().Perm())
			} else if fi.Mode().Perm()&0o077 != 0 {
				t.Logf("%s has mode %o (unreachable: its directory is 0700)", p, fi.Mode().Perm())
			}
			return nil
		}))
		assert.Greater(t, files, 3, "the state dir should hold root's clone")
		// The images live on a private tmpfs of mode 0700, and are gone once
		// the clone runs.
		mi, err := os.ReadFile("/proc/self/mountinfo")
		require.NoError(t, err)
		var opts string
		for _, l := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(l); len(f) > 9 && f[4] == d.img {
				opts = strings.Join(f[len(f)-3:], " ")
			}
		}
		assert.Contains(t, opts, "tmpfs", "image dir %s: got mount %q; want a tmpfs", d.img, opts)
		assert.Contains(t, opts, "mode=700", "image dir %s: got mount options %q; want mode=700", d.img, opts)
		imgs, _ := os.ReadDir(d.img)
		assert.Empty(t, imgs, "images of a running clone: got %d entries; want none (they hold the original's memory)", len(imgs))
	})

	t.Run("an outsider cannot connect", func(t *testing.T) {
		_, errOut, code := runAs(t, outsider, ctl, "--socket", sock, "status")
		assert.Equal(t, 1, code, "clonebotctl status as uid %d: exit code: got %d; want 1", nobody, code)
		assert.Contains(t, errOut, "permission denied")
		assert.Contains(t, errOut, "member of group clonebot", "the hint must say how to get access")
		_, errOut, code = runAs(t, outsider, ctl, "--socket", sock, "clone", strconv.Itoa(rootSrv.pid))
		assert.Equal(t, 1, code, "clonebotctl clone as uid %d: got exit %d (%s); want 1", nobody, code, errOut)
	})

	t.Run("an outsider gets 403 on every endpoint", func(t *testing.T) {
		// With the socket opened to everyone (a mistake, or an fd handed
		// over), the daemon's own check of SO_PEERCRED still refuses.
		require.NoError(t, os.Chmod(sock, 0o666))
		defer func() { require.NoError(t, os.Chmod(sock, 0o660)) }()
		own := startGoServerAs(t, nobody, nobody)
		for _, ep := range aclEndpoints(rootClone.ID, rootOp, own.pid) {
			code, body := curlAs(t, outsider, curl, sock, ep.method, ep.path, ep.body)
			var eb api.ErrorBody
			_ = json.Unmarshal([]byte(body), &eb)
			assert.Equal(t, http.StatusForbidden, code, "%s %s as uid %d: got %d %s; want 403", ep.method, ep.path, nobody, code, body)
			assert.Contains(t, eb.Error.Message, fmt.Sprintf("uid %d is neither root nor a member of group clonebot", nobody))
		}
		_, errOut, code := runAs(t, outsider, ctl, "--socket", sock, "rm", rootClone.ID)
		assert.Equal(t, 1, code, "clonebotctl rm as uid %d on an open socket: got exit %d; want 1", nobody, code)
		assert.Contains(t, errOut, "neither root nor a member of group clonebot", "stderr: got %q; want the 403's message", errOut)
		_, err := d.c.GetClone(ctx(t), rootClone.ID)
		require.NoError(t, err, "root's clone must survive the outsider's rm")
	})

	t.Run("a member sees only its own clones", func(t *testing.T) {
		out, errOut, code := runAs(t, alice, ctl, "--socket", sock, "ls", "-o", "json")
		require.Equal(t, 0, code, "clonebotctl ls as a member: %s", errOut)
		assert.JSONEq(t, "[]", out, "clonebotctl ls as uid %d: got %s; want none of root's clones", aliceUID, out)
		code, body := curlAs(t, alice, curl, sock, http.MethodGet, "/v1/clones/"+rootClone.ID, "")
		assert.Equal(t, 404, code, "GET of root's clone as a member: got %d %s; want 404", code, body)
		code, body = curlAs(t, alice, curl, sock, http.MethodDelete, "/v1/clones/"+rootClone.ID, "")
		assert.Equal(t, 404, code, "DELETE of root's clone as a member: got %d %s; want 404", code, body)
		_, err := d.c.GetClone(ctx(t), rootClone.ID)
		require.NoError(t, err, "root's clone must survive a member's rm")
		code, body = curlAs(t, alice, curl, sock, http.MethodGet, "/v1/status", "")
		assert.Equal(t, 200, code, "GET /v1/status as a member: got %d %s; want 200", code, body)
	})

	t.Run("a member cannot follow root's operations", func(t *testing.T) {
		code, body := curlAs(t, alice, curl, sock, http.MethodGet, "/v1/operations/"+rootOp+"/events", "")
		assert.Equal(t, 404, code, "events of root's operation as a member: got %d %s; want 404 as for root's clones", code, body)
	})

	t.Run("a member may clone only what it could ptrace", func(t *testing.T) {
		bobSrv := startGoServerAs(t, bobUID, bobUID)
		hidden := startGoServerAttr(t, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: aliceUID, Gid: aliceUID}}, 0o711)
		rootGroup := startGoServerAs(t, aliceUID, 0)
		withCaps := startGoServerAttr(t, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: aliceUID, Gid: aliceUID},
			AmbientCaps: []uintptr{10 /* CAP_NET_BIND_SERVICE */}}, 0o755)
		for _, tc := range []struct {
			name     string
			path     string
			pid      int
			contains string
		}{
			{"root's process", "/v1/clones", rootSrv.pid, fmt.Sprintf("uid %d may not act on PID %d: it runs as uid 0", aliceUID, rootSrv.pid)},
			{"another member's process", "/v1/clones", bobSrv.pid, fmt.Sprintf("it runs as uid %d", bobUID)},
			{"its own uid, not dumpable", "/v1/clones", hidden.pid, "not dumpable"},
			{"its own uid, root's group", "/v1/clones", rootGroup.pid, fmt.Sprintf("PID %d", rootGroup.pid)},
			{"its own uid, more capabilities", "/v1/clones", withCaps.pid, fmt.Sprintf("PID %d", withCaps.pid)},
			{"takeover of root's process", "/v1/takeovers", rootSrv.pid, "it runs as uid 0"},
			{"upgrade of root's process", "/v1/upgrades", rootSrv.pid, "it runs as uid 0"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := fmt.Sprintf(`{"pid": %d}`, tc.pid)
				if tc.path == "/v1/upgrades" {
					body = fmt.Sprintf(`{"pid": %d, "exec": %q}`, tc.pid, "/bin/true")
				}
				code, out := curlAs(t, alice, curl, sock, http.MethodPost, tc.path, body)
				if code == http.StatusCreated {
					var rec api.Clone
					if json.Unmarshal([]byte(out), &rec) == nil {
						_, _ = d.c.DeleteClone(ctx(t), rec.ID)
					}
				}
				var eb api.ErrorBody
				_ = json.Unmarshal([]byte(out), &eb)
				assert.Equal(t, http.StatusForbidden, code, "POST %s of PID %d as uid %d: got %d %s; want 403", tc.path, tc.pid, aliceUID, code, out)
				assert.Contains(t, eb.Error.Message, tc.contains, "message: got %q; want it to say %q", eb.Error.Message, tc.contains)
			})
		}
		_, errOut, code := runAs(t, alice, ctl, "--socket", sock, "clone", strconv.Itoa(rootSrv.pid))
		assert.Equal(t, 1, code, "clonebotctl clone of root's process as a member: got exit %d; want 1", code)
		assert.Contains(t, errOut, "may not act on", "stderr: got %q; want the 403's message", errOut)
		list, err := d.c.ListClones(ctx(t))
		require.NoError(t, err)
		assert.Len(t, list, 1, "clones after the refused requests: got %d; want root's only", len(list))
	})

	t.Run("a member clones its own process", func(t *testing.T) {
		if testutil.InVM() {
			testutil.RequireVMFeature(t, st.Capabilities["sys_resource"], "clonebotd has CAP_SYS_RESOURCE")
		}
		own := startGoServerAs(t, aliceUID, aliceUID)
		out, errOut, code := runAs(t, alice, ctl, "--socket", sock, "clone", strconv.Itoa(own.pid), "-o", "json")
		if !st.Capabilities["sys_resource"] {
			// This host's root lacks CAP_SYS_RESOURCE: the access check
			// passes, then preflight refuses, before anything is frozen.
			assert.Equal(t, 1, code, "clonebotctl clone of its own process: got exit %d (%s); want 1 on this host", code, errOut)
			assert.Contains(t, errOut, "CAP_SYS_RESOURCE", "got %q; want the refusal to name CAP_SYS_RESOURCE, not an access error", errOut)
			assert.NotContains(t, errOut, "may not act on")
			code, body := curlAs(t, alice, curl, sock, http.MethodPost, "/v1/clones", fmt.Sprintf(`{"pid": %d}`, own.pid))
			assert.Equal(t, 422, code, "POST /v1/clones of its own process: got %d %s; want 422 here (403 would be the access check failing)", code, body)
			t.Logf("the clone itself runs in the VM, where clonebotd has CAP_SYS_RESOURCE (make test-vm)")
			return
		}
		require.Equal(t, 0, code, "clonebotctl clone of its own process as uid %d: %s", aliceUID, errOut)
		var rec api.Clone
		require.NoError(t, json.Unmarshal([]byte(out), &rec))
		t.Cleanup(func() { _, _ = d.c.DeleteClone(ctx(t), rec.ID) })
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rec.PID))
		require.NoError(t, err)
		assert.Contains(t, string(b), fmt.Sprintf("Uid:\t%d\t%d\t%d", aliceUID, aliceUID, aliceUID), "the clone runs as its owner")

		// Alice sees it; Bob does not, and cannot touch it; root sees both.
		out, _, code = runAs(t, alice, ctl, "--socket", sock, "ls", "-o", "json")
		require.Equal(t, 0, code)
		assert.Contains(t, out, rec.ID, "ls as the owner: got %s; want its clone %s", out, rec.ID)
		assert.NotContains(t, out, rootClone.ID, "ls as the owner: got %s; want no clone of root's", out)
		out, _, code = runAs(t, bob, ctl, "--socket", sock, "ls", "-o", "json")
		require.Equal(t, 0, code)
		assert.JSONEq(t, "[]", out, "ls as another member: got %s; want none", out)
		for _, m := range []string{http.MethodGet, http.MethodDelete} {
			code, body := curlAs(t, bob, curl, sock, m, "/v1/clones/"+rec.ID, "")
			assert.Equal(t, 404, code, "%s of a member's clone as another member: got %d %s; want 404", m, code, body)
		}
		list, err := d.c.ListClones(ctx(t))
		require.NoError(t, err)
		ids := []string{}
		for _, c := range list {
			ids = append(ids, c.ID)
		}
		assert.ElementsMatch(t, []string{rootClone.ID, rec.ID}, ids, "root sees every clone")
		_, errOut, code = runAs(t, alice, ctl, "--socket", sock, "rm", rec.ID)
		assert.Equal(t, 0, code, "rm of its own clone: %s", errOut)
		waitGone(t, rec.PID)
	})

	t.Run("root sees everything", func(t *testing.T) {
		out, errOut, code := d.ctl("ls", "-o", "json")
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, rootClone.ID, "ls as root: got %s; want root's clone %s", out, rootClone.ID)
		ev := 0
		require.NoError(t, d.c.Events(ctx(t), rootOp, func(api.Event) error { ev++; return nil }))
		assert.Greater(t, ev, 0, "root follows its operation")
	})
}

// aclEndpoint is one request of every kind.
type aclEndpoint struct{ method, path, body string }

func aclEndpoints(cloneID, op string, pid int) []aclEndpoint {
	return []aclEndpoint{
		{http.MethodGet, "/v1/status", ""},
		{http.MethodGet, "/v1/clones", ""},
		{http.MethodGet, "/v1/clones/" + cloneID, ""},
		{http.MethodDelete, "/v1/clones/" + cloneID, ""},
		{http.MethodPost, "/v1/clones", fmt.Sprintf(`{"pid": %d}`, pid)},
		{http.MethodPost, "/v1/takeovers", fmt.Sprintf(`{"pid": %d}`, pid)},
		{http.MethodPost, "/v1/upgrades", fmt.Sprintf(`{"pid": %d, "exec": "/bin/true"}`, pid)},
		{http.MethodGet, "/v1/operations/" + op + "/events", ""},
	}
}

// startGoServerAttr runs the test server with attr, from a copy of mode
// mode owned by root (0711: its users cannot read it, so the kernel makes
// the process non-dumpable).
func startGoServerAttr(t *testing.T, attr *syscall.SysProcAttr, mode os.FileMode) *target {
	t.Helper()
	dir, err := os.MkdirTemp("", "clonebot-attr-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	bin := copyExecutable(t, bins.goserver, dir, mode)
	pf := filepath.Join(dir, "addr")
	cmd := execCommand(bin, "-port-file", pf)
	cmd.Dir = dir
	attr.Setsid = true
	cmd.SysProcAttr = attr
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return &target{cmd: cmd, pid: cmd.Process.Pid, addr: waitFile(t, pf), dir: dir}
}
