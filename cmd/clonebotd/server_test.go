package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/clone"
	"github.com/clonebot/clonebot/fault"
)

// fakeService is a service that records what reaches it and answers with
// err when set, else with a record.
type fakeService struct {
	mu    sync.Mutex
	calls []string
	err   error
	last  any // the last request, decoded
}

func (f *fakeService) call(name string, req any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	f.last = req
	return f.err
}

func (f *fakeService) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

var fakeRecord = api.Clone{ID: "0123456789ab", SourcePID: 42, PID: 4242, State: api.StateRunning}

func (f *fakeService) Clone(_ context.Context, req api.CloneRequest, _ clone.Caller) (*api.Clone, error) {
	if err := f.call("Clone", req); err != nil {
		return nil, err
	}
	rec := fakeRecord
	return &rec, nil
}

func (f *fakeService) List(clone.Caller) []api.Clone {
	_ = f.call("List", nil)
	return []api.Clone{fakeRecord}
}

func (f *fakeService) Get(id string, _ clone.Caller) (api.Clone, error) {
	return fakeRecord, f.call("Get", id)
}

func (f *fakeService) Remove(_ context.Context, id string, _ clone.Caller) (api.Clone, error) {
	return fakeRecord, f.call("Remove", id)
}

func (f *fakeService) Status(context.Context) api.Status {
	_ = f.call("Status", nil)
	return api.Status{Version: "test"}
}

func (f *fakeService) Takeover(_ context.Context, req api.TakeoverRequest, _ clone.Caller) (*api.Clone, error) {
	if err := f.call("Takeover", req); err != nil {
		return nil, err
	}
	rec := fakeRecord
	return &rec, nil
}

func (f *fakeService) Upgrade(_ context.Context, req api.UpgradeRequest, _ clone.Caller) (*api.Clone, error) {
	if err := f.call("Upgrade", req); err != nil {
		return nil, err
	}
	rec := fakeRecord
	return &rec, nil
}

func (f *fakeService) Events(id string, _ clone.Caller) ([]api.Event, <-chan api.Event, func(), error) {
	if err := f.call("Events", id); err != nil {
		return nil, nil, nil, err
	}
	ch := make(chan api.Event)
	close(ch)
	return []api.Event{{Operation: id, Phase: "operation", State: api.EventDone}}, ch, func() {}, nil
}

// allow lets every caller in as root; deny refuses every caller.
func allow(context.Context) (clone.Caller, error) { return clone.RootCaller, nil }

func deny(context.Context) (clone.Caller, error) {
	return clone.Caller{UID: 65534}, fault.New(fault.Forbidden, "uid 65534 is neither root nor a member of group clonebot", "ask root", nil)
}

func newTestServer(svc service, authz authorizer) http.Handler {
	s := &server{svc: svc, log: slog.New(slog.DiscardHandler), authz: authz, cloneTimeout: time.Minute}
	return s.routes()
}

// do serves one request and returns the status and the decoded error, if any.
func do(t testing.TB, h http.Handler, method, path string, body io.Reader) (int, api.ErrorDetail, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	b := rr.Body.Bytes()
	var eb api.ErrorBody
	if rr.Code >= 400 {
		if err := json.Unmarshal(b, &eb); err != nil {
			t.Fatalf("%s %s: error body %q: got %v; want a JSON ErrorBody", method, path, b, err)
		}
		if eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("%s %s: error body %q: got no code or message; want both", method, path, b)
		}
	}
	if ct := rr.Header().Get("Content-Type"); rr.Code != http.StatusOK || !strings.HasPrefix(path, "/v1/operations/") {
		if ct != "application/json" {
			t.Errorf("%s %s: Content-Type: got %q; want application/json", method, path, ct)
		}
	}
	return rr.Code, eb.Error, b
}

