package main

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
)

// replace sets *p to v for the rest of the test.
func replace[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// fakeOp is an operation the fake daemon streams the events of.
type fakeOp struct {
	events []api.Event
	gets   int           // GET .../events answered, 404s included
	served chan struct{} // closed once a stream has sent every event
	once   sync.Once
}

// opRegisterDelay is how long the fake daemon takes to register an
// operation a request names, so that the CLI's first tries to follow it
// meet a 404.
const opRegisterDelay = 150 * time.Millisecond

// Bytes the fake checkpoint dumped: "256.3 MiB".
const dumpedBytes = 2563 * (1 << 20) / 10 // 256.3 MiB, rounded down

func cannedEvents(id, kind, last, msg string) []api.Event {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return []api.Event{
		{Time: t0, Operation: id, Kind: kind, Phase: "operation", State: api.EventStart, ElapsedMS: 0.02},
		{Time: t0, Operation: id, Kind: kind, Phase: "checkpoint", State: api.EventDone, ElapsedMS: 210.4,
			Bytes: dumpedBytes, Message: "original frozen 180.2 ms", CloneID: "c-9"},
		{Time: t0, Operation: id, Kind: kind, Phase: "operation", State: last, ElapsedMS: 1234.5, Message: msg, CloneID: "c-9"},
	}
}

// runOp plays the daemon's side of an operation a request named: it
// registers it after opRegisterDelay and, when someone has asked for its
// events meanwhile, waits until they have been streamed (or 2s) before the
// request is answered.
func (d *fakeDaemon) runOp(id, kind string) {
	time.Sleep(opRegisterDelay)
	op := &fakeOp{events: cannedEvents(id, kind, api.EventDone, ""), served: make(chan struct{})}
	d.mu.Lock()
	if old, ok := d.ops[id]; ok {
		op.gets = old.gets
	}
	d.ops[id] = op
	followed := op.gets > 0
	d.mu.Unlock()
	if !followed {
		return
	}
	select {
	case <-op.served:
	case <-time.After(2 * time.Second):
	}
}

// eventGets returns how many times the events of id were asked for.
func (d *fakeDaemon) eventGets(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if op, ok := d.ops[id]; ok {
		return op.gets
	}
	return 0
}

func takeoverInfo() *api.TakeoverInfo {
	return &api.TakeoverInfo{ProbeMS: 412.5, DrainMS: 1503.2, OriginalExit: "exited", DrainSignal: "SIGQUIT",
		RequestsMigrated: 3, ListenerShutdown: true, TotalMS: 2400.1}
}

// opsRoutes adds takeovers, upgrades and operation events to the fake daemon.
func (d *fakeDaemon) opsRoutes(mux *http.ServeMux, reply func(http.ResponseWriter, int, any)) {
	d.ops["done-op-01"] = &fakeOp{events: cannedEvents("done-op-01", "takeover", api.EventDone, ""), served: make(chan struct{})}
	d.ops["fail-op-01"] = &fakeOp{
		events: cannedEvents("fail-op-01", "takeover", api.EventFailed, "probe http://127.0.0.1:8080/: 503 Service Unavailable"),
		served: make(chan struct{}),
	}
	refused := func(w http.ResponseWriter, what string) {
		reply(w, http.StatusUnprocessableEntity, api.ErrorBody{Error: api.ErrorDetail{
			Code: "refused", Message: "cannot " + what + " PID 999: it has no listening socket",
			Hint: "use clonebotctl clone for a process that does not listen",
		}})
	}
	mux.HandleFunc("POST /v1/takeovers", func(w http.ResponseWriter, r *http.Request) {
		var req api.TakeoverRequest
		if !d.decode(w, r, &req) {
			return
		}
		if req.PID == 999 {
			refused(w, "take over")
			return
		}
		if req.Operation != "" {
			d.runOp(req.Operation, "takeover")
		}
		cl := record("c-9", req.PID)
		cl.Kind = api.KindClone
		cl.Takeover = takeoverInfo()
		cl.Operation = cmpOr(req.Operation, "takeover-1a2b3c4d")
		reply(w, http.StatusCreated, cl)
	})
	mux.HandleFunc("POST /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
		var req api.UpgradeRequest
		if !d.decode(w, r, &req) {
			return
		}
		if req.PID == 999 {
			refused(w, "upgrade")
			return
		}
		if req.Operation != "" {
			d.runOp(req.Operation, "upgrade")
		}
		cl := record("c-9", req.PID)
		cl.Kind = api.KindUpgrade
		cl.Takeover = takeoverInfo()
		cl.Operation = cmpOr(req.Operation, "upgrade-1a2b3c4d")
		reply(w, http.StatusCreated, cl)
	})
	mux.HandleFunc("GET /v1/operations/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		d.mu.Lock()
		op, ok := d.ops[id]
		if !ok {
			d.ops[id] = &fakeOp{gets: 1} // not registered yet: no events
		} else {
			op.gets++
		}
		d.mu.Unlock()
		if !ok || op.events == nil {
			reply(w, http.StatusNotFound, api.ErrorBody{Error: api.ErrorDetail{
				Code: "not_found", Message: "no operation " + id, Hint: "operations are kept for 5 minutes after they end",
			}})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		for _, ev := range op.events {
			enc.Encode(ev)
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
		}
		op.once.Do(func() { close(op.served) })
	})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestTakeoverRequest(t *testing.T) {
	d := startDaemon(t)
	for _, tt := range []struct {
		args []string
		want api.TakeoverRequest
	}{
		{[]string{"takeover", "1234"}, api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: 1234, NUMA: api.PlaceSame}}},
		{
			[]string{"takeover", "1234", "--probe", "http://127.0.0.1:8080/healthz", "--probe-timeout", "5s",
				"--drain-signal", "sigquit", "--drain-timeout", "1m30s", "--shutdown-listener",
				"--numa", "spread", "--name", "web-3", "--memory-max", "1G", "--pids-max", "64", "--operation", "deploy-0001"},
			api.TakeoverRequest{
				CloneRequest: api.CloneRequest{PID: 1234, NUMA: api.PlaceSpread, Name: "web-3", MemoryMax: 1 << 30,
					PidsMax: 64, Operation: "deploy-0001"},
				Handover: api.Handover{Probe: "http://127.0.0.1:8080/healthz", ProbeTimeout: api.Duration(5 * time.Second),
					DrainSignal: "QUIT", DrainTimeout: api.Duration(90 * time.Second), ShutdownListener: true},
			},
		},
		{
			[]string{"takeover", "--probe", "TCP", "--drain-signal", "SIGHUP", "--numa", "0", "42"},
			api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: 42, NUMA: "0"}, Handover: api.Handover{Probe: "tcp", DrainSignal: "HUP"}},
		},
		{
			[]string{"takeover", "42", "--probe", "https://example.com:8443/", "--drain-signal", "usr2"},
			api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: 42, NUMA: api.PlaceSame},
				Handover: api.Handover{Probe: "https://example.com:8443/", DrainSignal: "USR2"}},
		},
	} {
		code, _, stderr := runCLI(t, d.sock, tt.args...)
		if code != exitOK {
			t.Fatalf("%v: exit code: got %d; want 0 (stderr %q)", tt.args, code, stderr)
		}
		var got api.TakeoverRequest
		if err := json.Unmarshal(d.lastBody("/v1/takeovers"), &got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("%v: request: got %+v; want %+v", tt.args, got, tt.want)
		}
	}

	// What the user did not set is left to the daemon's defaults.
	runCLI(t, d.sock, "takeover", "1234")
	if got, want := jsonKeys(t, d.lastBody("/v1/takeovers")), []string{"numa", "pid"}; !slices.Equal(got, want) {
		t.Errorf("takeover 1234: request keys: got %v; want %v", got, want)
	}
}

