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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clonebot/clonebot/activation"
	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/clone"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/nsinit"
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
	fs.StringVar(&c.imageDir, "image-dir", "/run/clonebot/images", "checkpoint images while a clone is made; a private tmpfs is mounted here unless it is one")
	fs.StringVar(&c.criuPath, "criu", "", "criu binary (default: criu on PATH)")
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
		ConnContext:       withPeerCred,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("clonebotd serving", "socket", c.socket, "state_dir", c.stateDir, "image_dir", c.imageDir, "version", clone.Version)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("clonebotd stopping; running clones keep running and are re-adopted at the next start")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	_ = os.Remove(c.socket)
	return err
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
	gid := 0
	if g, err := user.LookupGroup(SocketGroup); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	} else {
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

// withPeerCred records the connecting process's credentials (SO_PEERCRED).
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
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, cred)
}

// authorize lets root in, and members of group clonebot for their own
// processes; everyone else gets 403.
func authorize(ctx context.Context) (clone.Caller, error) {
	cred, ok := ctx.Value(credKey{}).(*unix.Ucred)
	if !ok {
		return clone.Caller{UID: -1}, fault.New(fault.Forbidden, "cannot identify the caller (no SO_PEERCRED)", "", nil)
	}
	who := clone.Caller{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
	if who.Root() {
		return who, nil
	}
	if inGroup(who, SocketGroup) {
		return who, nil
	}
	return who, fault.New(fault.Forbidden, fmt.Sprintf("uid %d is neither root nor a member of group %s", who.UID, SocketGroup),
		"ask root to add you to group "+SocketGroup, nil)
}

// inGroup checks the caller process's own groups (/proc/PID/status), which
// is what the kernel enforces, rather than /etc/group.
func inGroup(who clone.Caller, name string) bool {
	g, err := user.LookupGroup(name)
	if err != nil {
		return false
	}
	gid, _ := strconv.Atoi(g.Gid)
	if who.GID == gid {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", who.PID))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.Atoi(f); err == nil && n == gid {
					return true
				}
			}
		}
	}
	return false
}