// TestDecodeBadBodies: every malformed body is a 400 (or 413) naming what
// is wrong, and never reaches the service.
func TestDecodeBadBodies(t *testing.T) {
	big := `{"pid": 1, "name": "` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
	padded := strings.Repeat(" ", api.MaxBodyBytes) + `{"pid": 1}`
	for _, path := range []string{"/v1/clones", "/v1/takeovers", "/v1/upgrades"} {
		for _, tc := range []struct {
			name, body string
			status     int
			code       string
			contains   string
		}{
			{"empty", "", 400, "invalid_argument", "empty request body"},
			{"white space only", " \n\t", 400, "invalid_argument", "empty request body"},
			{"not JSON", "pid=1", 400, "invalid_argument", "invalid character"},
			{"truncated", `{"pid": 1`, 400, "invalid_argument", "unexpected EOF"},
			{"array", `[1]`, 400, "invalid_argument", "cannot unmarshal array"},
			{"string", `"1"`, 400, "invalid_argument", "cannot unmarshal string"},
			{"number", `1`, 400, "invalid_argument", "cannot unmarshal number"},
			{"pid a string", `{"pid": "abc"}`, 400, "invalid_argument", "pid"},
			{"pid a float", `{"pid": 1.5}`, 400, "invalid_argument", "pid"},
			{"pid an exponent", `{"pid": 1e3}`, 400, "invalid_argument", "pid"},
			{"pid overflows", `{"pid": 99999999999999999999}`, 400, "invalid_argument", "pid"},
			{"pid a bool", `{"pid": true}`, 400, "invalid_argument", "pid"},
			{"pid an object", `{"pid": {}}`, 400, "invalid_argument", "pid"},
			{"unknown field", `{"pid": 1, "bogus": 1}`, 400, "invalid_argument", `unknown field "bogus"`},
			{"numa bogus", `{"pid": 1, "numa": "bogus"}`, 400, "invalid_argument", "numa"},
			{"numa negative", `{"pid": 1, "numa": -1}`, 400, "invalid_argument", "numa"},
			{"numa a bool", `{"pid": 1, "numa": true}`, 400, "invalid_argument", "numa"},
			{"memory_max negative", `{"pid": 1, "memory_max": -1}`, 400, "invalid_argument", "size"},
			{"memory_max bad suffix", `{"pid": 1, "memory_max": "12Q"}`, 400, "invalid_argument", "12Q"},
			{"pids_max a string", `{"pid": 1, "pids_max": "10"}`, 400, "invalid_argument", "pids_max"},
			{"name a number", `{"pid": 1, "name": 5}`, 400, "invalid_argument", "name"},
			{"two objects", `{"pid": 1} {"pid": 2}`, 400, "invalid_argument", "data after the JSON object"},
			{"stray bracket after", `{"pid": 1}]`, 400, "invalid_argument", "data after the JSON object"},
			{"stray brace after", `{"pid": 1}}`, 400, "invalid_argument", "data after the JSON object"},
			{"garbage after", `{"pid": 1}x`, 400, "invalid_argument", "data after the JSON object"},
			{"over 1 MiB", big, 413, "payload_too_large", "over 1048576 bytes"},
			{"over 1 MiB of white space first", padded, 413, "payload_too_large", "over 1048576 bytes"},
		} {
			t.Run(path+"/"+tc.name, func(t *testing.T) {
				svc := &fakeService{}
				st, ed, _ := do(t, newTestServer(svc, allow), http.MethodPost, path, strings.NewReader(tc.body))
				if st != tc.status {
					t.Errorf("status: got %d (%s); want %d", st, ed.Message, tc.status)
				}
				if ed.Code != tc.code {
					t.Errorf("code: got %q; want %q", ed.Code, tc.code)
				}
				if !strings.Contains(ed.Message, tc.contains) {
					t.Errorf("message: got %q; want it to contain %q", ed.Message, tc.contains)
				}
				if calls := svc.Calls(); len(calls) != 0 {
					t.Errorf("service calls: got %v; want none for a bad body", calls)
				}
			})
		}
	}
}

// TestDecodeGoodBodies: bodies at the limits still pass, and what reaches
// the service is what was sent.
func TestDecodeGoodBodies(t *testing.T) {
	pad := api.MaxBodyBytes - len(`{"pid": 7}`) - 1
	for _, tc := range []struct {
		name, path, body string
		want             any
	}{
		{"clone", "/v1/clones", `{"pid": 7, "numa": 1, "name": "web-2", "memory_max": "1G", "pids_max": 10, "isolate_net": true, "operation": "op-12345678"}`,
			api.CloneRequest{PID: 7, NUMA: "1", Name: "web-2", MemoryMax: 1 << 30, PidsMax: 10, IsolateNet: true, Operation: "op-12345678"}},
		{"trailing white space", "/v1/clones", "{\"pid\": 7}\n\n", api.CloneRequest{PID: 7}},
		{"exactly 1 MiB", "/v1/clones", `{"pid": 7}` + strings.Repeat(" ", pad) + "\n", api.CloneRequest{PID: 7}},
		{"null is an empty object", "/v1/clones", `null`, api.CloneRequest{}},
		{"takeover", "/v1/takeovers", `{"pid": 7, "probe": "tcp", "probe_timeout": "5s", "drain_signal": "QUIT", "drain_timeout": 3}`,
			api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: 7}, Handover: api.Handover{Probe: "tcp", ProbeTimeout: api.Duration(5 * time.Second), DrainSignal: "QUIT", DrainTimeout: api.Duration(3 * time.Second)}}},
		{"upgrade", "/v1/upgrades", `{"pid": 7, "exec": "/bin/srv", "args": [], "env": ["A=b"]}`,
			api.UpgradeRequest{PID: 7, Exec: "/bin/srv", Args: []string{}, Env: []string{"A=b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &fakeService{}
			st, ed, _ := do(t, newTestServer(svc, allow), http.MethodPost, tc.path, strings.NewReader(tc.body))
			if st != http.StatusCreated {
				t.Fatalf("status: got %d (%s); want 201", st, ed.Message)
			}
			got, _ := json.Marshal(svc.last)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("request reaching the service: got %s; want %s", got, want)
			}
		})
	}
}

