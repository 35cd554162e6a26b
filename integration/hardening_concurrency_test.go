//go:build linux

package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConcurrentClonesOfEightTargets: eight clone requests of eight
// different targets, sent at once, all succeed (they are not serialized
// against each other), and each clone is whole.
func TestConcurrentClonesOfEightTargets(t *testing.T) {
	d := startDaemon(t)
	const n = 8
	tgs := make([]*target, n)
	for i := range tgs {
		tgs[i] = startGoServer(t)
	}
	type result struct {
		rec  *api.Clone
		err  error
		took time.Duration
	}
	res := make([]result, n)
	ops := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range tgs {
		ops[i] = fmt.Sprintf("hardening-eight-%d-%d", i, time.Now().UnixNano())
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Generous: 2 cores for 8 dumps and restores.
			c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			<-start
			t0 := time.Now()
			rec, err := d.c.CreateClone(c, api.CloneRequest{PID: tgs[i].pid, Operation: ops[i]})
			res[i] = result{rec, err, time.Since(t0)}
		}(i)
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)

	var totals []string
	for i, r := range res {
		require.NoError(t, r.err, "clone %d of %d (PID %d), sent at once with the others", i+1, n, tgs[i].pid)
		rec := r.rec
		t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
		totals = append(totals, fmt.Sprintf("%.0f/%.0f", rec.TimingsMS.Total, rec.FrozenMS))
	}
	spans := opSpans(t, d, ops, "checkpoint")
	t.Logf("%d concurrent clones of %d targets: wall %v; per clone total/frozen ms: %s; at most %d checkpoints at once",
		n, n, wall.Round(time.Millisecond), strings.Join(totals, " "), maxOverlap(spans))
	ids := map[string]bool{}
	for i, r := range res {
		checkClone(t, d, tgs[i].pid, r.rec)
		assert.False(t, ids[r.rec.ID], "clone IDs must be unique: got %s twice", r.rec.ID)
		ids[r.rec.ID] = true
		assert.Equal(t, map[int]bool{tgs[i].pid: true, r.rec.PID: true}, listenersOn(t, []int{tgs[i].pid, r.rec.PID}, portOf(tgs[i].addr)),
			"clone %s of PID %d must listen on the original's port %s", r.rec.ID, tgs[i].pid, tgs[i].addr)
	}
	for _, r := range res {
		removeAndCheck(t, d, r.rec)
	}
}

