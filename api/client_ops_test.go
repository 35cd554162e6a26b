package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTakeover(t *testing.T) {
	want := TakeoverRequest{
		CloneRequest: CloneRequest{PID: 1234, NUMA: PlaceSpread, Operation: "deploy-0001"},
		Handover: Handover{Probe: "http://127.0.0.1:8080/", ProbeTimeout: Duration(5 * time.Second),
			DrainSignal: "QUIT", DrainTimeout: Duration(time.Minute), ShutdownListener: true},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/takeovers", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// The embedded structs are flattened, durations are strings.
		for _, s := range []string{`"pid":1234`, `"probe_timeout":"5s"`, `"drain_timeout":"1m0s"`, `"shutdown_listener":true`} {
			if !strings.Contains(string(b), s) {
				t.Errorf("body: got %s; want it to contain %s", b, s)
			}
		}
		var got TakeoverRequest
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("decode request: %v", err)
		}
		if got != want {
			t.Errorf("request: got %+v; want %+v", got, want)
		}
		cl := testClone
		cl.Takeover = &TakeoverInfo{ProbeMS: 10, DrainMS: 20, OriginalExit: "exited", DrainSignal: "SIGQUIT", TotalMS: 40}
		writeJSON(w, http.StatusCreated, cl)
	})
	got, err := serve(t, mux).Takeover(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	if got.Takeover == nil || got.Takeover.OriginalExit != "exited" || got.Takeover.DrainSignal != "SIGQUIT" {
		t.Errorf("takeover: got %+v; want exited after SIGQUIT", got.Takeover)
	}
}

func TestUpgrade(t *testing.T) {
	for _, tt := range []struct {
		req  UpgradeRequest
		args string // the raw JSON of "args"
	}{
		{UpgradeRequest{PID: 1, Exec: "/srv", Args: []string{"-v"}, Env: []string{"A=1"}}, `["-v"]`},
		// nil: the original's arguments; empty: none at all.
		{UpgradeRequest{PID: 1, Exec: "/srv"}, `null`},
		{UpgradeRequest{PID: 1, Exec: "/srv", Args: []string{}}, `[]`},
	} {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/upgrades", func(w http.ResponseWriter, r *http.Request) {
			var m map[string]json.RawMessage
			if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
				t.Errorf("decode request: %v", err)
			}
			if got := string(m["args"]); got != tt.args {
				t.Errorf("%+v: args in the body: got %s; want %s", tt.req, got, tt.args)
			}
			cl := testClone
			cl.Kind = KindUpgrade
			writeJSON(w, http.StatusCreated, cl)
		})
		got, err := serve(t, mux).Upgrade(context.Background(), tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != KindUpgrade {
			t.Errorf("kind: got %q; want %q", got.Kind, KindUpgrade)
		}
	}
}

func TestEvents(t *testing.T) {
	evs := []Event{
		{Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Operation: "op-000001", Kind: "clone", Phase: "operation", State: EventStart},
		{Time: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC), Operation: "op-000001", Kind: "clone", Phase: "checkpoint",
			State: EventDone, ElapsedMS: 210, Bytes: 1 << 20, Message: "frozen 180 ms", CloneID: "c-1"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/operations/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "op-000001":
			w.Header().Set("Content-Type", "application/x-ndjson")
			for _, ev := range evs {
				json.NewEncoder(w).Encode(ev)
				w.(http.Flusher).Flush()
			}
		case "bad-line-1":
			io.WriteString(w, "{\"phase\":\"x\"}\nnot json\n")
		default:
			writeJSON(w, http.StatusNotFound, ErrorBody{Error: ErrorDetail{Code: "not_found", Message: "no operation " + r.PathValue("id")}})
		}
	})
	c := serve(t, mux)
	ctx := context.Background()

	var got []Event
	if err := c.Events(ctx, "op-000001", func(ev Event) error { got = append(got, ev); return nil }); err != nil {
		t.Fatalf("Events: %v", err)
	}
	if !reflect.DeepEqual(got, evs) {
		t.Errorf("events: got %+v; want %+v", got, evs)
	}

	stop := errors.New("stop")
	n := 0
	if err := c.Events(ctx, "op-000001", func(Event) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn error: got %v after %d events; want %v after 1", err, n, stop)
	}

	var ae *Error
	if err := c.Events(ctx, "op-404", func(Event) error { return nil }); !errors.As(err, &ae) || ae.Code != "not_found" || ae.StatusCode != 404 {
		t.Errorf("unknown operation: got %v; want a not_found *Error", err)
	}

	n = 0
	if err := c.Events(ctx, "bad-line-1", func(Event) error { n++; return nil }); err == nil || !strings.Contains(err.Error(), "decode event") || n != 1 {
		t.Errorf("bad line: got %v after %d events; want a decode error after 1", err, n)
	}
}
