package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
)

// socketPath returns a path for a unix socket in a fresh temporary directory,
// short enough for sun_path (104 bytes on darwin, 108 on linux).
func socketPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 {
		d, err := os.MkdirTemp("", "cb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	return filepath.Join(dir, "d.sock")
}

func record(id string, pid int) api.Clone {
	return api.Clone{
		ID:                id,
		Name:              "web-2",
		SourcePID:         pid,
		PID:               40000 + pid,
		NSPID:             pid,
		InitPID:           39999 + pid,
		Cgroup:            "/clonebot/" + id,
		NUMANode:          1,
		CPUs:              "8-15",
		Mems:              "1",
		Pinning:           api.PinCgroup,
		NUMALocalFraction: 0.975,
		Freeze:            "cgroup",
		State:             api.StateRunning,
		CreatedAt:         time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		TimingsMS:         api.Timings{Preflight: 1.25, Freeze: 0.5, Checkpoint: 120.3, Restore: 80.1, Place: 2, Total: 204.3},
		FrozenMS:          130.2,
		Listeners: []api.Listener{
			{PID: pid, FD: 3, Addr: "127.0.0.1:8080", ReusePortSet: true},
			{PID: pid, FD: 4, Addr: "[::]:80"},
		},
		LogPath:  "/var/log/clonebot/" + id + ".log",
		Warnings: []string{"stdout was a terminal"},
	}
}

var testStatus = api.Status{
	Version: "0.1.0",
	Kernel:  "6.8.0-31-generic",
	CRIU:    api.CRIUStatus{Path: "/usr/sbin/criu", Version: "3.19", OK: true},
	Cgroup: api.CgroupStatus{
		Mode: "v2", Mount: "/sys/fs/cgroup", Controllers: []string{"cpuset", "memory", "pids"}, Pinning: api.PinCgroup,
	},
	NUMA: []api.NUMANode{
		{ID: 0, CPUs: "0-7", MemTotal: 16 << 30, MemFree: 12 << 30, Clones: 0},
		{ID: 1, CPUs: "8-15", MemTotal: 16 << 30, MemFree: 8 << 30, Clones: 2},
	},
	Capabilities: map[string]bool{"CAP_SYS_ADMIN": true, "CAP_CHECKPOINT_RESTORE": false},
	Features: map[string]api.Feature{
		"pidfd_getfd":  {OK: true},
		"time_ns":      {OK: false, Detail: "kernel 5.6 needed, found 5.4"},
		"cgroup_clone": {OK: false},
	},
	Clones: 2,
}

// fakeDaemon serves canned records on a unix socket, records the last
// CloneRequest it got and the last body posted to each path, and streams
// the events of the operations requests name (see ops_test.go).
type fakeDaemon struct {
	sock string
	mu   sync.Mutex
	req  api.CloneRequest
	body map[string][]byte // path -> last request body
	ops  map[string]*fakeOp
}

func (d *fakeDaemon) lastRequest() api.CloneRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.req
}

// lastBody returns the last body posted to path.
func (d *fakeDaemon) lastBody(path string) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.body[path]
}

func startDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{sock: socketPath(t), body: map[string][]byte{}, ops: map[string]*fakeOp{}}
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	notFound := func(w http.ResponseWriter, id string) {
		reply(w, http.StatusNotFound, api.ErrorBody{Error: api.ErrorDetail{
			Code: "not_found", Message: "clone " + id + " not found", Hint: "clonebotctl ls lists clones",
		}})
	}
	known := map[string]bool{"c-1": true, "c-2": true, "c-3": true}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		var req api.CloneRequest
		if !d.decode(w, r, &req) {
			return
		}
		d.mu.Lock()
		d.req = req
		d.mu.Unlock()
		if req.PID != 999 && req.Operation != "" {
			d.runOp(req.Operation, "clone")
		}
		switch req.PID {
		case 999:
			reply(w, http.StatusUnprocessableEntity, api.ErrorBody{Error: api.ErrorDetail{
				Code: "refused", Message: "process 999 holds a TCP connection CRIU cannot restore twice",
				Hint: "close it or clone a process that only listens",
			}})
		case 777: // never answers in time
			io.Copy(io.Discard, r.Body) // so the server notices the client leave
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case 666:
			http.Error(w, "upstream exploded", http.StatusBadGateway)
		default:
			reply(w, http.StatusCreated, record("c-9", req.PID))
		}
	})
	mux.HandleFunc("GET /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		c2 := record("c-2", 2000)
		c2.Name = ""
		c2.State = api.StateExited
		reply(w, http.StatusOK, []api.Clone{record("c-1", 1000), c2})
	})
	mux.HandleFunc("GET /v1/clones/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !known[id] {
			notFound(w, id)
			return
		}
		cl := record(id, 1000)
		if id == "c-3" {
			cl.State = api.StateExited
		}
		reply(w, http.StatusOK, cl)
	})
	mux.HandleFunc("DELETE /v1/clones/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !known[id] {
			notFound(w, id)
			return
		}
		cl := record(id, 1000)
		cl.State = api.StateExited
		code := -9
		cl.ExitCode = &code
		reply(w, http.StatusOK, cl)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, testStatus)
	})
	d.opsRoutes(mux, reply)

	ln, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return d
}

// decode reads the request body into v and keeps it; on failure it answers
// 400 and returns false.
func (d *fakeDaemon) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: "invalid_argument", Message: err.Error()}})
		return false
	}
	d.mu.Lock()
	d.body[r.URL.Path] = b
	d.mu.Unlock()
	return true
}

// runCLI runs args with $CLONEBOT_SOCKET set to sock.
func runCLI(t *testing.T, sock string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIEnv(t, map[string]string{api.SocketEnv: sock}, args...)
}