// TestForbiddenEverywhere: a caller the authorizer refuses gets 403 on
// every endpoint, and nothing reaches the service.
func TestForbiddenEverywhere(t *testing.T) {
	for _, ep := range endpoints {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			svc := &fakeService{}
			st, ed, _ := do(t, newTestServer(svc, deny), ep.method, ep.path, strings.NewReader(ep.body))
			if st != http.StatusForbidden || ed.Code != "forbidden" {
				t.Errorf("got %d %q (%s); want 403 \"forbidden\"", st, ed.Code, ed.Message)
			}
			if calls := svc.Calls(); len(calls) != 0 {
				t.Errorf("service calls: got %v; want none for a refused caller", calls)
			}
		})
	}
}

// endpoints are every route of the API with a valid request.
var endpoints = []struct{ method, path, body, call string }{
	{http.MethodPost, "/v1/clones", `{"pid": 7}`, "Clone"},
	{http.MethodGet, "/v1/clones", "", "List"},
	{http.MethodGet, "/v1/clones/0123456789ab", "", "Get"},
	{http.MethodDelete, "/v1/clones/0123456789ab", "", "Remove"},
	{http.MethodGet, "/v1/status", "", "Status"},
	{http.MethodPost, "/v1/takeovers", `{"pid": 7}`, "Takeover"},
	{http.MethodPost, "/v1/upgrades", `{"pid": 7, "exec": "/bin/true"}`, "Upgrade"},
	{http.MethodGet, "/v1/operations/op-12345678/events", "", "Events"},
}

// TestErrorKindsMapToStatus: each kind the service returns maps to its
// status, on every endpoint, with the message, the cause and the hint.
func TestErrorKindsMapToStatus(t *testing.T) {
	kinds := []struct {
		kind   fault.Kind
		status int
	}{
		{fault.Invalid, 400}, {fault.NotFound, 404}, {fault.Conflict, 409}, {fault.Refused, 422},
		{fault.Forbidden, 403}, {fault.Unavailable, 503}, {fault.Timeout, 504}, {fault.Failed, 500}, {fault.Internal, 500},
	}
	for _, ep := range endpoints {
		if ep.call == "List" || ep.call == "Status" {
			continue // they cannot fail
		}
		for _, k := range kinds {
			t.Run(ep.method+" "+ep.path+"/"+k.kind.String(), func(t *testing.T) {
				svc := &fakeService{err: fmt.Errorf("wrapped: %w", fault.New(k.kind, "PID 7 is busy", "wait", errors.New("the cause")))}
				st, ed, _ := do(t, newTestServer(svc, allow), ep.method, ep.path, strings.NewReader(ep.body))
				if st != k.status {
					t.Errorf("status: got %d; want %d", st, k.status)
				}
				if ed.Code != k.kind.String() {
					t.Errorf("code: got %q; want %q", ed.Code, k.kind.String())
				}
				if ed.Message != "PID 7 is busy: the cause" || ed.Hint != "wait" {
					t.Errorf("message and hint: got %q, %q; want %q, %q", ed.Message, ed.Hint, "PID 7 is busy: the cause", "wait")
				}
			})
		}
	}
}

func TestStatusOf(t *testing.T) {
	for k, want := range map[fault.Kind]int{
		fault.Internal: 500, fault.Invalid: 400, fault.NotFound: 404, fault.Conflict: 409, fault.Refused: 422,
		fault.Forbidden: 403, fault.Unavailable: 503, fault.Timeout: 504, fault.Failed: 500, fault.Kind(99): 500,
	} {
		if got := statusOf(k); got != want {
			t.Errorf("statusOf(%v): got %d; want %d", k, got, want)
		}
	}
}