// jsonKeys returns the sorted keys of the JSON object b.
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return slices.Sorted(maps.Keys(m))
}

func TestUpgradeRequest(t *testing.T) {
	d := startDaemon(t)
	rel, err := filepath.Abs("server-v2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want api.UpgradeRequest
		keys []string // of the JSON body
	}{
		{
			// No --: "args" is null, the original's arguments.
			[]string{"upgrade", "1234", "--exec", "/usr/local/bin/server"},
			api.UpgradeRequest{PID: 1234, Exec: "/usr/local/bin/server", NUMA: api.PlaceSame},
			[]string{"args", "exec", "numa", "pid"},
		},
		{
			[]string{"upgrade", "1234", "--exec", "./server-v2", "--", "--port", "8080", "-v"},
			api.UpgradeRequest{PID: 1234, Exec: rel, Args: []string{"--port", "8080", "-v"}, NUMA: api.PlaceSame},
			[]string{"args", "exec", "numa", "pid"},
		},
		{
			// Nothing after --: no arguments at all.
			[]string{"upgrade", "1234", "--exec", "server-v2", "--"},
			api.UpgradeRequest{PID: 1234, Exec: rel, Args: []string{}, NUMA: api.PlaceSame},
			[]string{"args", "exec", "numa", "pid"},
		},
		{
			[]string{"upgrade", "--exec", "/srv", "42", "--env", "A=1", "--env", "B=x,y", "--env", "C=", "--probe",
				"http://[::1]:80/", "--probe-timeout", "30s", "--drain-signal", "WINCH", "--drain-timeout", "5s",
				"--numa", "1", "--name", "v2", "--memory-max", "512M", "--pids-max", "10", "--operation", "upgrade-0001",
				"--", "serve"},
			api.UpgradeRequest{PID: 42, Exec: "/srv", Args: []string{"serve"}, Env: []string{"A=1", "B=x,y", "C="},
				NUMA: "1", Name: "v2", MemoryMax: 512 << 20, PidsMax: 10, Operation: "upgrade-0001",
				Handover: api.Handover{Probe: "http://[::1]:80/", ProbeTimeout: api.Duration(30 * time.Second),
					DrainSignal: "WINCH", DrainTimeout: api.Duration(5 * time.Second)}},
			[]string{"args", "drain_signal", "drain_timeout", "env", "exec", "memory_max", "name", "numa", "operation",
				"pid", "pids_max", "probe", "probe_timeout"},
		},
	} {
		code, _, stderr := runCLI(t, d.sock, tt.args...)
		if code != exitOK {
			t.Fatalf("%v: exit code: got %d; want 0 (stderr %q)", tt.args, code, stderr)
		}
		body := d.lastBody("/v1/upgrades")
		var got api.UpgradeRequest
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v: request: got %+v; want %+v", tt.args, got, tt.want)
		}
		if keys := jsonKeys(t, body); !slices.Equal(keys, tt.keys) {
			t.Errorf("%v: request keys: got %v; want %v", tt.args, keys, tt.keys)
		}
	}
}