// runCLIEnv runs args with the environment env.
func runCLIEnv(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

func TestRun(t *testing.T) {
	d := startDaemon(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string // substrings of stdout
		stderr []string // substrings of stderr
	}{
		// clone
		{"clone", []string{"clone", "1234"}, exitOK,
			[]string{"id:", "c-9", "source_pid:", "1234", "pid:", "41234", "ns_pid:", "cgroup:", "/clonebot/c-9",
				"numa_node:", "cpus:", "8-15", "mems:", "pinning:", "cgroup", "numa_local_fraction:", "97.5%",
				"freeze:", "state:", "running", "exit_code:", "created_at:", "2025-01-02T03:04:05Z",
				"timings_ms:", "preflight 1.2", "checkpoint 120.3", "total 204.3", "frozen_ms:", "130.2",
				"listeners:", "127.0.0.1:8080 (pid 1234, fd 3) (SO_REUSEPORT set by clonebot)", "[::]:80 (pid 1234, fd 4)\n",
				"log_path:", "/var/log/clonebot/c-9.log", "warnings:", "stdout was a terminal"},
			nil},
		{"clone refused", []string{"clone", "999"}, exitFailed, nil,
			[]string{"clonebotctl: process 999 holds a TCP connection CRIU cannot restore twice\n",
				"hint: close it or clone a process that only listens\n"}},
		{"clone non-JSON error", []string{"clone", "666"}, exitFailed, nil,
			[]string{"clonebotctl: clonebotd answered 502 Bad Gateway: \"upstream exploded\"\n"}},
		{"clone timeout", []string{"clone", "777", "--timeout", "100ms"}, exitFailed, nil,
			[]string{"clonebotctl: no answer from clonebotd at " + d.sock + " within 100ms\n", "hint: raise --timeout\n"}},
		{"clone no PID", []string{"clone"}, exitUsage, nil,
			[]string{"clonebotctl: missing PID\n", "Usage: clonebotctl clone PID [flags]\n", "clonebotctl clone --help"}},
		{"clone two PIDs", []string{"clone", "1", "2"}, exitUsage, nil, []string{`unexpected argument "2"`}},
		{"clone PID abc", []string{"clone", "abc"}, exitUsage, nil, []string{`PID "abc": want a positive integer`}},
		{"clone PID -5", []string{"clone", "-5"}, exitUsage, nil, []string{"unknown shorthand flag"}},
		{"clone PID -- -5", []string{"clone", "--", "-5"}, exitUsage, nil, []string{`PID "-5": want a positive integer`}},
		{"clone PID 0", []string{"clone", "0"}, exitUsage, nil, []string{`PID "0"`}},
		{"clone numa bogus", []string{"clone", "1", "--numa", "bogus"}, exitUsage, nil, []string{`"bogus"`, "--numa"}},
		{"clone numa -1", []string{"clone", "1", "--numa=-1"}, exitUsage, nil, []string{"--numa"}},
		{"clone memory-max 12Q", []string{"clone", "1", "--memory-max", "12Q"}, exitUsage, nil, []string{`"12Q"`}},
		{"clone memory-max 0", []string{"clone", "1", "--memory-max", "0"}, exitUsage, nil, []string{"--memory-max"}},
		{"clone pids-max -1", []string{"clone", "1", "--pids-max", "-1"}, exitUsage, nil, []string{"--pids-max -1"}},
		{"clone pids-max x", []string{"clone", "1", "--pids-max", "x"}, exitUsage, nil, []string{"--pids-max"}},
		{"clone precopy maybe", []string{"clone", "1", "--precopy", "maybe"}, exitUsage, nil, []string{`"maybe": want auto, on or off`, "--precopy"}},
		{"clone lazy-pages ON", []string{"clone", "1", "--lazy-pages", "ON"}, exitUsage, nil, []string{"--lazy-pages"}},

		// ls
		{"ls", []string{"ls"}, exitOK,
			[]string{"ID", "NAME", "SOURCE", "PID", "NODE", "PINNING", "STATE", "FROZEN(ms)", "TOTAL(ms)", "AGE",
				"c-1", "web-2", "1000", "41000", "running", "130.2", "204.3", "c-2", "exited"},
			nil},
		{"ls extra arg", []string{"ls", "x"}, exitUsage, nil, []string{`unexpected argument "x"`}},
		{"ls -o yaml", []string{"ls", "-o", "yaml"}, exitUsage, nil, []string{`"yaml"`, "want table or json"}},
		{"ls unknown flag", []string{"ls", "--bogus"}, exitUsage, nil, []string{"unknown flag: --bogus", "clonebotctl ls --help"}},
		{"ls negative timeout", []string{"ls", "--timeout", "-1s"}, exitUsage, nil, []string{"--timeout -1s"}},

		// inspect
		{"inspect", []string{"inspect", "c-1"}, exitOK, []string{"id:", "c-1", "source_pid:", "1000"}, nil},
		{"inspect not found", []string{"inspect", "c-404"}, exitFailed, nil,
			[]string{"clonebotctl: clone c-404 not found\n", "hint: clonebotctl ls lists clones\n"}},
		{"inspect no ID", []string{"inspect"}, exitUsage, nil, []string{"missing ID"}},
		{"inspect two IDs", []string{"inspect", "c-1", "c-2"}, exitUsage, nil, []string{`unexpected argument "c-2"`}},

		// rm
		{"rm", []string{"rm", "c-1", "c-2"}, exitOK, []string{"c-1\nc-2\n"}, nil},
		{"rm partial", []string{"rm", "c-1", "c-404", "c-2"}, exitFailed, []string{"c-1\nc-2\n"},
			[]string{"clonebotctl: c-404: clone c-404 not found\n", "hint: clonebotctl ls lists clones\n"}},
		{"rm no ID", []string{"rm"}, exitUsage, nil, []string{"missing ID"}},

		// status
		{"status", []string{"status"}, exitOK,
			[]string{"daemon:", "0.1.0", "kernel:", "6.8.0-31-generic", "criu:", "3.19 (/usr/sbin/criu): ok",
				"cgroup:", "v2 at /sys/fs/cgroup", "controllers:", "cpuset memory pids", "pinning:",
				"MEM FREE/TOTAL (MiB)", "8192/16384", "12288/16384",
				"CAP_SYS_ADMIN", "yes", "CAP_CHECKPOINT_RESTORE", "no",
				"pidfd_getfd", "ok", "time_ns", "no: kernel 5.6 needed, found 5.4"},
			nil},
		{"status extra arg", []string{"status", "now"}, exitUsage, nil, []string{`unexpected argument "now"`}},

		// the command line itself
		{"no command", nil, exitUsage, nil, []string{"clonebotctl: missing command\n", "clonebotctl --help"}},
		{"unknown command", []string{"bogus"}, exitUsage, nil, []string{`unknown command "bogus"`}},
		{"unknown global flag", []string{"--bogus", "ls"}, exitUsage, nil, []string{"unknown flag: --bogus"}},
		{"help", []string{"--help"}, exitOK, []string{"Usage:", "clone", "takeover", "upgrade", "exec", "events",
			"inspect", "status", "Exit status"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, d.sock, tt.args...)
			if code != tt.code {
				t.Errorf("exit code: got %d; want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout: got\n%s\nwant it to contain %q", stdout, want)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr: got\n%s\nwant it to contain %q", stderr, want)
				}
			}
			if code == exitOK && stderr != "" {
				t.Errorf("stderr: got %q; want nothing on success", stderr)
			}
			if code == exitUsage && stdout != "" {
				t.Errorf("stdout: got %q; want nothing on a usage error", stdout)
			}
		})
	}
}

