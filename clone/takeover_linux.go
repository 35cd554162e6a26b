//go:build linux

package clone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/handover"
	"github.com/clonebot/clonebot/internal/atomicfile"
	"github.com/clonebot/clonebot/internal/failpoint"
	"github.com/clonebot/clonebot/proc"
	"golang.org/x/sys/unix"
)

// Handover defaults.
const (
	DefaultProbeTimeout = 10 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	// probePasses is how many checks in a row, each on a new connection,
	// a replacement must pass: with SO_REUSEPORT the kernel spreads new
	// connections over the original and the replacement, so one answer
	// alone may have come from the original.
	probePasses = 6
)

// handoverPlan is a validated api.Handover.
type handoverPlan struct {
	probeURL     *url.URL // nil: TCP connect
	probeTimeout time.Duration
	signal       unix.Signal
	signalName   string
	drainTimeout time.Duration
	shutdown     bool
}

var drainSignals = map[string]unix.Signal{
	"TERM": unix.SIGTERM, "QUIT": unix.SIGQUIT, "INT": unix.SIGINT, "HUP": unix.SIGHUP,
	"USR1": unix.SIGUSR1, "USR2": unix.SIGUSR2, "WINCH": unix.SIGWINCH,
}

func parseHandover(h api.Handover) (*handoverPlan, error) {
	hp := &handoverPlan{probeTimeout: time.Duration(h.ProbeTimeout), drainTimeout: time.Duration(h.DrainTimeout), shutdown: h.ShutdownListener}
	if hp.probeTimeout == 0 {
		hp.probeTimeout = DefaultProbeTimeout
	}
	if hp.drainTimeout == 0 {
		hp.drainTimeout = DefaultDrainTimeout
	}
	if hp.probeTimeout > time.Hour || hp.drainTimeout > time.Hour {
		return nil, fault.New(fault.Invalid, "probe_timeout and drain_timeout must be at most 1h", "", nil)
	}
	switch p := strings.TrimSpace(h.Probe); {
	case p == "" || p == "tcp":
	default:
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fault.New(fault.Invalid, fmt.Sprintf("probe %q: want an http:// or https:// URL, or \"tcp\"", p), "", nil)
		}
		hp.probeURL = u
	}
	name := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(h.DrainSignal)), "SIG"))
	if name == "" {
		name = "TERM"
	}
	sig, ok := drainSignals[name]
	if !ok {
		return nil, fault.New(fault.Invalid, fmt.Sprintf("drain_signal %q: want TERM, QUIT, INT, HUP, USR1, USR2 or WINCH", h.DrainSignal), "", nil)
	}
	hp.signal, hp.signalName = sig, "SIG"+name
	return hp, nil
}

// Takeover clones the target, checks the clone, then drains the original
// so that the clone serves alone. The original is never signalled before
// the clone has passed its probe; if the clone fails it (or dies), the clone
// is removed and the original is left serving exactly as before.
func (m *Manager) Takeover(ctx context.Context, req api.TakeoverRequest, who Caller) (*api.Clone, error) {
	hp, err := parseHandover(req.Handover)
	if err != nil {
		return nil, err
	}
	if err := validate(req.CloneRequest); err != nil {
		return nil, err
	}
	if req.IsolateNet {
		return nil, fault.New(fault.Invalid, "a takeover cannot isolate the clone's network: it must take the original's traffic", "drop isolate_net", nil)
	}
	op, err := m.beginOp(req.Operation, "takeover", who)
	if err != nil {
		return nil, err
	}
	rec, err := m.takeover(ctx, req, hp, who, op)
	m.endOp(op, err)
	return rec, err
}

func (m *Manager) takeover(ctx context.Context, req api.TakeoverRequest, hp *handoverPlan, who Caller, op *operation) (*api.Clone, error) {
	t0 := time.Now()
	release, err := m.claim(req.PID, "takeover")
	if err != nil {
		return nil, err
	}
	defer release()
	listeners, err := m.listenersOf(req.PID, "takeover")
	if err != nil {
		return nil, err
	}
	restoreSysctl, err := m.migrate.acquire()
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := restoreSysctl(); rerr != nil {
			m.log.Error("could not put net.ipv4.tcp_migrate_req back", "err", rerr)
		}
	}()

	rec, err := m.clone(ctx, req.CloneRequest, who, op, true)
	if err != nil {
		return nil, rolledBack(req.PID, err)
	}
	return m.handOver(ctx, rec, req.PID, listeners, hp, op, t0)
}

