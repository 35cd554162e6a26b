//go:build linux

package integration

// Bad input, through the API (raw HTTP where the typed client cannot say it)
// and through clonebotctl: each is refused with the right status or exit
// code and a message saying what was wrong, nothing is made or changed, and
// the daemon answers afterwards. What preflight_test.go and takeover_test.go
// already cover through the typed client (PID -5, 0, 1, 2, a zombie, the
// daemon, NUMA node "7", a second takeover, bad probes and drain signals,
// a missing or non-executable upgrade binary) is not repeated here.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type badRequest struct {
	name, method, path, body string
	status                   int
	code                     string   // the ErrorDetail's code
	contains                 []string // in the message
}

func TestBadInputAPI(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t)
	pid := srv.pid
	body := func(format string, args ...any) string {
		return fmt.Sprintf(format, args...)
	}
	long := strings.Repeat("a", 65)
	huge := `{"pid": ` + strconv.Itoa(pid) + `, "name": "` + strings.Repeat("a", 2<<20) + `"}`
	padded := strings.Repeat(" ", 2<<20) + `{"pid": ` + strconv.Itoa(pid) + `}`
	const clones, takeovers, upgrades = "/v1/clones", "/v1/takeovers", "/v1/upgrades"
	post := http.MethodPost
	cases := []badRequest{
		// The PID.
		{"pid not a number", post, clones, `{"pid": "abc"}`, 400, "invalid_argument", []string{"pid", "string"}},
		{"pid a fraction", post, clones, `{"pid": 1.5}`, 400, "invalid_argument", []string{"pid", "1.5"}},
		{"pid overflows", post, clones, `{"pid": 99999999999999999999}`, 400, "invalid_argument", []string{"pid"}},
		{"pid beyond any pid_max", post, clones, `{"pid": 9223372036854775807}`, 404, "not_found", []string{"no process with PID 9223372036854775807"}},
		{"pid null", post, clones, `{"pid": null}`, 400, "invalid_argument", []string{"pid 0", "positive"}},
		{"no pid", post, clones, `{}`, 400, "invalid_argument", []string{"pid 0", "positive"}},
		// The JSON itself.
		{"empty body", post, clones, ``, 400, "invalid_argument", []string{"empty request body"}},
		{"truncated JSON", post, clones, `{"pid": `, 400, "invalid_argument", []string{"malformed", "unexpected EOF"}},
		{"not JSON", post, clones, body("pid=%d", pid), 400, "invalid_argument", []string{"malformed", "invalid character"}},
		{"an array", post, clones, body("[%d]", pid), 400, "invalid_argument", []string{"cannot unmarshal array"}},
		{"two objects", post, clones, body(`{"pid": %d} {"pid": %d}`, pid, pid), 400, "invalid_argument", []string{"data after the JSON object"}},
		{"a stray bracket after", post, clones, body(`{"pid": %d}]`, pid), 400, "invalid_argument", []string{"data after the JSON object"}},
		{"unknown field", post, clones, body(`{"pid": %d, "priority": 1}`, pid), 400, "invalid_argument", []string{`unknown field "priority"`}},
		{"body over 1 MiB", post, clones, huge, 413, "payload_too_large", []string{"over 1048576 bytes"}},
		{"over 1 MiB of white space", post, clones, padded, 413, "payload_too_large", []string{"over 1048576 bytes"}},
		// Wrong types and ranges.
		{"name a number", post, clones, body(`{"pid": %d, "name": 5}`, pid), 400, "invalid_argument", []string{"name"}},
		{"isolate_net a string", post, clones, body(`{"pid": %d, "isolate_net": "yes"}`, pid), 400, "invalid_argument", []string{"isolate_net"}},
		{"pids_max a string", post, clones, body(`{"pid": %d, "pids_max": "10"}`, pid), 400, "invalid_argument", []string{"pids_max"}},
		{"pids_max negative", post, clones, body(`{"pid": %d, "pids_max": -5}`, pid), 400, "invalid_argument", []string{"pids_max", "negative"}},
		{"memory_max negative", post, clones, body(`{"pid": %d, "memory_max": -1}`, pid), 400, "invalid_argument", []string{"size -1"}},
		{"memory_max bad unit", post, clones, body(`{"pid": %d, "memory_max": "12Q"}`, pid), 400, "invalid_argument", []string{"12Q"}},
		// NUMA placement.
		{"numa unknown node", post, clones, body(`{"pid": %d, "numa": 99}`, pid), 400, "invalid_argument", []string{"99"}},
		{"numa negative", post, clones, body(`{"pid": %d, "numa": -1}`, pid), 400, "invalid_argument", []string{"numa -1"}},
		{"numa unknown policy", post, clones, body(`{"pid": %d, "numa": "nearest"}`, pid), 400, "invalid_argument", []string{"nearest"}},
		{"numa a bool", post, clones, body(`{"pid": %d, "numa": true}`, pid), 400, "invalid_argument", []string{"numa"}},
		// Names: no path separators, control characters or dot files.
		{"name with a slash", post, clones, body(`{"pid": %d, "name": "a/b"}`, pid), 400, "invalid_argument", []string{"name", `a/b`}},
		{"name going up", post, clones, body(`{"pid": %d, "name": "../x"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"name with a newline", post, clones, body(`{"pid": %d, "name": "x\n"}`, pid), 400, "invalid_argument", []string{"name", `\n`}},
		{"name with a NUL", post, clones, body(`{"pid": %d, "name": "x\u0000y"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"name with an escape", post, clones, body(`{"pid": %d, "name": "x\u001b[31m"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"name with a space", post, clones, body(`{"pid": %d, "name": "x y"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"name a dot", post, clones, body(`{"pid": %d, "name": "."}`, pid), 400, "invalid_argument", []string{"name"}},
		{"name of 65 bytes", post, clones, body(`{"pid": %d, "name": %q}`, pid, long), 400, "invalid_argument", []string{"at most 64"}},
		{"operation with a path", post, clones, body(`{"pid": %d, "operation": "../../etc/passwd"}`, pid), 400, "invalid_argument", []string{"operation"}},
		{"operation too short", post, clones, body(`{"pid": %d, "operation": "op"}`, pid), 400, "invalid_argument", []string{"operation", "8 to 64"}},
		// Takeovers.
		{"takeover pid not a number", post, takeovers, `{"pid": "abc"}`, 400, "invalid_argument", []string{"pid"}},
		{"takeover unknown field", post, takeovers, body(`{"pid": %d, "drain": "now"}`, pid), 400, "invalid_argument", []string{`unknown field "drain"`}},
		{"takeover probe_timeout not a duration", post, takeovers, body(`{"pid": %d, "probe_timeout": "forever"}`, pid), 400, "invalid_argument", []string{"forever"}},
		{"takeover probe_timeout over 1h", post, takeovers, body(`{"pid": %d, "probe_timeout": "2h"}`, pid), 400, "invalid_argument", []string{"at most 1h"}},
		{"takeover drain_timeout negative", post, takeovers, body(`{"pid": %d, "drain_timeout": -1}`, pid), 400, "invalid_argument", []string{"duration -1"}},
		{"takeover drain_signal a number", post, takeovers, body(`{"pid": %d, "drain_signal": 9}`, pid), 400, "invalid_argument", []string{"drain_signal"}},
		{"takeover probe a file URL", post, takeovers, body(`{"pid": %d, "probe": "file:///etc/passwd"}`, pid), 400, "invalid_argument", []string{"probe", "file:///etc/passwd"}},
		{"takeover isolating the network", post, takeovers, body(`{"pid": %d, "isolate_net": true}`, pid), 400, "invalid_argument", []string{"isolate"}},
		{"takeover name with a slash", post, takeovers, body(`{"pid": %d, "name": "a/b"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"takeover body over 1 MiB", post, takeovers, huge, 413, "payload_too_large", []string{"over 1048576 bytes"}},
		// Upgrades.
		{"upgrade pid negative", post, upgrades, `{"pid": -3, "exec": "/bin/true"}`, 400, "invalid_argument", []string{"pid -3"}},
		{"upgrade exec relative", post, upgrades, body(`{"pid": %d, "exec": "bin/server"}`, pid), 400, "invalid_argument", []string{"absolute", "bin/server"}},
		{"upgrade args not a list", post, upgrades, body(`{"pid": %d, "exec": "/bin/true", "args": "-v"}`, pid), 400, "invalid_argument", []string{"args"}},
		{"upgrade env without =", post, upgrades, body(`{"pid": %d, "exec": %q, "env": ["NOEQUALS"]}`, pid, bins.goserver), 400, "invalid_argument", []string{"NOEQUALS", "KEY=VALUE"}},
		{"upgrade env with a NUL", post, upgrades, body(`{"pid": %d, "exec": %q, "env": ["A=b\u0000c"]}`, pid, bins.goserver), 400, "invalid_argument", []string{"KEY=VALUE"}},
		{"upgrade shutting the listener", post, upgrades, body(`{"pid": %d, "exec": "/bin/true", "shutdown_listener": true}`, pid), 400, "invalid_argument", []string{"shutdown_listener"}},
		{"upgrade name with a newline", post, upgrades, body(`{"pid": %d, "exec": "/bin/true", "name": "x\n"}`, pid), 400, "invalid_argument", []string{"name"}},
		{"upgrade numa unknown policy", post, upgrades, body(`{"pid": %d, "exec": "/bin/true", "numa": "far"}`, pid), 400, "invalid_argument", []string{"far"}},
		{"upgrade body over 1 MiB", post, upgrades, huge, 413, "payload_too_large", []string{"over 1048576 bytes"}},
		// Clone IDs: unknown ones are 404, malformed ones 400.
		{"get unknown ID", http.MethodGet, "/v1/clones/0123456789ab", "", 404, "not_found", []string{"no clone 0123456789ab"}},
		{"rm unknown ID", http.MethodDelete, "/v1/clones/0123456789ab", "", 404, "not_found", []string{"no clone 0123456789ab"}},
		{"get short ID", http.MethodGet, "/v1/clones/xyz", "", 400, "invalid_argument", []string{`"xyz" is not a clone ID`}},
		{"get upper-case ID", http.MethodGet, "/v1/clones/0123456789AB", "", 400, "invalid_argument", []string{"not a clone ID"}},
		{"get ID of 13 digits", http.MethodGet, "/v1/clones/0123456789abc", "", 400, "invalid_argument", []string{"not a clone ID"}},
		{"rm ID with a slash", http.MethodDelete, "/v1/clones/a%2Fb", "", 400, "invalid_argument", []string{`"a/b" is not a clone ID`}},
		{"rm ID going up", http.MethodDelete, "/v1/clones/..%2F..%2Fstate", "", 400, "invalid_argument", []string{"not a clone ID"}},
		{"get ID with a NUL", http.MethodGet, "/v1/clones/%00", "", 400, "invalid_argument", []string{"not a clone ID"}},
		{"events of a malformed operation", http.MethodGet, "/v1/operations/BAD!/events", "", 400, "invalid_argument", []string{"operation", "BAD!"}},
		{"events of an unknown operation", http.MethodGet, "/v1/operations/no-such-operation/events", "", 404, "not_found", []string{"no operation no-such-operation"}},
		// Endpoints.
		{"unknown endpoint", http.MethodGet, "/v1/nope", "", 404, "not_found", []string{"no endpoint GET /v1/nope"}},
		{"wrong method", http.MethodPut, clones, body(`{"pid": %d}`, pid), 404, "not_found", []string{"no endpoint PUT /v1/clones"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			if tc.body != "" || tc.method == post {
				b = []byte(tc.body)
			}
			r := raw(t, d.sock, tc.method, tc.path, b)
			assert.Equal(t, tc.status, r.Status, "status: got %d (%s); want %d", r.Status, r.Err.Message, tc.status)
			assert.Equal(t, tc.code, r.Err.Code, "code: got %q; want %q", r.Err.Code, tc.code)
			for _, c := range tc.contains {
				assert.Contains(t, r.Err.Message, c, "message: got %q; want it to say %q", r.Err.Message, c)
			}
			assert.NotContains(t, r.Err.Message, strings.Repeat("a", 100), "the message must not echo a huge body")
			requireAnswering(t, d)
		})
	}

	t.Run("garbage instead of HTTP", func(t *testing.T) {
		for _, g := range []string{"\x00\x01\x02garbage\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "POST /v1/clones HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"} {
			c, err := net.Dial("unix", d.sock)
			require.NoError(t, err)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Write([]byte(g))
			require.NoError(t, err)
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			c.Close()
			assert.True(t, strings.HasPrefix(string(buf[:n]), "HTTP/1.1 4") || strings.HasPrefix(string(buf[:n]), "HTTP/1.1 5") || n == 0,
				"answer to %q: got %q; want an HTTP error or a closed connection", g, buf[:n])
			requireAnswering(t, d)
		}
	})

	t.Run("a client that stalls mid-request", func(t *testing.T) {
		// Half a request on one connection must not hold up the others.
		c, err := net.Dial("unix", d.sock)
		require.NoError(t, err)
		defer c.Close()
		_, err = fmt.Fprintf(c, "POST /v1/clones HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pid\": %d", pid)
		require.NoError(t, err)
		for i := 0; i < 3; i++ {
			requireAnswering(t, d)
		}
	})

	// Nothing was made, and the target is as it was.
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list, "clones after bad input: got %d; want none", len(list))
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs, "images after bad input: got %d; want none", len(imgs))
	require.True(t, alive(srv.pid), "the target after bad input: got it gone; want it alive")
	assert.False(t, reusePortOf(t, srv.pid), "SO_REUSEPORT of the target after bad input: got set; want untouched")
	_, countBody := get(t, "http://"+srv.addr+"/count")
	assert.Equal(t, "0", countBody, "the target's counter: got %s; want 0 (no request reached it)", countBody)
}

func TestBadInputCLI(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t)
	pid := strconv.Itoa(srv.pid)
	zombie := strconv.Itoa(startZombie(t))
	kworker := strconv.Itoa(kernelWorker(t))
	daemonPID := strconv.Itoa(d.cmd.Process.Pid)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains []string // in stderr
	}{
		{"pid negative", []string{"clone", "--", "-5"}, 2, []string{`PID "-5"`, "positive integer"}},
		{"pid zero", []string{"clone", "0"}, 2, []string{`PID "0"`}},
		{"pid a fraction", []string{"clone", "1.5"}, 2, []string{`PID "1.5"`}},
		{"pid overflows", []string{"clone", "99999999999999999999"}, 2, []string{"PID"}},
		{"pid with a space", []string{"clone", " " + pid}, 2, []string{"PID"}},
		{"pid 1", []string{"clone", "1"}, 1, []string{"PID 1", "init"}},
		{"kthreadd", []string{"clone", "2"}, 1, []string{"PID 2", "kernel thread"}},
		{"a kernel worker", []string{"clone", kworker}, 1, []string{"PID " + kworker, "kernel thread"}},
		{"a zombie", []string{"clone", zombie}, 1, []string{"PID " + zombie, "zombie"}},
		{"the daemon", []string{"clone", daemonPID}, 1, []string{"PID " + daemonPID, "clonebotd"}},
		{"no such process", []string{"clone", "2147483647"}, 1, []string{"no process with PID 2147483647", "hint:"}},
		{"name with a slash", []string{"clone", pid, "--name", "a/b"}, 1, []string{"name", "a/b"}},
		{"name going up", []string{"clone", pid, "--name", "../x"}, 1, []string{"name"}},
		{"name with a newline", []string{"clone", pid, "--name", "x\n"}, 1, []string{"name"}},
		{"numa unknown node", []string{"clone", pid, "--numa", "99"}, 1, []string{"99", "hint:"}},
		{"numa negative", []string{"clone", pid, "--numa", "-1"}, 2, []string{"numa"}},
		{"memory-max bad unit", []string{"clone", pid, "--memory-max", "12Q"}, 2, []string{"12Q"}},
		{"pids-max negative", []string{"clone", pid, "--pids-max", "-1"}, 2, []string{"pids-max"}},
		{"operation with a path", []string{"clone", pid, "--operation", "../../x"}, 2, []string{"operation"}},
		{"inspect a malformed ID", []string{"inspect", "xyz"}, 1, []string{`"xyz" is not a clone ID`}},
		{"inspect an ID with a slash", []string{"inspect", "../../etc"}, 1, []string{"not a clone ID"}},
		{"rm an unknown ID", []string{"rm", "0123456789ab"}, 1, []string{"no clone 0123456789ab"}},
		{"rm a malformed ID among good ones", []string{"rm", "xyz", "0123456789ab"}, 1, []string{"xyz", "not a clone ID", "no clone 0123456789ab"}},
		{"events of a malformed operation", []string{"events", "BAD!"}, 2, []string{"operation"}},
		{"events of an unknown operation", []string{"events", "no-such-operation"}, 1, []string{"no operation no-such-operation"}},
		{"takeover with SIGKILL", []string{"takeover", pid, "--drain-signal", "KILL"}, 2, []string{"KILL"}},
		{"takeover probe a file URL", []string{"takeover", pid, "--probe", "file:///etc/passwd"}, 2, []string{"probe"}},
		{"upgrade without --exec", []string{"upgrade", pid}, 2, []string{"--exec"}},
		{"upgrade a missing binary", []string{"upgrade", pid, "--exec", "no/such/server"}, 1, []string{"no/such/server", "does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := d.ctl(tc.args...)
			assert.Equal(t, tc.code, code, "clonebotctl %q: exit code: got %d (%s); want %d", tc.args, code, errOut, tc.code)
			assert.True(t, strings.HasPrefix(errOut, "clonebotctl: "), "stderr: got %q; want it to start with \"clonebotctl: \"", errOut)
			for _, c := range tc.contains {
				assert.Contains(t, errOut, c, "stderr: got %q; want it to say %q", errOut, c)
			}
			requireAnswering(t, d)
		})
	}
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list, "clones after bad input: got %d; want none", len(list))
	assert.False(t, reusePortOf(t, srv.pid), "SO_REUSEPORT of the target: got set; want untouched")
}

// kernelWorker returns the PID of a kernel thread other than kthreadd (a
// child of PID 2).
func kernelWorker(t *testing.T) int {
	t.Helper()
	for _, c := range children(2) {
		if c != 2 {
			return c
		}
	}
	t.Fatal("no kernel thread under kthreadd (PID 2)")
	return 0
}

// TestBusyTarget: while a takeover holds a target, every other operation
// on it gets 409, through the API and the CLI; so does another request
// reusing its operation ID; and the target comes out of it serving.
func TestBusyTarget(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t)
	other := startGoServer(t)
	const op = "hardening-busy-takeover"
	done := make(chan error, 1)
	go func() {
		// A probe that never passes holds the target for ProbeTimeout, then
		// rolls back.
		_, err := d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid, Operation: op},
			Handover: api.Handover{Probe: "http://127.0.0.1:1/", ProbeTimeout: api.Duration(4 * time.Second)}})
		done <- err
	}()
	replacement := waitReplacement(t, d, srv.pid)

	for _, tc := range []struct {
		name, path, body string
		contains         []string
		hint             string
	}{
		{"clone", "/v1/clones", fmt.Sprintf(`{"pid": %d}`, srv.pid), []string{fmt.Sprintf("PID %d", srv.pid), "already the target of a running takeover"}, "wait"},
		{"upgrade", "/v1/upgrades", fmt.Sprintf(`{"pid": %d, "exec": %q}`, srv.pid, bins.goserver), []string{fmt.Sprintf("PID %d", srv.pid), "already the target"}, "wait"},
		{"isolated clone", "/v1/clones", fmt.Sprintf(`{"pid": %d, "isolate_net": true}`, srv.pid), []string{"already the target"}, "wait"},
		{"same operation ID on another target", "/v1/clones", fmt.Sprintf(`{"pid": %d, "operation": %q}`, other.pid, op), []string{op, "already running"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := raw(t, d.sock, http.MethodPost, tc.path, []byte(tc.body))
			assert.Equal(t, 409, r.Status, "status: got %s; want 409", r)
			assert.Equal(t, "conflict", r.Err.Code)
			for _, c := range tc.contains {
				assert.Contains(t, r.Err.Message, c, "message: got %q; want it to say %q", r.Err.Message, c)
			}
			assert.Contains(t, r.Err.Hint, tc.hint, "hint: got %q; want it to say %q", r.Err.Hint, tc.hint)
		})
	}
	t.Run("clonebotctl clone", func(t *testing.T) {
		_, errOut, code := d.ctl("clone", strconv.Itoa(srv.pid))
		assert.Equal(t, 1, code, "exit code: got %d (%s); want 1", code, errOut)
		assert.Contains(t, errOut, "already the target of a running takeover")
		assert.Contains(t, errOut, "hint: wait for it to finish")
	})
	t.Run("rm of the replacement", func(t *testing.T) {
		// The takeover is probing this clone: removing it from under the
		// takeover must be refused like any second operation.
		r := raw(t, d.sock, http.MethodDelete, "/v1/clones/"+replacement.ID, nil)
		assert.Equal(t, 409, r.Status, "DELETE of the clone a running takeover probes: got %s; want 409", r)
	})

	err := <-done
	ae := apiErr(t, err)
	assert.Contains(t, ae.Message, "rolled back", "the takeover with a failing probe: got %q; want it rolled back", ae.Message)
	assert.NotContains(t, ae.Hint, "incomplete", "the takeover's own rollback: got %q (hint %q); want a complete rollback", ae.Message, ae.Hint)
	require.True(t, alive(srv.pid), "the original after the rolled back takeover: got it gone; want it alive")
	code, _ := get(t, "http://"+srv.addr+"/count")
	assert.Equal(t, 200, code, "the original after the rolled back takeover: got status %d; want 200", code)
	assert.False(t, reusePortOf(t, srv.pid), "SO_REUSEPORT of the original after the rollback: got set; want cleared")
	// Once the takeover is over, the target is free again.
	rec := d.clone(t, api.CloneRequest{PID: srv.pid})
	removeAndCheck(t, d, rec)
}

// TestRemoveDuringTakeoverDrain: removing the replacement while a takeover
// drains the original must be refused; otherwise the original is killed at
// the drain timeout with nothing left to serve its port.
func TestRemoveDuringTakeoverDrain(t *testing.T) {
	d := startDaemon(t)
	srv := startGoServer(t, "-ignore-term") // drains only at the timeout
	const op = "hardening-drain-remove"
	done := make(chan error, 1)
	go func() {
		rec, err := d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid, Operation: op},
			Handover: api.Handover{DrainTimeout: api.Duration(3 * time.Second)}})
		if err == nil {
			t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
		}
		done <- err
	}()
	var cloneID string
	followOp(t, d, op, func(ev api.Event) bool {
		if ev.Phase == "drain" && ev.State == api.EventStart {
			cloneID = ev.CloneID
			return true
		}
		return false
	})
	require.NotEmpty(t, cloneID, "no drain phase seen")
	// Well inside the 3 s drain: the original has had its SIGTERM.
	time.Sleep(500 * time.Millisecond)
	r := raw(t, d.sock, http.MethodDelete, "/v1/clones/"+cloneID, nil)
	assert.Equal(t, 409, r.Status, "DELETE of the replacement while the original drains: got %s; want 409", r)
	err := <-done
	t.Logf("takeover: %v", err)
	c, err := net.DialTimeout("tcp", srv.addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	assert.NoError(t, err, "after the takeover something must serve %s: got %v; want a connection", srv.addr, err)
}

// waitReplacement waits until a clone of pid runs (a takeover's
// replacement, being probed).
func waitReplacement(t *testing.T, d *daemon, pid int) api.Clone {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list, err := d.c.ListClones(ctx(t))
		require.NoError(t, err)
		for _, c := range list {
			if c.SourcePID == pid && c.State == api.StateRunning {
				return c
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no clone of PID %d running after 30s", pid)
	return api.Clone{}
}

// followOp follows operation op from its start, calling stop for each
// event until it returns true or the operation ends.
func followOp(t *testing.T, d *daemon, op string, stop func(api.Event) bool) {
	t.Helper()
	errStop := errors.New("stop")
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := d.c.Events(ctx(t), op, func(ev api.Event) error {
			if stop(ev) {
				return errStop
			}
			return nil
		})
		if err == nil || errors.Is(err, errStop) {
			return
		}
		var ae *api.Error
		require.True(t, errors.As(err, &ae) && ae.StatusCode == 404, "follow operation %s: %v", op, err)
		require.True(t, time.Now().Before(deadline), "operation %s did not start within 30s", op)
		time.Sleep(time.Millisecond) // not registered yet
	}
}

// TestTargetExits: a target that exits before it can be frozen is a 404
// saying so, not a server failure, and nothing is left behind.
func TestTargetExits(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)
	cgBefore := clonebotCgroups(st)
	check := func(t *testing.T, pid int, err error) {
		t.Helper()
		ae := apiErr(t, err)
		t.Logf("PID %d: %d %s (%s)", pid, ae.StatusCode, ae.Message, ae.Hint)
		assert.True(t, statusIn(ae.StatusCode, 404, 422), "status: got %d (%s); want 404 (or 422 for a zombie): the target is gone, clonebotd did not fail", ae.StatusCode, ae.Message)
		assert.Contains(t, ae.Message, fmt.Sprintf("PID %d", pid), "message: got %q; want it to name PID %d", ae.Message, pid)
		requireAnswering(t, d)
		list, err := d.c.ListClones(ctx(t))
		require.NoError(t, err)
		assert.Empty(t, list, "clones: got %d; want none", len(list))
		imgs, _ := os.ReadDir(d.img)
		assert.Empty(t, imgs, "images: got %d entries; want none", len(imgs))
		assert.Equal(t, cgBefore, clonebotCgroups(st), "clonebot.slice: got these cgroups; want those before")
		clones, _ := os.ReadDir(filepath.Join(d.state, "clones"))
		assert.Empty(t, clones, "clone records: got %d; want none", len(clones))
	}

	t.Run("killed between preflight and freeze", func(t *testing.T) {
		// The kill lands when preflight reports done: during the
		// preparation (cgroup, SO_REUSEPORT, the namespace's init), before
		// CRIU freezes anything.
		srv := startGoServer(t)
		const op = "hardening-exit-after-preflight"
		done := make(chan error, 1)
		go func() {
			_, err := d.c.CreateClone(context.Background(), api.CloneRequest{PID: srv.pid, Operation: op})
			done <- err
		}()
		var phases []string
		followOp(t, d, op, func(ev api.Event) bool {
			phases = append(phases, ev.Phase+" "+ev.State)
			if ev.Phase == "preflight" && ev.State == api.EventDone {
				require.NoError(t, syscall.Kill(srv.pid, syscall.SIGKILL))
			}
			return false
		})
		t.Logf("phases: %v", phases)
		check(t, srv.pid, <-done)
	})

	t.Run("exits right away", func(t *testing.T) {
		// A process that exits on its own a moment after the request:
		// where it is caught (preflight, preparation, dump) is up to the
		// scheduler, so several lifetimes are tried.
		for _, life := range []string{"0", "0.005", "0.01"} {
			cmd := execCommand("sleep", life)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			require.NoError(t, cmd.Start())
			reaped := make(chan struct{})
			go func() { _ = cmd.Wait(); close(reaped) }()
			rec, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: cmd.Process.Pid})
			<-reaped
			if err == nil {
				// Frozen before it exited: the clone is a copy of that
				// moment (a clone of sleep sleeps on), which is correct too.
				t.Logf("PID %d (sleep %s) was cloned before it exited", cmd.Process.Pid, life)
				_, derr := d.c.DeleteClone(ctx(t), rec.ID)
				require.NoError(t, derr)
				continue
			}
			check(t, cmd.Process.Pid, err)
		}
	})
}
