package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// serve runs h on a unix socket and returns a client for it.
func serve(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := socketPath(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return NewClient(sock)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var testClone = Clone{
	ID:        "c-1",
	Name:      "web",
	SourcePID: 1234,
	PID:       5678,
	NSPID:     1234,
	Cgroup:    "/clonebot/c-1",
	NUMANode:  1,
	State:     StateRunning,
	CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	TimingsMS: Timings{Total: 12.5},
}

func TestCreateClone(t *testing.T) {
	want := CloneRequest{PID: 1234, NUMA: "1", Name: "web", MemoryMax: 512 << 20, PidsMax: 100}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type: got %q; want application/json", ct)
		}
		var got CloneRequest
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decode request: %v", err)
		}
		if got != want {
			t.Errorf("request: got %+v; want %+v", got, want)
		}
		writeJSON(w, http.StatusCreated, testClone)
	})
	c := serve(t, mux)
	got, err := c.CreateClone(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != testClone.ID || got.PID != testClone.PID || !got.CreatedAt.Equal(testClone.CreatedAt) {
		t.Errorf("got %+v; want %+v", got, testClone)
	}
}

func TestListClones(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []Clone{testClone, {ID: "c-2", State: StateExited}})
	})
	got, err := serve(t, mux).ListClones(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "c-1" || got[1].ID != "c-2" {
		t.Errorf("got %+v; want clones c-1 and c-2", got)
	}
}

func TestGetClone(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/clones/{id}", func(w http.ResponseWriter, r *http.Request) {
		if got, want := r.URL.EscapedPath(), "/v1/clones/a%2Fb%20c"; got != want {
			t.Errorf("path: got %q; want %q", got, want)
		}
		cl := testClone
		cl.ID = r.PathValue("id")
		writeJSON(w, http.StatusOK, cl)
	})
	c := serve(t, mux)
	got, err := c.GetClone(context.Background(), "a/b c")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "a/b c" {
		t.Errorf("ID: got %q; want %q", got.ID, "a/b c")
	}
	if _, err := c.GetClone(context.Background(), ""); err == nil {
		t.Errorf("GetClone(\"\"): got nil error; want one")
	}
}

func TestDeleteClone(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("DELETE /v1/clones/{id}", func(w http.ResponseWriter, r *http.Request) {
		cl := testClone
		cl.ID = r.PathValue("id")
		cl.State = StateExited
		code := -9
		cl.ExitCode = &code
		writeJSON(w, http.StatusOK, cl)
	})
	got, err := serve(t, mux).DeleteClone(context.Background(), "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "c-1" || got.State != StateExited || got.ExitCode == nil || *got.ExitCode != -9 {
		t.Errorf("got %+v; want c-1 exited with code -9", got)
	}
}

func TestStatus(t *testing.T) {
	want := Status{
		Version: "0.1.0",
		Kernel:  "6.8.0",
		CRIU:    CRIUStatus{Path: "/usr/sbin/criu", Version: "3.19", OK: true},
		NUMA:    []NUMANode{{ID: 0, CPUs: "0-3", MemTotal: 1 << 30, MemFree: 1 << 29}},
		Features: map[string]Feature{
			"pidfd_getfd": {OK: false, Detail: "kernel 5.6 needed"},
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, want)
	})
	got, err := serve(t, mux).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != want.Version || got.CRIU != want.CRIU || len(got.NUMA) != 1 || got.Features["pidfd_getfd"] != want.Features["pidfd_getfd"] {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func TestErrorBody(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/clones/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: ErrorDetail{
			Code: "not_found", Message: "clone c-9 not found", Hint: "list clones with clonebotctl ls",
		}})
	})
	_, err := serve(t, mux).GetClone(context.Background(), "c-9")
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %T %v; want *Error", err, err)
	}
	if ae.StatusCode != http.StatusNotFound || ae.Code != "not_found" {
		t.Errorf("got status %d code %q; want 404 not_found", ae.StatusCode, ae.Code)
	}
	if got, want := err.Error(), "clone c-9 not found (list clones with clonebotctl ls)"; got != want {
		t.Errorf("Error(): got %q; want %q", got, want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{StatusCode: 409, ErrorDetail: ErrorDetail{Message: "busy"}}, "busy"},
		{Error{StatusCode: 409, ErrorDetail: ErrorDetail{Message: "busy", Hint: "wait"}}, "busy (wait)"},
		{Error{StatusCode: 500}, "clonebotd answered 500 Internal Server Error"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q; want %q", got, tt.want)
		}
	}
}

