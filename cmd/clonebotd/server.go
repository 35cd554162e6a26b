package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/clone"
	"github.com/clonebot/clonebot/fault"
)

// service is what the HTTP layer needs of the clone manager.
type service interface {
	Clone(ctx context.Context, req api.CloneRequest, who clone.Caller) (*api.Clone, error)
	List(who clone.Caller) []api.Clone
	Get(id string, who clone.Caller) (api.Clone, error)
	Remove(ctx context.Context, id string, who clone.Caller) (api.Clone, error)
	Status(ctx context.Context) api.Status
	Takeover(ctx context.Context, req api.TakeoverRequest, who clone.Caller) (*api.Clone, error)
	Upgrade(ctx context.Context, req api.UpgradeRequest, who clone.Caller) (*api.Clone, error)
	Events(id string, who clone.Caller) (past []api.Event, next <-chan api.Event, cancel func(), err error)
}

// server maps HTTP requests onto the service. It is a thin layer: decoding,
// access control and the mapping of error kinds to status codes, in one place.
type server struct {
	svc   service
	log   *slog.Logger
	authz authorizer
	// cloneTimeout bounds one clone request.
	cloneTimeout time.Duration
}

// authorizer decides whether a peer may use the API at all.
type authorizer func(ctx context.Context) (clone.Caller, error)

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clones", s.handle(s.createClone))
	mux.HandleFunc("GET /v1/clones", s.handle(s.listClones))
	mux.HandleFunc("GET /v1/clones/{id}", s.handle(s.getClone))
	mux.HandleFunc("DELETE /v1/clones/{id}", s.handle(s.deleteClone))
	mux.HandleFunc("GET /v1/status", s.handle(s.status))
	mux.HandleFunc("POST /v1/takeovers", s.handle(s.takeover))
	mux.HandleFunc("POST /v1/upgrades", s.handle(s.upgrade))
	mux.HandleFunc("GET /v1/operations/{id}/events", s.handle(s.events))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.ErrorDetail{Code: "not_found",
			Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path), Hint: "see the endpoints in the api package's documentation"})
	})
	return mux
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, who clone.Caller) (status int, body any, err error)

func (s *server) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		who, err := s.authz(r.Context())
		var status int
		var body any
		if err == nil {
			status, body, err = h(w, r, who)
		}
		if errors.Is(err, errStreamed) {
			return
		}
		if err != nil {
			status = writeFault(w, err)
			lvl := slog.LevelInfo
			if status >= 500 {
				lvl = slog.LevelWarn
			}
			s.log.Log(r.Context(), lvl, "request failed", "method", r.Method, "path", r.URL.Path, "uid", who.UID, "status", status, "err", err)
			return
		}
		writeJSON(w, status, body)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "uid", who.UID, "status", status, "ms", time.Since(start).Milliseconds())
	}
}

// statusOf maps an error kind to an HTTP status: the one place that does.
func statusOf(k fault.Kind) int {
	switch k {
	case fault.Invalid:
		return http.StatusBadRequest
	case fault.NotFound:
		return http.StatusNotFound
	case fault.Conflict:
		return http.StatusConflict
	case fault.Refused:
		return http.StatusUnprocessableEntity
	case fault.Forbidden:
		return http.StatusForbidden
	case fault.Unavailable:
		return http.StatusServiceUnavailable
	case fault.Timeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

func writeFault(w http.ResponseWriter, err error) int {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, api.ErrorDetail{Code: "payload_too_large",
			Message: fmt.Sprintf("request body over %d bytes", api.MaxBodyBytes)})
		return http.StatusRequestEntityTooLarge
	}
	fe := fault.As(err)
	if fe == nil {
		fe = fault.New(fault.Internal, "internal error", "see clonebotd's log", err)
	}
	msg := fe.Message
	if fe.Err != nil && !strings.Contains(msg, fe.Err.Error()) {
		msg += ": " + fe.Err.Error()
	}
	st := statusOf(fe.Kind)
	writeError(w, st, api.ErrorDetail{Code: fe.Kind.String(), Message: msg, Hint: fe.Hint})
	return st
}

func writeError(w http.ResponseWriter, status int, d api.ErrorDetail) {
	writeJSON(w, status, api.ErrorBody{Error: d})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads one JSON object of at most api.MaxBodyBytes, refusing unknown
// fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return fault.New(fault.Invalid, "empty request body", `send a JSON object such as {"pid": 1234}`, nil)
		}
		return fault.New(fault.Invalid, "malformed request body: "+err.Error(), `send a JSON object such as {"pid": 1234}`, nil)
	}
	// Only white space may follow. (dec.More would let a stray ']' or '}'
	// through: it reports whether an array or object goes on.)
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fault.New(fault.Invalid, "malformed request body: data after the JSON object", "send one JSON object", nil)
	}
	return nil
}

func (s *server) createClone(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	var req api.CloneRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cloneTimeout)
	defer cancel()
	rec, err := s.svc.Clone(ctx, req, who)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, rec, nil
}

func (s *server) takeover(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	var req api.TakeoverRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cloneTimeout+2*time.Hour)
	defer cancel()
	rec, err := s.svc.Takeover(ctx, req, who)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, rec, nil
}

func (s *server) upgrade(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	var req api.UpgradeRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cloneTimeout+2*time.Hour)
	defer cancel()
	rec, err := s.svc.Upgrade(ctx, req, who)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, rec, nil
}

// events streams an operation's events as newline-delimited JSON, from the
// first, until it ends or the client goes away.
func (s *server) events(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	past, next, cancel, err := s.svc.Events(r.PathValue("id"), who)
	if err != nil {
		return 0, nil, err
	}
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	for _, ev := range past {
		_ = enc.Encode(ev)
	}
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case ev, ok := <-next:
			if !ok {
				return 0, nil, errStreamed
			}
			if err := enc.Encode(ev); err != nil {
				return 0, nil, errStreamed
			}
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return 0, nil, errStreamed
		}
	}
}

// errStreamed tells handle that the handler wrote the response itself.
var errStreamed = errors.New("response streamed")

func (s *server) listClones(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	return http.StatusOK, s.svc.List(who), nil
}

func (s *server) getClone(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	rec, err := s.svc.Get(r.PathValue("id"), who)
	return http.StatusOK, rec, err
}

func (s *server) deleteClone(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	rec, err := s.svc.Remove(r.Context(), r.PathValue("id"), who)
	return http.StatusOK, rec, err
}

func (s *server) status(w http.ResponseWriter, r *http.Request, who clone.Caller) (int, any, error) {
	return http.StatusOK, s.svc.Status(r.Context()), nil
}
