//go:build linux

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/clonebot/clonebot/clone"
	"github.com/clonebot/clonebot/fault"
	"github.com/clonebot/clonebot/internal/testutil"
)

// replace sets *p to v for the test and restores it after.
func replace[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func TestAuthorize(t *testing.T) {
	const group = 4242
	for _, tc := range []struct {
		name      string
		peer      *peer // nil: no SO_PEERCRED
		groupOK   bool  // group clonebot exists
		wantUID   int
		forbidden bool
	}{
		{"root", &peer{uid: 0, gid: 0, pid: 10}, true, 0, false},
		{"root without the group", &peer{uid: 0, gid: 0, pid: 10}, false, 0, false},
		{"member by its group", &peer{uid: 1000, gid: group, pid: 10}, true, 1000, false},
		{"member by a supplementary group", &peer{uid: 1000, gid: 1000, pid: 10, groups: []int{27, group}}, true, 1000, false},
		{"not a member", &peer{uid: 1000, gid: 1000, pid: 10, groups: []int{27, 100}}, true, 1000, true},
		{"no groups known", &peer{uid: 1000, gid: 1000, pid: 10}, true, 1000, true},
		{"the group does not exist", &peer{uid: 1000, gid: group, pid: 10, groups: []int{group}}, false, 1000, true},
		{"nobody", &peer{uid: 65534, gid: 65534, pid: 10}, true, 65534, true},
		{"root's gid is not root", &peer{uid: 1000, gid: 0, pid: 10, groups: []int{0}}, true, 1000, true},
		{"no credentials", nil, true, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replace(t, &socketGroupID, func() (int, bool) { return group, tc.groupOK })
			ctx := context.Background()
			if tc.peer != nil {
				ctx = context.WithValue(ctx, credKey{}, tc.peer)
			}
			who, err := authorize(ctx)
			if who.UID != tc.wantUID {
				t.Errorf("caller uid: got %d; want %d", who.UID, tc.wantUID)
			}
			if tc.forbidden {
				if !fault.Is(err, fault.Forbidden) {
					t.Fatalf("got %v; want a Forbidden error", err)
				}
				if tc.peer != nil && !strings.Contains(err.Error(), "group clonebot") {
					t.Errorf("message: got %q; want it to name group clonebot", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v; want the caller let in", err)
			}
			if tc.peer != nil && (who != clone.Caller{UID: tc.peer.uid, GID: tc.peer.gid, PID: tc.peer.pid}) {
				t.Errorf("caller: got %+v; want the peer's ids %+v", who, *tc.peer)
			}
		})
	}
}

// TestPeerCredentials: the kernel's record of a real peer reaches the
// context: uid, gid, PID and supplementary groups.
func TestPeerCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	p, ok := withPeerCred(context.Background(), sc).Value(credKey{}).(*peer)
	if !ok {
		t.Fatal("got no peer in the context; want this process's credentials")
	}
	if p.uid != os.Geteuid() || p.gid != os.Getegid() || p.pid != os.Getpid() {
		t.Errorf("peer: got uid %d gid %d pid %d; want %d %d %d", p.uid, p.gid, p.pid, os.Geteuid(), os.Getegid(), os.Getpid())
	}
	want, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(p.groups)
	slices.Sort(got)
	slices.Sort(want)
	if p.groups == nil || !slices.Equal(got, want) {
		t.Errorf("peer groups: got %v; want %v (SO_PEERGROUPS)", p.groups, want)
	}
	// A connection that is not a unix socket carries no credentials.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if v := withPeerCred(context.Background(), a).Value(credKey{}); v != nil {
		t.Errorf("pipe: got %v; want no credentials", v)
	}
}

// TestListen: the socket is 0660, owned by root and group clonebot (or
// root's group when it does not exist), replaces a stale socket, and is not
// taken from a live daemon.
func TestListen(t *testing.T) {
	testutil.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		groupOK bool
		gid     int
	}{{"group exists", true, 4242}, {"no group", false, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			replace(t, &socketGroupID, func() (int, bool) { return tc.gid, tc.groupOK })
			sock := filepath.Join(t.TempDir(), "run", "d.sock")
			ln, err := listen(sock, log)
			if err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(sock, &st); err != nil {
				t.Fatal(err)
			}
			if mode := st.Mode & 0o7777; mode != 0o660 {
				t.Errorf("socket mode: got %o; want 660", mode)
			}
			if st.Uid != 0 || int(st.Gid) != tc.gid {
				t.Errorf("socket owner: got %d:%d; want 0:%d", st.Uid, st.Gid, tc.gid)
			}
			fi, err := os.Stat(filepath.Dir(sock))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("socket directory mode: got %o; want 755", fi.Mode().Perm())
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			if _, err := listen(sock, log); err == nil || !strings.Contains(err.Error(), "another clonebotd") {
				t.Errorf("listen on a live socket: got %v; want \"another clonebotd already serves\"", err)
			}
			ln.Close()
			// A stale socket file (no one listening) is replaced.
			if err := os.WriteFile(sock, nil, 0o600); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
			ln, err = listen(sock, log)
			if err != nil {
				t.Fatalf("listen over a stale socket: got %v; want it replaced", err)
			}
			ln.Close()
		})
	}
	if _, err := listen("/tmp/"+strings.Repeat("x", 120), log); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("listen on a 125-byte path: got %v; want \"longer than\"", err)
	}
}