func TestOpsUsageErrors(t *testing.T) {
	d := startDaemon(t)
	for _, tt := range []struct {
		args   []string
		stderr []string
	}{
		{[]string{"takeover"}, []string{"missing PID", "Usage: clonebotctl takeover PID [flags]"}},
		{[]string{"takeover", "abc"}, []string{`PID "abc": want a positive integer`}},
		{[]string{"takeover", "1", "2"}, []string{`unexpected argument "2"`}},
		{[]string{"takeover", "1", "--probe", "ftp://host/"}, []string{`"ftp://host/"`, "--probe", `want an http:// or https:// URL, or "tcp"`}},
		{[]string{"takeover", "1", "--probe", "127.0.0.1:8080"}, []string{"--probe"}},
		{[]string{"takeover", "1", "--probe", "http:///path"}, []string{"--probe"}},
		{[]string{"takeover", "1", "--probe", "udp"}, []string{"--probe"}},
		{[]string{"takeover", "1", "--probe-timeout", "0"}, []string{"--probe-timeout", "want a duration > 0"}},
		{[]string{"takeover", "1", "--probe-timeout", "-1s"}, []string{"--probe-timeout", "want a duration > 0"}},
		{[]string{"takeover", "1", "--probe-timeout", "10"}, []string{"--probe-timeout", `"10s"`}},
		{[]string{"takeover", "1", "--probe-timeout", "2h"}, []string{"--probe-timeout", "at most 1h0m0s"}},
		{[]string{"takeover", "1", "--drain-timeout", "0s"}, []string{"--drain-timeout", "want a duration > 0"}},
		{[]string{"takeover", "1", "--drain-timeout", "soon"}, []string{"--drain-timeout"}},
		{[]string{"takeover", "1", "--drain-signal", "KILL"}, []string{`"KILL"`, "--drain-signal", "TERM, QUIT, INT, HUP, USR1, USR2, WINCH"}},
		{[]string{"takeover", "1", "--drain-signal", "SIGSTOP"}, []string{"--drain-signal"}},
		{[]string{"takeover", "1", "--drain-signal", ""}, []string{"--drain-signal"}},
		{[]string{"takeover", "1", "--drain-signal", "15"}, []string{"--drain-signal"}},
		{[]string{"takeover", "1", "--numa", "bogus"}, []string{"--numa"}},
		{[]string{"takeover", "1", "--memory-max", "0"}, []string{"--memory-max"}},
		{[]string{"takeover", "1", "--pids-max", "-1"}, []string{"--pids-max -1"}},
		{[]string{"takeover", "1", "--isolate-net"}, []string{"unknown flag: --isolate-net"}},
		{[]string{"takeover", "1", "--operation", "Deploy-1"}, []string{"--operation", "want 8 to 64 of a-z"}},
		{[]string{"takeover", "1", "--operation", "short"}, []string{"--operation"}},
		{[]string{"takeover", "1", "--operation", "-leading-dash"}, []string{"--operation"}},

		{[]string{"upgrade", "1"}, []string{"missing --exec PATH"}},
		{[]string{"upgrade", "1", "--exec", ""}, []string{"missing --exec PATH"}},
		{[]string{"upgrade", "--exec", "/srv"}, []string{"missing PID", "Usage: clonebotctl upgrade PID --exec PATH [flags] [-- ARGS...]"}},
		{[]string{"upgrade", "--exec", "/srv", "--", "1"}, []string{"missing PID"}},
		{[]string{"upgrade", "x", "--exec", "/srv"}, []string{`PID "x"`}},
		{[]string{"upgrade", "1", "serve", "--exec", "/srv"}, []string{`unexpected argument "serve" after PID (the new binary's arguments go after --)`}},
		{[]string{"upgrade", "1", "serve", "--exec", "/srv", "--", "x"}, []string{`unexpected argument "serve"`}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--shutdown-listener"}, []string{"unknown flag: --shutdown-listener"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--env", "NOEQUALS"}, []string{`"NOEQUALS"`, "--env", "want KEY=VALUE"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--env", "=v"}, []string{"--env", "want KEY=VALUE"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--probe", "file:///x"}, []string{"--probe"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--probe-timeout", "0"}, []string{"--probe-timeout"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--drain-signal", "TERMINATE"}, []string{"--drain-signal"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--drain-timeout", "-5s"}, []string{"--drain-timeout"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--numa", "x"}, []string{"--numa"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--pids-max", "-2"}, []string{"--pids-max -2"}},
		{[]string{"upgrade", "1", "--exec", "/srv", "--isolate-net"}, []string{"unknown flag: --isolate-net"}},

		{[]string{"clone", "1", "--operation", "UPPER-CASE"}, []string{"--operation"}},

		{[]string{"exec"}, []string{"missing ID", "Usage: clonebotctl exec ID -- CMD [ARGS...]"}},
		{[]string{"exec", "c-1"}, []string{"missing command: clonebotctl exec c-1 -- CMD [ARGS...]"}},
		{[]string{"exec", "c-1", "sh"}, []string{`unexpected argument "sh": put the command after --, as in clonebotctl exec c-1 -- sh`}},
		{[]string{"exec", "c-1", "--"}, []string{"missing command after --"}},
		{[]string{"exec", "--", "sh"}, []string{"missing ID"}},
		{[]string{"exec", "c-1", "c-2", "--", "sh"}, []string{`unexpected argument "c-2" after ID, before --`}},
		{[]string{"exec", "c-1", "gdb", "-p", "1"}, []string{"unknown shorthand flag: 'p'"}},

		{[]string{"events"}, []string{"missing OPERATION-ID"}},
		{[]string{"events", "a", "b"}, []string{`unexpected argument "b"`}},
		{[]string{"events", "NOT_AN_ID"}, []string{`operation "NOT_AN_ID": want 8 to 64 of a-z, 0-9 and '-'`}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, d.sock, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code: got %d; want %d\nstdout:\n%s\nstderr:\n%s", code, exitUsage, stdout, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout: got %q; want nothing on a usage error", stdout)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr: got\n%s\nwant it to contain %q", stderr, want)
				}
			}
		})
	}
}