func TestCloneRequestFlags(t *testing.T) {
	d := startDaemon(t)
	for _, tt := range []struct {
		args []string
		want api.CloneRequest
	}{
		{[]string{"clone", "1234"}, api.CloneRequest{PID: 1234, NUMA: api.PlaceSame}},
		{
			[]string{"clone", "1234", "--numa", "spread", "--name", "web-2", "--memory-max", "1G", "--pids-max", "64"},
			api.CloneRequest{PID: 1234, NUMA: api.PlaceSpread, Name: "web-2", MemoryMax: 1 << 30, PidsMax: 64},
		},
		{[]string{"clone", "--numa", "1", "42"}, api.CloneRequest{PID: 42, NUMA: "1"}},
		{[]string{"clone", "42", "--isolate-net"}, api.CloneRequest{PID: 42, NUMA: api.PlaceSame, IsolateNet: true}},
		{[]string{"clone", "42", "--precopy", "on", "--lazy-pages=off"}, api.CloneRequest{PID: 42, NUMA: api.PlaceSame, Precopy: "on", LazyPages: "off"}},
		{
			[]string{"clone", "42", "--isolate-net", "--name", "dbg", "--operation", "debug-clone-1"},
			api.CloneRequest{PID: 42, NUMA: api.PlaceSame, Name: "dbg", IsolateNet: true, Operation: "debug-clone-1"},
		},
	} {
		if code, _, stderr := runCLI(t, d.sock, tt.args...); code != exitOK {
			t.Fatalf("%v: exit code: got %d; want 0 (stderr %q)", tt.args, code, stderr)
		}
		if got := d.lastRequest(); got != tt.want {
			t.Errorf("%v: request: got %+v; want %+v", tt.args, got, tt.want)
		}
	}
}

