//go:build linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// soakCycles is how many clone/rm cycles TestSoakCloneRemove runs:
// CLONEBOT_SOAK, default 30 so that make test stays quick (about 10 s here);
// the figure is CLONEBOT_SOAK=200.
func soakCycles(t *testing.T) int {
	t.Helper()
	s := os.Getenv("CLONEBOT_SOAK")
	if s == "" {
		return 30
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "CLONEBOT_SOAK=%q: want a number of cycles", s)
	require.Greater(t, n, 0, "CLONEBOT_SOAK")
	return n
}

// soakWarmup cycles run before the first measurement: the daemon's first
// clones allocate what it keeps for good (the Go heap's first arenas, the
// CRIU probe's result, the slog handlers' buffers).
const soakWarmup = 3

// soakRSSSlackKiB bounds the growth of the daemon's RSS over the soak. The
// daemon keeps, by design, each finished operation's events for 5 minutes
// (at most 256 events of ~200 bytes: ~50 KiB per operation, ~2 KiB for a
// clone's dozen), so 200 cycles hold well under 1 MiB; the rest of the
// slack is the Go runtime, which returns freed heap to the kernel lazily
// (the scavenger) and may grow the heap goal once after a GC. A leak of one
// clone's state per cycle (records, pipes, buffers of CRIU's output) shows
// as megabytes over 200 cycles and fails.
const soakRSSSlackKiB = 12 << 10