func TestOpsDaemonErrors(t *testing.T) {
	d := startDaemon(t)
	replace(t, &registerWait, 300*time.Millisecond)
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"takeover", "999"}, "clonebotctl: cannot take over PID 999: it has no listening socket\n" +
			"hint: use clonebotctl clone for a process that does not listen\n"},
		{[]string{"upgrade", "999", "--exec", "/srv"}, "clonebotctl: cannot upgrade PID 999: it has no listening socket\n" +
			"hint: use clonebotctl clone for a process that does not listen\n"},
		{[]string{"events", "no-such-op-1"}, "clonebotctl: no operation no-such-op-1\n" +
			"hint: operations are kept for 5 minutes after they end\n"},
	} {
		code, stdout, stderr := runCLI(t, d.sock, tt.args...)
		if code != exitFailed {
			t.Errorf("%v: exit code: got %d; want %d", tt.args, code, exitFailed)
		}
		if stdout != "" {
			t.Errorf("%v: stdout: got %q; want nothing", tt.args, stdout)
		}
		if stderr != tt.stderr {
			t.Errorf("%v: stderr: got %q; want %q", tt.args, stderr, tt.stderr)
		}
	}
	// A daemon that is not there.
	missing := filepath.Join(t.TempDir(), "missing.sock")
	code, _, stderr := runCLI(t, missing, "takeover", "1234")
	if code != exitFailed || !strings.Contains(stderr, "cannot reach clonebotd at "+missing) || !strings.Contains(stderr, "hint: ") {
		t.Errorf("daemon down: got exit %d, stderr %q; want %d, the socket and a hint", code, stderr, exitFailed)
	}
	// The events of an unknown operation were retried before giving up.
	if n := d.eventGets("no-such-op-1"); n < 2 {
		t.Errorf("GET events of an unknown operation: got %d tries; want >= 2", n)
	}
}