// rolledBack marks a failure of the clone step of a takeover, which the
// clone pipeline has already undone.
func rolledBack(pid int, err error) error {
	fe := fault.As(err)
	if fe == nil {
		return err
	}
	return &fault.Error{Kind: fe.Kind, Message: fmt.Sprintf("takeover of PID %d rolled back: %s; the original serves as before", pid, fe.Message),
		Hint: fe.Hint, Err: fe.Err}
}

// listenersOf returns the target's listening sockets, refusing a target
// without any.
func (m *Manager) listenersOf(pid int, what string) ([]handover.Socket, error) {
	pids, err := m.opts.Proc.Tree(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fault.New(fault.NotFound, fmt.Sprintf("no process with PID %d", pid), "check the PID with 'ps'", nil)
		}
		return nil, fault.New(fault.Internal, fmt.Sprintf("walk the process tree of PID %d", pid), "", err)
	}
	socks, err := handover.FindSockets(m.opts.Proc, pids)
	if err != nil {
		return nil, fault.New(fault.Internal, fmt.Sprintf("read the sockets of PID %d", pid), "", err)
	}
	var out []handover.Socket
	for _, s := range socks {
		if s.Listening && !s.MPTCP() {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fault.New(fault.Refused, fmt.Sprintf("cannot %s PID %d: it has no listening TCP socket, so there is no traffic to move", what, pid),
			"'clonebotctl clone' copies it without a handover", nil)
	}
	return out, nil
}

// handOver probes the replacement rec, then drains the original. Before the
// original is signalled any failure rolls back: the replacement is removed
// and the original's listeners are put back as they were.
func (m *Manager) handOver(ctx context.Context, rec *api.Clone, origPID int, listeners []handover.Socket, hp *handoverPlan, op *operation, t0 time.Time) (*api.Clone, error) {
	info := &api.TakeoverInfo{DrainSignal: hp.signalName}
	m.setHandover(rec.ID, "probe")
	defer m.setHandover(rec.ID, "")
	tProbe := time.Now()
	err := op.phase("probe", func() error { return m.probe(ctx, rec, listeners, hp) })
	info.ProbeMS = ms(time.Since(tProbe))
	if err != nil {
		return nil, m.rollback(rec, origPID, listeners, err)
	}
	var origTree []int
	if pids, err := m.opts.Proc.Tree(origPID); err == nil {
		origTree = pids
	}
	m.setHandover(rec.ID, "drain")
	err = op.phase("drain", func() error { return m.drain(ctx, rec, origPID, origTree, listeners, hp, info) })
	info.TotalMS = ms(time.Since(t0))
	m.mu.Lock()
	if e, ok := m.clones[rec.ID]; ok {
		e.rec.Takeover = info
		if perr := m.persist(e); perr != nil {
			m.log.Warn("could not record the takeover", "id", rec.ID, "err", perr)
		}
		*rec = e.rec
	}
	m.mu.Unlock()
	if err != nil {
		return rec, err
	}
	m.log.Info("took over", "id", rec.ID, "source_pid", origPID, "pid", rec.PID, "drain_ms", info.DrainMS,
		"original_exit", info.OriginalExit, "migrated", info.RequestsMigrated)
	return rec, nil
}

// setHandover marks (phase != "") or unmarks the clone id as replacing its
// original: Remove refuses it meanwhile.
func (m *Manager) setHandover(id, phase string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.clones[id]; ok {
		e.handover = phase
		e.rollingBack = false
	}
}

