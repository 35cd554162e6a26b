package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponseBytes is the largest response body the client reads.
const maxResponseBytes = 16 << 20

// errorSnippet is how much of a non-JSON error body an *Error quotes.
const errorSnippet = 200

// Client talks to clonebotd over its unix socket. It holds no deadline of its
// own: every method is bounded by its context. A Client is safe for
// concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for socket ("" means DefaultSocket).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	var d net.Dialer
	tr := &http.Transport{
		// Every request goes to the socket whatever the URL's host says.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket returns the path of the socket the client dials.
func (c *Client) Socket() string { return c.socket }

// CreateClone asks the daemon to clone req.PID and returns the new record.
// It returns when the clone runs or has failed and been undone, which can
// take as long as checkpointing the target's memory.
func (c *Client) CreateClone(ctx context.Context, req CloneRequest) (*Clone, error) {
	var cl Clone
	if err := c.do(ctx, http.MethodPost, "/v1/clones", req, &cl, http.StatusCreated); err != nil {
		return nil, err
	}
	return &cl, nil
}

// ListClones returns every clone the daemon knows, running or exited.
func (c *Client) ListClones(ctx context.Context) ([]Clone, error) {
	var cls []Clone
	if err := c.do(ctx, http.MethodGet, "/v1/clones", nil, &cls, http.StatusOK); err != nil {
		return nil, err
	}
	return cls, nil
}

// GetClone returns the record of clone id.
func (c *Client) GetClone(ctx context.Context, id string) (*Clone, error) {
	p, err := clonePath(id)
	if err != nil {
		return nil, err
	}
	var cl Clone
	if err := c.do(ctx, http.MethodGet, p, nil, &cl, http.StatusOK); err != nil {
		return nil, err
	}
	return &cl, nil
}

// DeleteClone kills clone id, removes its cgroup and returns its final record.
func (c *Client) DeleteClone(ctx context.Context, id string) (*Clone, error) {
	p, err := clonePath(id)
	if err != nil {
		return nil, err
	}
	var cl Clone
	if err := c.do(ctx, http.MethodDelete, p, nil, &cl, http.StatusOK); err != nil {
		return nil, err
	}
	return &cl, nil
}

// Status returns the daemon's view of the host: versions, cgroup, NUMA and
// the features clones depend on.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st, http.StatusOK); err != nil {
		return nil, err
	}
	return &st, nil
}

func clonePath(id string) (string, error) {
	if id == "" {
		return "", errors.New("clone ID is empty")
	}
	return "/v1/clones/" + url.PathEscape(id), nil
}

// do sends in (when not nil) as JSON and decodes a wantStatus answer into out
// (when not nil). Any other status becomes an *Error; a failure to connect
// becomes a *ConnError.
func (c *Client) do(ctx context.Context, method, path string, in, out any, wantStatus int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://clonebotd"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, method, path, err)
	}
	defer resp.Body.Close()

	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return c.transportError(ctx, method, path, err)
	}
	if len(b) > maxResponseBytes {
		return fmt.Errorf("%s %s: response larger than %d MiB", method, path, maxResponseBytes>>20)
	}
	if resp.StatusCode != wantStatus {
		return responseError(resp, b, wantStatus)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// transportError explains a request that got no complete answer.
func (c *Client) transportError(ctx context.Context, method, path string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, c.socket, cerr)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &ConnError{Socket: c.socket, Err: op.Err}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%s %s on %s: %w", method, path, c.socket, err)
}

// responseError maps an unexpected answer to an *Error. It uses the daemon's
// ErrorBody when there is one, and otherwise quotes the start of the body.
func responseError(resp *http.Response, body []byte, wantStatus int) *Error {
	e := &Error{StatusCode: resp.StatusCode}
	var eb ErrorBody
	if resp.StatusCode >= 400 && json.Unmarshal(body, &eb) == nil && eb.Error.Message != "" {
		e.ErrorDetail = eb.Error
		return e
	}
	msg := "clonebotd answered " + resp.Status
	if resp.StatusCode < 400 {
		msg += fmt.Sprintf(", want %d %s", wantStatus, http.StatusText(wantStatus))
	}
	s := strings.TrimSpace(string(body))
	switch {
	case s == "":
		msg += " with an empty body"
	case len(s) > errorSnippet:
		msg += fmt.Sprintf(": %q...", s[:errorSnippet])
	default:
		msg += fmt.Sprintf(": %q", s)
	}
	e.Message = msg
	return e
}

// Error is a failed API call: the daemon's ErrorDetail plus the HTTP status.
type Error struct {
	StatusCode int
	ErrorDetail
}

// Error returns "message (hint)", or only the message when there is no hint.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = fmt.Sprintf("clonebotd answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// ConnError is a failure to connect to clonebotd's socket: the daemon is not
// running, the path is wrong, or the caller may not open it.
type ConnError struct {
	Socket string
	// Err is the dial error, e.g. an *os.SyscallError holding ECONNREFUSED.
	Err error
}

// Message says which socket could not be reached and why.
func (e *ConnError) Message() string {
	return fmt.Sprintf("cannot reach clonebotd at %s: %v", e.Socket, e.Err)
}

// Hint says what to do about it.
func (e *ConnError) Hint() string {
	if errors.Is(e.Err, fs.ErrPermission) {
		return "run as root or as a member of group clonebot"
	}
	return "is clonebotd running? (`make run` or `systemctl start clonebotd`), or set --socket / " + SocketEnv
}

// Error returns the message and the hint, as "message (hint)".
func (e *ConnError) Error() string { return e.Message() + " (" + e.Hint() + ")" }

// Unwrap returns the dial error.
func (e *ConnError) Unwrap() error { return e.Err }