func TestHandoverOutput(t *testing.T) {
	d := startDaemon(t)
	for _, args := range [][]string{
		{"takeover", "1234", "--drain-signal", "QUIT"},
		{"upgrade", "1234", "--exec", "/usr/local/bin/server-v2"},
	} {
		code, stdout, stderr := runCLI(t, d.sock, args...)
		if code != exitOK || stderr != "" {
			t.Fatalf("%v: got exit %d, stderr %q; want 0 and nothing", args, code, stderr)
		}
		for _, want := range []string{"id:", "c-9", "kind:", "source_pid:", "1234", "isolated_net:", "operation:",
			"-1a2b3c4d\n", "takeover:\n", "  probe_ms:", "412.5\n", "  drain_ms:", "1503.2\n", "  original_exit:",
			"exited\n", "  drain_signal:", "SIGQUIT\n", "  requests_migrated:", "3\n", "  listener_shutdown:", "yes\n",
			"  total_ms:", "2400.1\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%v: stdout: got\n%s\nwant it to contain %q", args, stdout, want)
			}
		}
		// JSON output is the record, takeover included.
		_, stdout, _ = runCLI(t, d.sock, append(args, "-o", "json")...)
		var cl api.Clone
		if err := json.Unmarshal([]byte(stdout), &cl); err != nil {
			t.Fatalf("%v -o json: %v", args, err)
		}
		if cl.Takeover == nil || *cl.Takeover != *takeoverInfo() {
			t.Errorf("%v -o json: takeover: got %+v; want %+v", args, cl.Takeover, takeoverInfo())
		}
	}
	// A plain clone has no takeover section.
	_, stdout, _ := runCLI(t, d.sock, "clone", "1234")
	if strings.Contains(stdout, "takeover:") {
		t.Errorf("clone: stdout: got\n%s\nwant no takeover section", stdout)
	}
}