func TestWriteFault(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		body   api.ErrorDetail
	}{
		{"plain error", errors.New("boom"), 500, api.ErrorDetail{Code: "internal", Message: "internal error: boom", Hint: "see clonebotd's log"}},
		{"body too large", &http.MaxBytesError{Limit: api.MaxBodyBytes}, 413, api.ErrorDetail{Code: "payload_too_large", Message: "request body over 1048576 bytes"}},
		{"wrapped body too large", fmt.Errorf("decode: %w", &http.MaxBytesError{Limit: 1}), 413, api.ErrorDetail{Code: "payload_too_large", Message: "request body over 1048576 bytes"}},
		{"cause already in the message", fault.New(fault.Refused, "cannot clone PID 7: no such file", "", errors.New("no such file")), 422,
			api.ErrorDetail{Code: "refused", Message: "cannot clone PID 7: no such file"}},
		{"no cause", fault.New(fault.NotFound, "no clone x", "list them", nil), 404, api.ErrorDetail{Code: "not_found", Message: "no clone x", Hint: "list them"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			if got := writeFault(rr, tc.err); got != tc.status {
				t.Errorf("returned status: got %d; want %d", got, tc.status)
			}
			if rr.Code != tc.status {
				t.Errorf("written status: got %d; want %d", rr.Code, tc.status)
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(rr.Body.Bytes(), &eb); err != nil {
				t.Fatalf("body %q: got %v; want JSON", rr.Body.Bytes(), err)
			}
			if eb.Error != tc.body {
				t.Errorf("body: got %+v; want %+v", eb.Error, tc.body)
			}
		})
	}
}

// TestUnknownRoutes: paths and methods the API lacks get a JSON 404, and
// clone IDs that are not IDs never reach the service unescaped.
func TestUnknownRoutes(t *testing.T) {
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/"},
		{http.MethodGet, "/v1/nope"},
		{http.MethodPut, "/v1/clones"},
		{http.MethodPatch, "/v1/clones/0123456789ab"},
		{http.MethodGet, "/v2/clones"},
		{http.MethodGet, "/v1/clones/0123456789ab/extra"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			svc := &fakeService{}
			st, ed, _ := do(t, newTestServer(svc, allow), tc.method, tc.path, nil)
			if st != http.StatusNotFound || ed.Code != "not_found" {
				t.Errorf("got %d %q; want 404 \"not_found\"", st, ed.Code)
			}
			if !strings.Contains(ed.Message, tc.path) {
				t.Errorf("message: got %q; want it to name %s", ed.Message, tc.path)
			}
			if calls := svc.Calls(); len(calls) != 0 {
				t.Errorf("service calls: got %v; want none", calls)
			}
		})
	}
	// An escaped slash stays inside the ID: the service (which checks IDs)
	// sees "a/b", not a path.
	svc := &fakeService{}
	do(t, newTestServer(svc, allow), http.MethodGet, "/v1/clones/a%2Fb", nil)
	if svc.last != "a/b" {
		t.Errorf("ID reaching the service: got %v; want %q", svc.last, "a/b")
	}
}

// discard is a ResponseWriter that keeps only the status.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// fuzzDecode decodes body into v as the handlers do, and checks that it
// never panics and that every refusal maps to 400 or 413 with a message.
// (The handlers themselves are covered by TestDecodeBadBodies; going
// through net/http for each input would make the fuzzing 10 times slower.)
func fuzzDecode(t *testing.T, body []byte, v any) {
	w := &discard{}
	r := &http.Request{Method: http.MethodPost, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
	err := decode(w, r, v)
	if err == nil {
		return
	}
	st := writeFault(w, err)
	if st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
		t.Fatalf("decode %q: got %v, status %d; want 400 or 413", body, err, st)
	}
	if fe := fault.As(err); fe != nil && fe.Message == "" {
		t.Fatalf("decode %q: got an error without a message; want one saying what is wrong", body)
	}
}

// fuzzSeeds are the table cases' bodies, good and bad.
var fuzzSeeds = []string{
	``, `{}`, `null`, `[1]`, `{"pid": "abc"}`, `{"pid": 1.5}`, `{"pid": -1}`, `{"pid": 1} {"pid": 2}`, `{"pid": 1}]`,
	`{"pid": 1, "bogus": 1}`, `{"pid": 7, "numa": "spread", "name": "a/b"}`, `{"pid": 7, "numa": 1, "memory_max": "512M"}`,
	`{"pid": 7, "numa": "01", "memory_max": 65536, "pids_max": 5, "isolate_net": true, "operation": "op-12345678"}`,
	`{"pid": 7, "probe": "http://127.0.0.1:8080/", "probe_timeout": "10s", "drain_signal": "QUIT", "drain_timeout": 2.5, "shutdown_listener": true}`,
	`{"pid": 7, "exec": "/usr/bin/srv", "args": ["-v", ""], "env": ["A=b", "C="], "numa": "same"}`,
	`{"PID": 7, "Name": "x\n"}`, `{"pid": 7, "probe_timeout": -1}`, `{"pid": 7, "memory_max": "1T"}`,
}

// FuzzDecodeRequests decodes each input as the body of each POST: a
// CloneRequest, a TakeoverRequest and an UpgradeRequest. (One target for
// the three keeps make test's fuzzing budget: most of the code each input
// reaches, encoding/json's, is the same.)
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzDecode(t, body, new(api.CloneRequest))
		fuzzDecode(t, body, new(api.TakeoverRequest))
		fuzzDecode(t, body, new(api.UpgradeRequest))
	})
}