func TestJSONOutput(t *testing.T) {
	d := startDaemon(t)
	for _, tt := range []struct {
		args []string
		into any
	}{
		{[]string{"clone", "1234", "-o", "json"}, new(api.Clone)},
		{[]string{"ls", "--output=json"}, new([]api.Clone)},
		{[]string{"-o", "json", "inspect", "c-1"}, new(api.Clone)},
		{[]string{"rm", "c-1", "-o", "json"}, new([]api.Clone)},
		{[]string{"status", "-o", "json"}, new(api.Status)},
	} {
		code, stdout, stderr := runCLI(t, d.sock, tt.args...)
		if code != exitOK {
			t.Fatalf("%v: exit code: got %d; want 0 (stderr %q)", tt.args, code, stderr)
		}
		dec := json.NewDecoder(strings.NewReader(stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(tt.into); err != nil {
			t.Errorf("%v: decode %q: %v", tt.args, stdout, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Errorf("%v: got more than one JSON value in %q", tt.args, stdout)
		}
		if !strings.HasPrefix(stdout, "{\n  ") && !strings.HasPrefix(stdout, "[\n  ") {
			t.Errorf("%v: got %q; want indented JSON", tt.args, stdout)
		}
	}

	// The records come back whole.
	_, stdout, _ := runCLI(t, d.sock, "inspect", "c-1", "-o", "json")
	var got api.Clone
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	want := record("c-1", 1000)
	if got.ID != want.ID || got.NUMALocalFraction != want.NUMALocalFraction || len(got.Listeners) != 2 ||
		got.TimingsMS != want.TimingsMS || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func TestSocketSelection(t *testing.T) {
	d := startDaemon(t)
	missing := filepath.Join(t.TempDir(), "missing.sock")

	// $CLONEBOT_SOCKET is used.
	if code, _, stderr := runCLI(t, d.sock, "status"); code != exitOK {
		t.Errorf("env socket: exit code: got %d; want 0 (stderr %q)", code, stderr)
	}
	// --socket overrides it.
	if code, _, stderr := runCLI(t, missing, "--socket", d.sock, "status"); code != exitOK {
		t.Errorf("--socket over env: exit code: got %d; want 0 (stderr %q)", code, stderr)
	}
	// A daemon that is not there.
	code, stdout, stderr := runCLI(t, d.sock, "ls", "--socket", missing)
	if code != exitFailed {
		t.Errorf("daemon down: exit code: got %d; want %d", code, exitFailed)
	}
	if stdout != "" {
		t.Errorf("daemon down: stdout: got %q; want nothing", stdout)
	}
	want := "clonebotctl: cannot reach clonebotd at " + missing + ": connect: no such file or directory\n" +
		"hint: is clonebotd running? (`make run` or `systemctl start clonebotd`), or set --socket / CLONEBOT_SOCKET\n"
	if stderr != want {
		t.Errorf("daemon down: stderr: got %q; want %q", stderr, want)
	}
	// Without the variable, the default socket is named.
	var out bytes.Buffer
	run([]string{"ls", "--help"}, &out, io.Discard, func(string) string { return "" })
	if !strings.Contains(out.String(), api.DefaultSocket) {
		t.Errorf("ls --help: got\n%s\nwant the default socket %s", out.String(), api.DefaultSocket)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"clone", "takeover", "upgrade", "exec", "events", "ls", "inspect", "rm", "status"} {
		code, stdout, stderr := runCLI(t, "", cmd, "--help")
		if code != exitOK || stderr != "" {
			t.Errorf("%s --help: got exit %d, stderr %q; want 0 and nothing", cmd, code, stderr)
		}
		if !strings.Contains(stdout, "Examples:\n  clonebotctl "+cmd) {
			t.Errorf("%s --help: got\n%s\nwant an example", cmd, stdout)
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		ago  time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{42 * time.Second, "42s"},
		{5*time.Minute + 30*time.Second, "5m"},
		{3 * time.Hour, "3h"},
		{47 * time.Hour, "47h"},
		{72 * time.Hour, "3d"},
	} {
		if got := age(now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("age(%v): got %q; want %q", tt.ago, got, tt.want)
		}
	}
	if got := age(time.Time{}, now); got != "-" {
		t.Errorf("age(zero): got %q; want %q", got, "-")
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{512 << 20, "512M"},
		{2 << 30, "2G"},
		{1536 << 20, "1536M"},
		{1000, "1000"},
	} {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d): got %q; want %q", tt.n, got, tt.want)
		}
	}
}