func TestExec(t *testing.T) {
	d := startDaemon(t)
	var gotArgv []string
	execs := 0
	replace(t, &lookPath, func(string) (string, error) { return "/usr/bin/nsenter", nil })
	replace(t, &geteuid, func() int { return 0 })
	replace(t, &execve, func(argv0 string, argv, env []string) error {
		execs++
		gotArgv = append([]string{argv0}, argv...)
		return nil
	})

	// c-1's host PID is 41000 (record).
	code, stdout, stderr := runCLI(t, d.sock, "exec", "c-1", "--", "gdb", "-p", "1000", "--batch")
	if code != exitOK || stdout != "" || stderr != "" {
		t.Errorf("exec: got exit %d, stdout %q, stderr %q; want 0 and nothing", code, stdout, stderr)
	}
	want := []string{"/usr/bin/nsenter", // argv0
		"/usr/bin/nsenter", "--target", "41000", "--pid", "--mount", "--net", "--wd=/", "--", "gdb", "-p", "1000", "--batch"}
	if !slices.Equal(gotArgv, want) {
		t.Errorf("exec: argv: got %q; want %q", gotArgv, want)
	}

	for _, tt := range []struct {
		name   string
		args   []string
		setup  func(t *testing.T)
		stderr string
	}{
		{"not running", []string{"exec", "c-3", "--", "sh"}, nil,
			"clonebotctl: clone c-3 is exited: exec needs a running clone\nhint: clonebotctl inspect c-3 shows its state and exit code\n"},
		{"not found", []string{"exec", "c-404", "--", "sh"}, nil,
			"clonebotctl: clone c-404 not found\nhint: clonebotctl ls lists clones\n"},
		{"not root", []string{"exec", "c-1", "--", "sh"}, func(t *testing.T) { replace(t, &geteuid, func() int { return 1000 }) },
			"clonebotctl: exec needs root: entering a clone's namespaces takes CAP_SYS_ADMIN\n" +
				"hint: run it with sudo: sudo clonebotctl exec c-1 -- ...\n"},
		{"no nsenter", []string{"exec", "c-1", "--", "sh"}, func(t *testing.T) {
			replace(t, &lookPath, func(string) (string, error) {
				return "", errors.New(`exec: "nsenter": executable file not found in $PATH`)
			})
		}, "clonebotctl: exec needs nsenter: exec: \"nsenter\": executable file not found in $PATH\nhint: install util-linux\n"},
		{"exec fails", []string{"exec", "c-1", "--", "sh"}, func(t *testing.T) {
			replace(t, &execve, func(string, []string, []string) error { return errors.New("permission denied") })
		}, "clonebotctl: exec /usr/bin/nsenter: permission denied\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			before := execs
			code, stdout, stderr := runCLI(t, d.sock, tt.args...)
			if code != exitFailed {
				t.Errorf("exit code: got %d; want %d", code, exitFailed)
			}
			if stdout != "" {
				t.Errorf("stdout: got %q; want nothing", stdout)
			}
			if stderr != tt.stderr {
				t.Errorf("stderr: got %q; want %q", stderr, tt.stderr)
			}
			if tt.name != "exec fails" && execs != before {
				t.Errorf("execs: got %d; want none", execs-before)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	replace(t, &tailWait, 2*time.Second) // the fake ends its streams: wait for them
	d := startDaemon(t)
	wantLines := []string{
		"  operation   start      0ms\n",
		"  checkpoint  done     0.21s  256.3 MiB  original frozen 180.2 ms\n",
		"  operation   done     1.23s\n",
	}
	for _, args := range [][]string{
		{"clone", "1234"},
		{"takeover", "1234"},
		{"upgrade", "1234", "--exec", "/srv"},
	} {
		path := map[string]string{"clone": "/v1/clones", "takeover": "/v1/takeovers", "upgrade": "/v1/upgrades"}[args[0]]
		env := map[string]string{api.SocketEnv: d.sock, progressEnv: "1"}

		t.Run(args[0]+" forced", func(t *testing.T) {
			code, stdout, stderr := runCLIEnv(t, env, args...)
			if code != exitOK {
				t.Fatalf("exit code: got %d; want 0 (stderr %q)", code, stderr)
			}
			if !strings.Contains(stdout, "id:") {
				t.Errorf("stdout: got %q; want the record", stdout)
			}
			if got, want := stderr, strings.Join(wantLines, ""); got != want {
				t.Errorf("stderr: got\n%s\nwant\n%s", got, want)
			}
			var req struct{ Operation string }
			json.Unmarshal(d.lastBody(path), &req)
			if !strings.HasPrefix(req.Operation, "cli-") || !operationIDRE.MatchString(req.Operation) {
				t.Errorf("operation: got %q; want cli- and 12 hex digits", req.Operation)
			}
			if n := d.eventGets(req.Operation); n < 2 {
				t.Errorf("GET events: got %d tries; want >= 2 (404 while the operation is not registered)", n)
			}
		})
		t.Run(args[0]+" forced with --operation", func(t *testing.T) {
			id := "mine-" + args[0]
			code, _, stderr := runCLIEnv(t, env, append(args, "--operation", id)...)
			if code != exitOK || !strings.Contains(stderr, wantLines[1]) {
				t.Errorf("got exit %d, stderr %q; want 0 and progress", code, stderr)
			}
			var req struct{ Operation string }
			json.Unmarshal(d.lastBody(path), &req)
			if req.Operation != id {
				t.Errorf("operation: got %q; want %q", req.Operation, id)
			}
		})
		for name, env := range map[string]map[string]string{
			"json":           {api.SocketEnv: d.sock, progressEnv: "1"},
			"off":            {api.SocketEnv: d.sock, progressEnv: "0"},
			"not a terminal": {api.SocketEnv: d.sock},
		} {
			t.Run(args[0]+" "+name, func(t *testing.T) {
				a := args
				if name == "json" {
					a = append(slices.Clip(args), "-o", "json")
				}
				code, stdout, stderr := runCLIEnv(t, env, a...)
				if code != exitOK || stdout == "" || stderr != "" {
					t.Errorf("got exit %d, stdout %q, stderr %q; want 0, the record and no progress", code, stdout, stderr)
				}
				var req struct{ Operation string }
				json.Unmarshal(d.lastBody(path), &req)
				if req.Operation != "" {
					t.Errorf("operation: got %q; want none (the daemon picks one)", req.Operation)
				}
			})
		}
	}

	// A request that fails before its operation exists: the error, no
	// progress, and no wait for the follower's retries.
	t.Run("failed request", func(t *testing.T) {
		replace(t, &registerWait, 10*time.Second)
		start := time.Now()
		code, _, stderr := runCLIEnv(t, map[string]string{api.SocketEnv: d.sock, progressEnv: "1"}, "takeover", "999")
		if code != exitFailed {
			t.Errorf("exit code: got %d; want %d", code, exitFailed)
		}
		if want := "clonebotctl: cannot take over PID 999: it has no listening socket\nhint: use clonebotctl clone for a process that does not listen\n"; stderr != want {
			t.Errorf("stderr: got %q; want %q", stderr, want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v; want the follower stopped with the request", d)
		}
	})
}

func TestEventsCmd(t *testing.T) {
	d := startDaemon(t)
	code, stdout, stderr := runCLI(t, d.sock, "events", "done-op-01")
	want := "  operation   start      0ms\n" +
		"  checkpoint  done     0.21s  256.3 MiB  original frozen 180.2 ms\n" +
		"  operation   done     1.23s\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("events: got exit %d, stdout\n%s\nstderr %q; want 0, stdout\n%s\nand nothing on stderr", code, stdout, stderr, want)
	}

	code, stdout, _ = runCLI(t, d.sock, "events", "done-op-01", "-o", "json")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != exitOK || len(lines) != 3 {
		t.Fatalf("events -o json: got exit %d, %d lines:\n%s\nwant 0 and 3 lines", code, len(lines), stdout)
	}
	for i, line := range lines {
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if w := cannedEvents("done-op-01", "takeover", api.EventDone, "")[i]; !reflect.DeepEqual(ev, w) {
			t.Errorf("line %d: got %+v; want %+v", i, ev, w)
		}
	}

	code, stdout, stderr = runCLI(t, d.sock, "events", "fail-op-01")
	if code != exitFailed {
		t.Errorf("events of a failed operation: exit code: got %d; want %d", code, exitFailed)
	}
	if !strings.Contains(stdout, "operation   failed   1.23s  probe http://127.0.0.1:8080/: 503 Service Unavailable\n") {
		t.Errorf("events of a failed operation: stdout: got\n%s\nwant the failure", stdout)
	}
	if want := "clonebotctl: operation fail-op-01 failed: probe http://127.0.0.1:8080/: 503 Service Unavailable\n"; stderr != want {
		t.Errorf("events of a failed operation: stderr: got %q; want %q", stderr, want)
	}
}

func TestFormatEvent(t *testing.T) {
	for _, tt := range []struct {
		ev   api.Event
		want string
	}{
		{api.Event{Phase: "checkpoint", State: "done", ElapsedMS: 210.4, Bytes: dumpedBytes, Message: "original frozen 180.2 ms"},
			"  checkpoint  done     0.21s  256.3 MiB  original frozen 180.2 ms"},
		{api.Event{Phase: "preflight", State: "start", ElapsedMS: 3.4}, "  preflight   start      3ms"},
		{api.Event{Phase: "probe", State: "failed", ElapsedMS: 10012, Message: "no answer"}, "  probe       failed  10.01s  no answer"},
		{api.Event{Phase: "restore", State: "done", ElapsedMS: 99.96, Bytes: 512}, "  restore     done     0.10s  0.0 MiB"},
	} {
		if got := formatEvent(tt.ev); got != tt.want {
			t.Errorf("formatEvent(%+v): got %q; want %q", tt.ev, got, tt.want)
		}
	}
}

func TestNewOperationID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newOperationID()
		if !operationIDRE.MatchString(id) || len(id) != len("cli-")+12 {
			t.Fatalf("newOperationID: got %q; want cli- and 12 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("newOperationID: got %q twice; want random IDs", id)
		}
		seen[id] = true
	}
}

func TestHandoverWait(t *testing.T) {
	for _, tt := range []struct {
		h    api.Handover
		want time.Duration
	}{
		{api.Handover{}, cloneTimeout + 40*time.Second},
		{api.Handover{ProbeTimeout: api.Duration(time.Minute), DrainTimeout: api.Duration(time.Hour)}, cloneTimeout + 61*time.Minute},
	} {
		if got := handoverWait(tt.h); got != tt.want {
			t.Errorf("handoverWait(%+v): got %v; want %v", tt.h, got, tt.want)
		}
	}
}
