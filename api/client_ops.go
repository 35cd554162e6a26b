package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Takeover clones the target and moves its traffic to the clone
// (POST /v1/takeovers -> 201 with the clone's record and its Takeover).
func (c *Client) Takeover(ctx context.Context, req TakeoverRequest) (*Clone, error) {
	var out Clone
	if err := c.do(ctx, http.MethodPost, "/v1/takeovers", req, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// Upgrade starts a new binary on the target's listeners and moves its
// traffic there (POST /v1/upgrades -> 201).
func (c *Client) Upgrade(ctx context.Context, req UpgradeRequest) (*Clone, error) {
	var out Clone
	if err := c.do(ctx, http.MethodPost, "/v1/upgrades", req, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// Events follows operation id (GET /v1/operations/{id}/events): it calls fn
// for each event, from the first, until the operation ends (nil), ctx ends
// (ctx.Err()) or fn returns an error (that error).
func (c *Client) Events(ctx context.Context, id string, fn func(Event) error) error {
	path := "/v1/operations/" + url.PathEscape(id) + "/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://clonebotd"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, http.MethodGet, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return responseError(resp, b, http.StatusOK)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("GET %s: decode event: %w", path, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return c.transportError(ctx, http.MethodGet, path, err)
	}
	return ctx.Err()
}