// TestSoakCloneRemove clones and removes one target over and over while
// requests flow to it, and checks that nothing accumulates: cgroups,
// mounts, namespaces, images, state, the daemon's fds, memory and
// goroutines; and that the target answered every request made to it.
func TestSoakCloneRemove(t *testing.T) {
	n := soakCycles(t)
	d := startDaemon(t)
	st := status(t, d)
	srv := startGoServer(t)
	base := "http://" + srv.addr
	origNS := nsOf(t, srv.pid, "pid")
	mountsBefore := mountinfo(t)

	// Traffic all along: one keep-alive connection the original holds
	// (established connections stay with it: the clone gets its copy
	// closed), which the original alone must serve, every time; and new
	// connections, which the kernel spreads over the original and the clone.
	tr := newTraffic(t, base, origNS)
	defer tr.stop()

	cycle := func(i int) (id string, pidns string) {
		rec, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid, Name: fmt.Sprintf("soak-%d", i)})
		require.NoError(t, err, "cycle %d: clone", i)
		pidns = nsOf(t, rec.PID, "pid")
		final, err := d.c.DeleteClone(ctx(t), rec.ID)
		require.NoError(t, err, "cycle %d: rm %s", i, rec.ID)
		require.Equal(t, api.StateExited, final.State, "cycle %d: state after rm: got %q; want %q", i, final.State, api.StateExited)
		waitGone(t, rec.PID)
		waitGone(t, rec.InitPID)
		return rec.ID, pidns
	}
	for i := 0; i < soakWarmup; i++ {
		cycle(-i - 1)
	}
	pid := d.cmd.Process.Pid
	before := usageOf(t, pid, d.sock)
	t0 := time.Now()
	ids := map[string]bool{}
	namespaces := map[string]bool{}
	var fdPeak int
	var mid daemonUsage
	for i := 0; i < n; i++ {
		id, ns := cycle(i)
		ids[id] = true
		namespaces[ns] = true
		u := usageOf(t, pid, d.sock)
		fdPeak = max(fdPeak, u.Other())
		if i == n/2-1 {
			mid = u
		}
	}
	wall := time.Since(t0)
	after := usageOf(t, pid, d.sock)
	served := tr.stop()

	t.Logf("soak: %d clone/rm cycles in %v (%.0f ms per cycle) after %d warm-up cycles", n, wall.Round(time.Millisecond), float64(wall.Milliseconds())/float64(n), soakWarmup)
	t.Logf("soak: daemon before: %v", before)
	t.Logf("soak: daemon after:  %v (fds other than API connections after a cycle: at most %d)", after, fdPeak)
	t.Logf("soak: RSS %+d KiB (bound %d KiB): %+d KiB over the first %d cycles, %+d KiB over the last %d", after.RSSKiB-before.RSSKiB, soakRSSSlackKiB,
		mid.RSSKiB-before.RSSKiB, n/2, after.RSSKiB-mid.RSSKiB, n-n/2)
	t.Logf("soak: traffic: %v", served)

	// The daemon's fds and memory.
	assert.Equal(t, before.Other(), after.Other(), "daemon fds other than API connections: got %d after %d cycles; want %d as before", after.Other(), n, before.Other())
	assert.LessOrEqual(t, after.RSSKiB, before.RSSKiB+soakRSSSlackKiB, "daemon RSS: got %d KiB after %d cycles; want at most %d KiB (%d before + %d)", after.RSSKiB, n, before.RSSKiB+soakRSSSlackKiB, before.RSSKiB, soakRSSSlackKiB)

	// Nothing of any clone is left.
	for id := range ids {
		_, err := os.Stat(filepath.Join(st.Cgroup.Mount, "clonebot.slice", id))
		assert.True(t, os.IsNotExist(err), "cgroup clonebot.slice/%s: got %v; want it removed", id, err)
	}
	imgs, _ := os.ReadDir(d.img)
	assert.Empty(t, imgs, "image dir %s: got %d entries; want none", d.img, len(imgs))
	clones, _ := os.ReadDir(filepath.Join(d.state, "clones"))
	assert.Empty(t, clones, "state dir: got %d clone records; want none", len(clones))
	list, err := d.c.ListClones(ctx(t))
	require.NoError(t, err)
	assert.Empty(t, list, "clonebotctl ls: got %d clones; want none", len(list))
	if left := processesIn(namespaces); len(left) > 0 {
		t.Errorf("processes left in the clones' PID namespaces: got %v; want none", left)
	}
	mountsAfter := mountinfo(t)
	for m := range mountsAfter {
		if mountsBefore[m] {
			continue
		}
		mine := strings.Contains(m, d.img) || strings.Contains(m, d.state)
		for ns := range namespaces {
			mine = mine || strings.Contains(m, strings.TrimPrefix(ns, "pid:"))
		}
		for id := range ids {
			mine = mine || strings.Contains(m, id)
		}
		if mine {
			t.Errorf("mount left behind by the soak: got %q; want none", m)
		} else {
			t.Logf("new mount not made by this daemon (another test on the host?): %q", m)
		}
	}

	// The target answered every request made on its own connection, and
	// every request made at all got an answer.
	assert.Zero(t, served.origFailed, "requests on the original's keep-alive connection: got %d failures; want 0 (%v)", served.origFailed, served)
	assert.Zero(t, served.origOther, "requests on the original's keep-alive connection: got %d answered by another process; want 0", served.origOther)
	assert.Greater(t, served.orig, int64(n), "requests on the original's connection: got %d during %d cycles; want more than one per cycle", served.orig, n)
	// rm first steers new connections to the original, lets the clone
	// answer what it had accepted, then kills it: no request is lost.
	assert.Zero(t, served.freshFailed, "requests on new connections: got %d failures; want 0 (%v)", served.freshFailed, served)
	assert.NotZero(t, served.freshByClone, "no request on a new connection was answered by a clone: the soak did not exercise rm under traffic")
	require.True(t, alive(srv.pid), "the target after the soak: got it gone; want it alive")

	// Goroutines: the daemon has no endpoint for its count; SIGQUIT makes
	// the Go runtime print every goroutine and exit. The soaked daemon must
	// hold the same long-lived goroutines as a fresh one after the same
	// warm-up.
	soaked := goroutineDump(t, d)
	fresh := startDaemon(t)
	for i := 0; i < soakWarmup; i++ {
		rec, err := fresh.c.CreateClone(ctx(t), api.CloneRequest{PID: srv.pid})
		require.NoError(t, err)
		_, err = fresh.c.DeleteClone(ctx(t), rec.ID)
		require.NoError(t, err)
		waitGone(t, rec.InitPID)
	}
	baseline := goroutineDump(t, fresh)
	t.Logf("soak: goroutines (without the runtime's and API connections'): %d after %d cycles %v, %d in a fresh daemon after %d", soaked.total(), n+soakWarmup, soaked, baseline.total(), soakWarmup)
	assert.Equal(t, baseline, soaked, "daemon goroutines by creator: got %v after %d cycles; want %v as in a fresh daemon", soaked, n, baseline)
}

// traffic makes requests to a server until stopped.
type traffic struct {
	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup
	res      trafficResult
}

type trafficResult struct {
	orig, origFailed, origOther, origConns int64
	fresh, freshFailed, freshByClone       int64
	firstErr                               string
}

func (r trafficResult) String() string {
	s := fmt.Sprintf("%d requests on the original's keep-alive connection (%d failed, %d answered by another process, %d connection), %d on new connections (%d failed, %d answered by a clone)",
		r.orig, r.origFailed, r.origOther, r.origConns, r.fresh, r.freshFailed, r.freshByClone)
	if r.firstErr != "" {
		s += "; first error: " + r.firstErr
	}
	return s
}