// TestConcurrentRequestsOneTarget: requests for one target sent at once
// are refused with 409 while one runs, never interleaved: no two admitted
// operations on the target overlap in time, and a refused one did nothing.
func TestConcurrentRequestsOneTarget(t *testing.T) {
	d := startDaemon(t)
	st := status(t, d)
	srv := startGoServer(t)
	cgBefore := clonebotCgroups(st)
	failProbe := api.Handover{Probe: "http://127.0.0.1:1/", ProbeTimeout: api.Duration(time.Second)}
	type request struct {
		kind string
		send func(ctx context.Context, op string) (*api.Clone, error)
	}
	cloneReq := request{"clone", func(ctx context.Context, op string) (*api.Clone, error) {
		return d.c.CreateClone(ctx, api.CloneRequest{PID: srv.pid, Operation: op})
	}}
	rounds := []struct {
		name string
		reqs []request
	}{
		{"four clones", []request{cloneReq, cloneReq, cloneReq, cloneReq}},
		{"four clones again", []request{cloneReq, cloneReq, cloneReq, cloneReq}},
		{"clone, isolated clone, takeover, upgrade", []request{
			cloneReq,
			{"clone", func(ctx context.Context, op string) (*api.Clone, error) {
				return d.c.CreateClone(ctx, api.CloneRequest{PID: srv.pid, IsolateNet: true, Operation: op})
			}},
			// A takeover and an upgrade whose probe never passes: if
			// admitted, they roll back and leave the original serving.
			{"takeover", func(ctx context.Context, op string) (*api.Clone, error) {
				return d.c.Takeover(ctx, api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid, Operation: op}, Handover: failProbe})
			}},
			{"upgrade", func(ctx context.Context, op string) (*api.Clone, error) {
				return d.c.Upgrade(ctx, api.UpgradeRequest{PID: srv.pid, Exec: bins.goserver, Args: []string{"-activation"}, Operation: op, Handover: failProbe})
			}},
		}},
	}
	var made []*api.Clone
	for r, round := range rounds {
		t.Run(round.name, func(t *testing.T) {
			ops := make([]string, len(round.reqs))
			errs := make([]error, len(round.reqs))
			recs := make([]*api.Clone, len(round.reqs))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, rq := range round.reqs {
				ops[i] = fmt.Sprintf("hardening-one-%d-%d-%d", r, i, time.Now().UnixNano())
				wg.Add(1)
				go func(i int, rq request) {
					defer wg.Done()
					c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					defer cancel()
					<-start
					recs[i], errs[i] = rq.send(c, ops[i])
				}(i, rq)
			}
			close(start)
			wg.Wait()

			spans := opSpans(t, d, ops, "operation")
			var admitted []span
			var outcome []string
			for i, rq := range round.reqs {
				err := errs[i]
				sp := spans[i]
				switch {
				case err == nil:
					require.Equal(t, "clone", rq.kind, "a %s with a failing probe cannot succeed", rq.kind)
					made = append(made, recs[i])
					outcome = append(outcome, rq.kind+": 201")
				default:
					ae := apiErr(t, err)
					outcome = append(outcome, fmt.Sprintf("%s: %d", rq.kind, ae.StatusCode))
					if ae.StatusCode == 409 {
						assert.Contains(t, ae.Message, fmt.Sprintf("PID %d is already the target of a running", srv.pid), "409's message: got %q; want it to name the running operation", ae.Message)
						assert.Equal(t, []string{"operation"}, sp.phases, "a refused %s must do nothing: got phases %v", rq.kind, sp.phases)
						continue
					}
					// Only a handover with its failing probe may fail otherwise.
					require.Contains(t, []string{"takeover", "upgrade"}, rq.kind, "%s: got %d %s; want 201 or 409", rq.kind, ae.StatusCode, ae.Message)
					assert.Contains(t, ae.Message, "rolled back", "%s with a failing probe: got %q; want it rolled back", rq.kind, ae.Message)
				}
				admitted = append(admitted, sp)
			}
			t.Logf("%s: %s", round.name, strings.Join(outcome, ", "))
			require.NotEmpty(t, admitted, "one of the requests must be admitted")
			sort.Slice(admitted, func(i, j int) bool { return admitted[i].start.Before(admitted[j].start) })
			for i := 1; i < len(admitted); i++ {
				assert.False(t, admitted[i].start.Before(admitted[i-1].end),
					"operations %s [%v, %v] and %s [%v, %v] on PID %d overlap: got interleaved; want one after the other",
					admitted[i-1].op, admitted[i-1].start, admitted[i-1].end, admitted[i].op, admitted[i].start, admitted[i].end, srv.pid)
			}
			require.True(t, alive(srv.pid), "the original after the round: got it gone; want it alive")
			code, _ := get(t, "http://"+srv.addr+"/count")
			assert.Equal(t, 200, code, "the original after the round: got status %d; want 200", code)
		})
	}
	for _, rec := range made {
		removeAndCheck(t, d, rec)
	}
	assert.Equal(t, cgBefore, clonebotCgroups(st), "cgroups left behind")
}

// span is when an operation ran, from its events.
type span struct {
	op         string
	start, end time.Time
	phases     []string // distinct phases seen, in order
}

// opSpans reads the events of each finished operation and returns the
// span of phase in each (the whole operation for "operation").
func opSpans(t *testing.T, d *daemon, ops []string, phase string) []span {
	t.Helper()
	out := make([]span, len(ops))
	for i, op := range ops {
		sp := span{op: op}
		seen := map[string]bool{}
		require.NoError(t, d.c.Events(ctx(t), op, func(ev api.Event) error {
			if !seen[ev.Phase] {
				seen[ev.Phase] = true
				sp.phases = append(sp.phases, ev.Phase)
			}
			if ev.Phase == phase {
				if ev.State == api.EventStart {
					sp.start = ev.Time
				} else {
					sp.end = ev.Time
				}
			}
			return nil
		}), "events of operation %s", op)
		out[i] = sp
	}
	return out
}

// maxOverlap returns how many spans run at once at most.
func maxOverlap(spans []span) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, s := range spans {
		if s.start.IsZero() || s.end.IsZero() {
			continue
		}
		es = append(es, edge{s.start, 1}, edge{s.end, -1})
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].at.Equal(es[j].at) {
			return es[i].d < es[j].d
		}
		return es[i].at.Before(es[j].at)
	})
	n, m := 0, 0
	for _, e := range es {
		n += e.d
		m = max(m, n)
	}
	return m
}