// rollback removes the replacement and puts the original's listeners back.
func (m *Manager) rollback(rec *api.Clone, origPID int, listeners []handover.Socket, cause error) error {
	var errs []error
	m.mu.Lock()
	if e, ok := m.clones[rec.ID]; ok {
		e.rollingBack = true
	}
	m.mu.Unlock()
	if _, err := m.Remove(context.Background(), rec.ID, RootCaller); err != nil {
		errs = append(errs, fmt.Errorf("remove the clone %s: %w", rec.ID, err))
	}
	for _, l := range rec.Listeners {
		if !l.ReusePortSet {
			continue
		}
		for _, s := range listeners {
			if s.Inode == l.Inode {
				if err := handover.SetReusePort(s, false); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	msg := fmt.Sprintf("handover from PID %d rolled back: %v; the replacement (PID %d) was removed and the original serves as before", origPID, cause, rec.PID)
	if len(errs) > 0 {
		return fault.New(fault.Failed, msg, "the rollback was incomplete: check the original's listeners", errors.Join(errs...))
	}
	return fault.New(fault.Failed, msg, "check the replacement with a manual clone and its log ("+rec.LogPath+")", nil)
}

// probe waits until the replacement is alive, listens where the original
// listens, and passes the check probePasses times in a row.
func (m *Manager) probe(ctx context.Context, rec *api.Clone, listeners []handover.Socket, hp *handoverPlan) error {
	ctx, cancel := context.WithTimeout(ctx, hp.probeTimeout)
	defer cancel()
	if err := failpoint.Inject("during-handover"); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	passes := 0
	var last error
	for {
		_, err := m.checkReplacement(rec, listeners)
		if err != nil {
			return err // dead or not listening: no point waiting
		}
		err = probeOnce(ctx, client, hp, listeners)
		if err == nil {
			passes++
			if passes >= probePasses {
				return nil
			}
			continue
		}
		passes, last = 0, err
		select {
		case <-ctx.Done():
			what := "a TCP connect to " + listeners[0].Local.String()
			if hp.probeURL != nil {
				what = "GET " + hp.probeURL.String()
			}
			return fmt.Errorf("the replacement did not pass its probe (%s) within %s: %v", what, hp.probeTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkReplacement fails when the replacement died or stopped listening;
// else it returns the replacement's sockets.
func (m *Manager) checkReplacement(rec *api.Clone, listeners []handover.Socket) ([]handover.Socket, error) {
	m.mu.Lock()
	e, ok := m.clones[rec.ID]
	var exited bool
	if ok {
		select {
		case <-e.done:
			exited = true
		default:
		}
	}
	m.mu.Unlock()
	if !ok || exited || !m.opts.Proc.Alive(rec.PID) {
		return nil, fmt.Errorf("the replacement (PID %d) exited", rec.PID)
	}
	pids, err := m.opts.Proc.Tree(rec.PID)
	if err != nil {
		return nil, fmt.Errorf("the replacement (PID %d) exited", rec.PID)
	}
	socks, err := handover.FindSockets(m.opts.Proc, pids)
	if err != nil {
		return nil, fmt.Errorf("read the replacement's sockets: %w", err)
	}
	for _, l := range listeners {
		found := false
		for _, s := range socks {
			if s.Listening && s.Local == l.Local {
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("the replacement (PID %d) does not listen on %s", rec.PID, l.Local)
		}
	}
	return socks, nil
}

func probeOnce(ctx context.Context, client *http.Client, hp *handoverPlan, listeners []handover.Socket) error {
	if hp.probeURL == nil {
		for _, l := range listeners {
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := d.DialContext(dctx, "tcp", dialAddr(l))
			cancel()
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hp.probeURL.String(), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// dialAddr turns a wildcard listener into a loopback address to connect to.
func dialAddr(s handover.Socket) string {
	a := s.Local.Addr()
	if a.IsUnspecified() {
		if a.Is4() {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(s.Local.Port())))
		}
		return net.JoinHostPort("::1", strconv.Itoa(int(s.Local.Port())))
	}
	return s.Local.String()
}

// drain stops the original: optionally its listeners first, then the
// signal, then a bounded wait for it to exit, then SIGKILL.
func (m *Manager) drain(ctx context.Context, rec *api.Clone, origPID int, origTree []int, listeners []handover.Socket, hp *handoverPlan, info *api.TakeoverInfo) error {
	before := migratedRequests()
	defer func() { info.RequestsMigrated = migratedRequests() - before }()
	socks, err := m.checkReplacement(rec, listeners)
	if err != nil {
		return fmt.Errorf("before the drain: %w; the original was not signalled", err)
	}
	pidfd, err := unix.PidfdOpen(origPID, 0)
	if err != nil {
		info.OriginalExit = "exited"
		return nil // it is already gone
	}
	defer unix.Close(pidfd)
	deadline := time.Now().Add(hp.drainTimeout)
	if hp.shutdown {
		if err := shutdownListeners(listeners); err != nil {
			return err
		}
		info.ListenerShutdown = true
		waitConnectionsDone(m.opts.Proc, origTree, listeners, deadline)
	} else {
		unsteer := m.steerAway(rec, origPID, listeners, socks, info)
		defer unsteer()
		_ = failpoint.Inject("during-settle")
		if info.Steered {
			info.SettleMS = ms(settle(m.opts.Proc, origPID, origTree, listeners, min(hp.drainTimeout/2, maxSettle)))
		}
		// The drain timeout is the original's, from the signal on.
		deadline = time.Now().Add(hp.drainTimeout)
	}
	t := time.Now()
	if err := unix.PidfdSendSignal(pidfd, hp.signal, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to PID %d: %w", hp.signalName, origPID, err)
	}
	_ = failpoint.Inject("during-drain")
	exited, replacementDied := false, false
	for !exited && time.Now().Before(deadline) {
		exited = waitPidfd(ctx, pidfd, min(time.Until(deadline), 200*time.Millisecond))
		if exited {
			break
		}
		if _, err := m.checkReplacement(rec, nil); err != nil {
			replacementDied = true
			break
		}
	}
	switch {
	case exited:
		info.OriginalExit = "exited"
	case replacementDied:
		// Killing the original now would leave nothing serving: it keeps
		// draining (or serving, if it ignores the signal) on its own.
		info.OriginalExit = "left running"
	default:
		info.OriginalExit = "killed"
		for _, p := range origTree {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		waitPidfd(context.Background(), pidfd, 10*time.Second)
	}
	info.DrainMS = ms(time.Since(t))
	if _, err := m.checkReplacement(rec, nil); err != nil {
		return fault.New(fault.Failed, fmt.Sprintf("the replacement died during the drain of PID %d: %v", origPID, err),
			"nothing serves the port now: restart the service", nil)
	}
	return nil
}

// maxSettle bounds the wait for the original to read what it accepted
// once new connections go to the replacement.
const maxSettle = time.Second

// steerAway sends every new connection on the original's ports to the
// replacement's listeners (among socks, the replacement's sockets), so
// that none reaches the original while it drains. It returns what puts the kernel's own choice back, to be called
// once the original is gone (or the drain gave up). When steering is not
// possible the drain goes on without, and info says why.
func (m *Manager) steerAway(rec *api.Clone, origPID int, listeners, socks []handover.Socket, info *api.TakeoverInfo) func() {
	// An upgrade that shares the original's very socket cannot be told
	// apart from it: steerFrom finds no listener of its own then.
	undo, err := m.steerFrom(listeners, socks, "the replacement")
	if err != nil {
		info.SteerError = err.Error()
		return undo
	}
	info.Steered = true
	m.log.Debug("new connections go to the replacement alone", "id", rec.ID, "source_pid", origPID)
	return undo
}

// steerFrom steers every new connection to the SO_REUSEPORT groups of the
// listeners from to the listeners of to (whose name, for errors, is
// toName) on the same addresses, apart from from's own. It returns what
// undoes it; on error nothing is left steered.
func (m *Manager) steerFrom(from, to []handover.Socket, toName string) (undo func(), err error) {
	own := map[uint64]bool{}
	for _, l := range from {
		own[l.Inode] = true
	}
	var steered [][]handover.Socket
	undo = func() {
		for _, dst := range steered {
			if err := handover.Unsteer(append(dst, from...)); err != nil {
				m.log.Warn("could not give the kernel back the choice of listener", "addr", dst[0].Local, "err", err)
			}
		}
	}
	done := map[netip.AddrPort]bool{}
	for _, l := range from {
		if done[l.Local] {
			continue
		}
		done[l.Local] = true
		var dst []handover.Socket
		for _, s := range to {
			if s.Listening && s.Local == l.Local && !own[s.Inode] {
				dst = append(dst, s)
			}
		}
		if len(dst) == 0 {
			undo()
			return func() {}, fmt.Errorf("%s has no listener of its own on %s", toName, l.Local)
		}
		if err := handover.Steer(dst); err != nil {
			undo()
			return func() {}, err
		}
		steered = append(steered, dst)
	}
	return undo, nil
}

// settle waits, at most d, until the original tree holds no connection it
// could fail if told to stop now (handover.Unsettled), seen twice in a row.
func settle(pfs proc.FS, origPID int, tree []int, listeners []handover.Socket, d time.Duration) time.Duration {
	t0 := time.Now()
	clean := 0
	for time.Since(t0) < d && clean < 2 {
		n, err := handover.Unsettled(origPID, listeners, socketInodes(pfs, tree))
		if err != nil {
			break
		}
		if n == 0 {
			clean++
		} else {
			clean = 0
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(t0)
}

// socketInodes returns the inodes of the sockets the tree holds.
func socketInodes(pfs proc.FS, tree []int) map[uint64]bool {
	out := map[uint64]bool{}
	for _, pid := range tree {
		fds, err := pfs.FDs(pid)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if fd.Kind == proc.FDSocket {
				out[fd.Inode] = true
			}
		}
	}
	return out
}

// shutdownListeners stops the original's listeners from outside: no new
// connection reaches them, and with tcp_migrate_req the connections queued
// in them move to another listener of their SO_REUSEPORT group.
func shutdownListeners(listeners []handover.Socket) error {
	for _, s := range listeners {
		if err := handover.Shutdown(s); err != nil {
			return fmt.Errorf("stop the original's listener %s: %w", s.Local, err)
		}
	}
	return nil
}

// waitConnectionsDone waits until the tree holds no connection accepted on
// one of the listeners' ports, or the deadline.
func waitConnectionsDone(pfs proc.FS, tree []int, listeners []handover.Socket, deadline time.Time) {
	ports := map[uint16]bool{}
	for _, l := range listeners {
		ports[l.Local.Port()] = true
	}
	for time.Now().Before(deadline) {
		if openConnections(pfs, tree, ports) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openConnections(pfs proc.FS, tree []int, ports map[uint16]bool) int {
	if len(tree) == 0 {
		return 0
	}
	table, err := pfs.NetTCP(tree[0])
	if err != nil {
		return 0
	}
	conns := map[uint64]bool{}
	for _, s := range table {
		if s.State != proc.TCPListen && ports[s.Local.Port()] {
			conns[s.Inode] = true
		}
	}
	n := 0
	for ino := range socketInodes(pfs, tree) {
		if conns[ino] {
			n++
		}
	}
	return n
}

// waitPidfd waits for the process to exit; false on timeout.
func waitPidfd(ctx context.Context, pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return false
		}
		step := min(left, 100*time.Millisecond)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(step.Milliseconds())+1)
		if err == nil && n > 0 {
			return true
		}
	}
}

// migratedRequests reads TCPMigrateReqSuccess from /proc/net/netstat.
func migratedRequests() int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) == 0 || keys[0] != "TcpExt:" || len(keys) != len(vals) {
			continue
		}
		for j, k := range keys {
			if k == "TCPMigrateReqSuccess" {
				n, _ := strconv.ParseInt(vals[j], 10, 64)
				return n
			}
		}
	}
	return 0
}

// sysctlGuard sets a sysctl to want while operations need it and puts the
// previous value back after the last; the previous value is journaled so a
// daemon that dies in between puts it back at start-up. With raiseOnly, a
// current value already >= want (numerically) is left alone.
type sysctlGuard struct {
	mu        sync.Mutex
	n         int
	prev      string
	changed   bool
	path      string // the sysctl file
	want      string
	raiseOnly bool
	journal   string // StateDir/<name>.json
}

const (
	migrateReqPath  = "/proc/sys/net/ipv4/tcp_migrate_req"
	pipeMaxSizePath = "/proc/sys/fs/pipe-max-size"
	// pipeMaxSize is what CRIU's page pipes may grow to during a dump:
	// 64 MiB instead of Linux's 1 MiB default cut the dump of a 1 GiB heap
	// by about 12% here.
	pipeMaxSize = "67108864"
)

type sysctlJournal struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

func (s *sysctlGuard) acquire() (release func() error, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return nil, fault.New(fault.Unavailable, "read "+s.path, "", err)
		}
		s.prev = strings.TrimSpace(string(b))
		s.changed = s.prev != s.want
		if s.raiseOnly {
			cur, err1 := strconv.ParseInt(s.prev, 10, 64)
			want, err2 := strconv.ParseInt(s.want, 10, 64)
			s.changed = err1 == nil && err2 == nil && cur < want
		}
		if s.changed {
			j, _ := json.Marshal(sysctlJournal{Path: s.path, Value: s.prev})
			if err := atomicfile.Write(s.journal, j, 0o600); err != nil {
				return nil, fault.New(fault.Internal, "journal the sysctl change", "", err)
			}
			if err := writeSysctl(s.path, s.want); err != nil {
				os.Remove(s.journal)
				return nil, fault.New(fault.Internal, "set "+s.path+" to "+s.want, "", err)
			}
		}
	}
	s.n++
	var once sync.Once
	return func() (err error) {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.n--
			if s.n == 0 && s.changed {
				if err = writeSysctl(s.path, s.prev); err == nil {
					os.Remove(s.journal)
				}
			}
		})
		return err
	}, nil
}

// recover puts back a value a previous daemon left changed.
func (s *sysctlGuard) recover() error {
	b, err := os.ReadFile(s.journal)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var j sysctlJournal
	if err := json.Unmarshal(b, &j); err != nil || j.Path != s.path {
		return os.Remove(s.journal)
	}
	if err := writeSysctl(s.path, j.Value); err != nil {
		return err
	}
	return os.Remove(s.journal)
}

func writeSysctl(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != v {
		return fmt.Errorf("%s: wrote %s, read back %s", path, v, got)
	}
	return nil
}
