//go:build linux

// clonebotd is the clonebot daemon: it live-clones running processes with
// CRIU into NUMA-pinned cgroup v2 slices and serves an HTTP/JSON API on a
// unix socket. It must run as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/clonebot/clonebot/activation"
	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/clone"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/journal"
	"github.com/clonebot/clonebot/nsinit"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// SocketGroup may use the API (for its members' own processes).
const SocketGroup = "clonebot"

func main() {
	// The daemon's binary is also each clone's namespace init and the shim
	// that starts upgraded processes.
	if nsinit.IsInit() {
		nsinit.Main()
		return
	}
	if activation.IsShim() {
		activation.ShimMain()
		return
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

type config struct {
	socket, stateDir, imageDir, criuPath string
	journalSocket                        string
	logLevel, logFormat                  string
	criuLogLevel                         int
	cloneTimeout                         time.Duration
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("clonebotd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.socket, "socket", api.DefaultSocket, "unix socket to serve the API on (mode 0660, group "+SocketGroup+")")
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/clonebot", "clone records and CRIU logs (mode 0700)")
	fs.StringVar(&c.imageDir, "image-dir", "/run/clonebot/images", "checkpoint images while a clone is made; a private tmpfs (huge=within_size) is mounted here unless one already is")
	fs.StringVar(&c.criuPath, "criu", "", "criu binary (default: criu on PATH)")
	fs.StringVar(&c.journalSocket, "journal-socket", journal.DefaultStdoutSocket, "journald's stdout stream socket: a target's streams to it (a systemd service's\nstdout and stderr) become new streams of the clone's own, under its identity")
	fs.IntVar(&c.criuLogLevel, "criu-log-level", 2, "CRIU log verbosity 1..4 (higher levels slow the dump while the target is frozen)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&c.cloneTimeout, "clone-timeout", 5*time.Minute, "bound on one clone request")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: clonebotd [flags]\n\nclonebotd live-clones running processes with CRIU and serves an HTTP/JSON API\non a unix socket for clonebotctl. Run it as root.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clonebotd: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "clonebotd: %v\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		log.Error("clonebotd must run as root (it freezes, checkpoints and restores processes)")
		return 1
	}
	if err := serve(c, log); err != nil {
		log.Error("clonebotd stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func serve(c config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mgr, err := clone.New(ctx, clone.Options{
		CRIUPath: c.criuPath, CRIULogLevel: c.criuLogLevel, StateDir: c.stateDir, ImageDir: c.imageDir, Log: log,
		JournalSocket: c.journalSocket,
	})
	if err != nil {
		return err
	}
	defer mgr.Close()

	ln, err := listen(c.socket, log)
	if err != nil {
		return err
	}
	srv := &server{svc: mgr, log: log, authz: authorize, cloneTimeout: c.cloneTimeout}
	hs := &http.Server{
		Handler:           srv.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       withPeerCred,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("clonebotd serving", "socket", c.socket, "state_dir", c.stateDir, "image_dir", c.imageDir, "version", clone.Version)
	// Under systemd (Type=notify): ready once the socket serves, and a
	// watchdog ping while the API answers.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	go watchdog(ctx, c.socket, log)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	log.Info("clonebotd stopping; running clones keep running and are re-adopted at the next start")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	_ = os.Remove(c.socket)
	return err
}

// watchdog pings systemd's watchdog at half its interval for as long as the
// API answers on its own socket (a hung server then gets restarted).
func watchdog(ctx context.Context, socket string, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	c := api.NewClient(socket)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, interval/2)
		_, err := c.Status(cctx)
		cancel()
		if err != nil {
			log.Warn("the API does not answer; not pinging the watchdog", "err", err)
			continue
		}
		_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	}
}

// listen creates the API socket: parent dir 0755, stale socket removed,
// mode 0660 owned by root:clonebot when that group exists.
func listen(path string, log *slog.Logger) (net.Listener, error) {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes", path, len(unix.RawSockaddrUnix{}.Path)-1)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if _, err := os.Lstat(path); err == nil {
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("another clonebotd already serves %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	old := unix.Umask(0o117)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	gid, ok := socketGroupID()
	if !ok {
		gid = 0
		log.Info("group "+SocketGroup+" does not exist: only root can use the API", "socket", path)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

type credKey struct{}

// peer is the process at the other end of an API connection, as the kernel
// recorded it when that process connected (SO_PEERCRED, SO_PEERGROUPS):
// later changes of the process, or of whoever holds its PID by then, do not
// count.
type peer struct {
	uid, gid, pid int
	// groups are its supplementary groups; nil when the kernel could not
	// say (then only gid counts).
	groups []int
}

// withPeerCred records the connecting process's credentials.
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var groups []int
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			groups, _ = peerGroups(int(fd))
		}
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, &peer{uid: int(cred.Uid), gid: int(cred.Gid), pid: int(cred.Pid), groups: groups})
}

// peerGroups returns the supplementary groups the peer of the connected
// unix socket fd had when it connected (SO_PEERGROUPS, Linux 4.13).
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 64)
	for try := 0; ; try++ {
		n := uint32(4 * len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == unix.ERANGE && try == 0 && int(n) > 4*len(buf) {
			buf = make([]uint32, n/4) // n is the size needed
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("getsockopt SO_PEERGROUPS: %w", e)
		}
		out := make([]int, 0, n/4)
		for _, g := range buf[:n/4] {
			out = append(out, int(g))
		}
		return out, nil
	}
}

// socketGroupID returns the gid of group clonebot, and false when it does
// not exist; tests replace it.
var socketGroupID = func() (int, bool) {
	g, err := user.LookupGroup(SocketGroup)
	if err != nil {
		return 0, false
	}
	gid, err := strconv.Atoi(g.Gid)
	return gid, err == nil
}

// authorize lets root in, and members of group clonebot for their own
// processes; everyone else gets 403.
func authorize(ctx context.Context) (clone.Caller, error) {
	p, ok := ctx.Value(credKey{}).(*peer)
	if !ok {
		return clone.Caller{UID: -1}, fault.New(fault.Forbidden, "cannot identify the caller (no SO_PEERCRED)", "", nil)
	}
	who := clone.Caller{UID: p.uid, GID: p.gid, PID: p.pid}
	if who.Root() {
		return who, nil
	}
	if gid, ok := socketGroupID(); ok && p.inGroup(gid) {
		return who, nil
	}
	return who, fault.New(fault.Forbidden, fmt.Sprintf("uid %d is neither root nor a member of group %s", who.UID, SocketGroup),
		"ask root to add you to group "+SocketGroup, nil)
}

// inGroup reports whether the peer had gid as its group or one of its
// supplementary groups when it connected: what the kernel checked when it
// let the peer open the socket.
func (p *peer) inGroup(gid int) bool {
	return p.gid == gid || slices.Contains(p.groups, gid)
}