func TestNonJSONErrorBody(t *testing.T) {
	body := "<html>" + strings.Repeat("x", 300) + "</html>"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, body, http.StatusBadGateway)
	})
	mux.HandleFunc("GET /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	c := serve(t, mux)

	_, err := c.Status(context.Background())
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %T %v; want *Error", err, err)
	}
	if ae.StatusCode != http.StatusBadGateway {
		t.Errorf("StatusCode: got %d; want %d", ae.StatusCode, http.StatusBadGateway)
	}
	msg := err.Error()
	if !strings.Contains(msg, "502 Bad Gateway") || !strings.Contains(msg, body[:200]) || strings.Contains(msg, body[:201]) {
		t.Errorf("got %q; want the status and the first 200 bytes of the body", msg)
	}

	_, err = c.ListClones(context.Background())
	if got, want := err.Error(), "clonebotd answered 503 Service Unavailable with an empty body"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestUnexpectedStatus(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, testClone)
	})
	_, err := serve(t, mux).CreateClone(context.Background(), CloneRequest{PID: 1})
	if err == nil || !strings.Contains(err.Error(), "200 OK, want 201 Created") {
		t.Errorf("got %v; want an error naming 200 and 201", err)
	}
}

func TestBadJSONResponse(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("{not json"))
	})
	_, err := serve(t, mux).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "decode response") {
		t.Errorf("got %v; want a decode error", err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("["))
		w.Write([]byte(strings.Repeat(" ", maxResponseBytes)))
		w.Write([]byte("]"))
	})
	_, err := serve(t, mux).ListClones(context.Background())
	if err == nil || !strings.Contains(err.Error(), "larger than 16 MiB") {
		t.Errorf("got %v; want a size error", err)
	}
}

func TestMissingSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nope.sock")
	_, err := NewClient(sock).Status(context.Background())
	var ce *ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("got %T %v; want *ConnError", err, err)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("got %v; want it to wrap ENOENT", err)
	}
	msg := err.Error()
	for _, want := range []string{"cannot reach clonebotd at " + sock + ": ", "is clonebotd running?", "--socket", SocketEnv} {
		if !strings.Contains(msg, want) {
			t.Errorf("got %q; want it to contain %q", msg, want)
		}
	}
}

func TestRefusedSocket(t *testing.T) {
	sock := socketPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file: connect gets ECONNREFUSED
	_, err = NewClient(sock).ListClones(context.Background())
	var ce *ConnError
	if !errors.As(err, &ce) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("got %T %v; want *ConnError wrapping ECONNREFUSED", err, err)
	}
	if !strings.Contains(ce.Hint(), "is clonebotd running?") {
		t.Errorf("Hint(): got %q; want it to ask whether clonebotd runs", ce.Hint())
	}
}

func TestConnErrorPermissionHint(t *testing.T) {
	e := &ConnError{Socket: DefaultSocket, Err: &os.SyscallError{Syscall: "connect", Err: syscall.EACCES}}
	if got, want := e.Hint(), "run as root or as a member of group clonebot"; got != want {
		t.Errorf("Hint(): got %q; want %q", got, want)
	}
	if got, want := e.Message(), "cannot reach clonebotd at "+DefaultSocket+": connect: permission denied"; got != want {
		t.Errorf("Message(): got %q; want %q", got, want)
	}
}

func TestContextDeadline(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clones", func(w http.ResponseWriter, r *http.Request) {
		// The server notices a closed connection only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := serve(t, mux).CreateClone(ctx, CloneRequest{PID: 1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v; want context.DeadlineExceeded", err)
	}
}

func TestNewClientDefaultSocket(t *testing.T) {
	if got := NewClient("").Socket(); got != DefaultSocket {
		t.Errorf("got %q; want %q", got, DefaultSocket)
	}
}