func newTraffic(t *testing.T, base, origNS string) *traffic {
	tr := &traffic{done: make(chan struct{})}
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		if tr.res.firstErr == "" {
			tr.res.firstErr = err.Error()
		}
		mu.Unlock()
	}
	// The original's own connection: one keep-alive connection, opened
	// before the first clone.
	keep := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	var conns atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns.Add(1)
		}
	}}
	whoami := func(c *http.Client, tr bool) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, base+"/whoami", nil)
		if tr {
			req = req.WithContext(httptrace.WithClientTrace(context.Background(), trace))
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET /whoami: status %d", resp.StatusCode)
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return "", fmt.Errorf("GET /whoami: empty answer")
		}
		return f[0], nil
	}
	_, err := whoami(keep, true)
	require.NoError(t, err, "first request to the target")
	tr.wg.Add(2)
	go func() {
		defer tr.wg.Done()
		for {
			select {
			case <-tr.done:
				tr.res.origConns = conns.Load()
				return
			default:
			}
			ns, err := whoami(keep, true)
			tr.res.orig++
			switch {
			case err != nil:
				tr.res.origFailed++
				fail(err)
			case ns != origNS:
				tr.res.origOther++
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	go func() {
		defer tr.wg.Done()
		for {
			select {
			case <-tr.done:
				return
			default:
			}
			ns, err := whoami(fresh, false)
			tr.res.fresh++
			if err != nil {
				tr.res.freshFailed++
				fail(err)
			} else if ns != origNS {
				tr.res.freshByClone++
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return tr
}

// stop ends the traffic and returns what it saw.
func (tr *traffic) stop() trafficResult {
	tr.stopOnce.Do(func() { close(tr.done); tr.wg.Wait() })
	return tr.res
}

// mountinfo returns the host's mounts, one line each without the mount ID
// and parent ID (which a remount changes).
func mountinfo(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	out := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 {
			out[strings.Join(f[2:], " ")] = true
		}
	}
	return out
}

// processesIn returns the processes of the host in one of the PID
// namespaces (as readlink /proc/PID/ns/pid gives them).
func processesIn(namespaces map[string]bool) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && namespaces[l] {
			out = append(out, pid)
		}
	}
	return out
}

// goroutines counts a daemon's goroutines by the function that created
// them, leaving out the Go runtime's own and those serving API
// connections.
type goroutines map[string]int

func (g goroutines) total() int {
	n := 0
	for _, c := range g {
		n += c
	}
	return n
}

// goroutineDump stops d with SIGQUIT (the Go runtime prints every
// goroutine's stack and exits) and parses what it printed.
func goroutineDump(t *testing.T, d *daemon) goroutines {
	t.Helper()
	off := int64(0)
	if fi, err := os.Stat(d.logPath); err == nil {
		off = fi.Size()
	}
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGQUIT))
	d.waitExit(t)
	_ = syscall.Unmount(d.img, syscall.MNT_DETACH)
	f, err := os.Open(d.logPath)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Seek(off, io.SeekStart)
	require.NoError(t, err)
	out := goroutines{}
	var block []string
	flush := func() {
		if len(block) == 0 {
			return
		}
		defer func() { block = nil }()
		head := block[0]
		if strings.HasPrefix(head, "goroutine 0 ") {
			return // the signal's own context
		}
		creator := ""
		serve := false
		for i, l := range block {
			if strings.HasPrefix(l, "created by ") {
				creator = strings.TrimPrefix(l, "created by ")
				if j := strings.Index(creator, " in goroutine"); j > 0 {
					creator = creator[:j]
				}
			}
			if i > 0 && (strings.HasPrefix(l, "net/http.(*conn).serve") || strings.HasPrefix(l, "net/http.(*connReader).backgroundRead")) {
				serve = true
			}
		}
		if serve || creator == "" && !strings.HasPrefix(head, "goroutine 1 ") || strings.HasPrefix(creator, "runtime.") ||
			strings.HasPrefix(creator, "net/http.(*conn).serve") {
			return // the runtime's own, and API connections'
		}
		if creator == "" {
			creator = "main"
		}
		out[creator]++
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inDump := false
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "SIGQUIT") {
			inDump = true
			continue
		}
		if !inDump {
			continue
		}
		if strings.HasPrefix(l, "goroutine ") {
			flush()
			block = []string{l}
			continue
		}
		if block != nil && strings.TrimSpace(l) != "" {
			block = append(block, strings.TrimSpace(l))
		}
	}
	flush()
	require.True(t, inDump, "no goroutine dump in %s after SIGQUIT", d.logPath)
	return out
}
