//go:build linux

package integration

// clonebotd as a systemd service, in the guest booted with systemd as PID 1
// (make test-vm's second boot: integration/vm/run --systemd, with
// CLONEBOT_VM_SYSTEMD=1 and CLONEBOT_VM_SRC naming a directory with the
// Makefile and dist/, for `make install`).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	serviceStateDir = "/var/lib/clonebot"
	serviceImageDir = "/run/clonebot/images"
)

// requireSystemdGuest skips outside the systemd-booted guest.
func requireSystemdGuest(t *testing.T) {
	t.Helper()
	// make test-vm runs it in its second, systemd-booted guest
	// (integration/vm/run --systemd) and leaves it out elsewhere (-skip).
	testutil.Require(t, testutil.InVM() && os.Getenv("CLONEBOT_VM_SYSTEMD") == "1",
		"systemd as PID 1 in the test VM (CLONEBOT_VM_SYSTEMD=1: 'make test-vm' runs it in its systemd-booted guest)")
	_, err := os.Stat("/run/systemd/system")
	testutil.RequireVMFeature(t, err == nil, "systemd as PID 1 (/run/systemd/system)")
	need(t)
}

// systemctl runs systemctl and returns its combined output.
func systemctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("systemctl", append([]string{"--no-pager"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func unitProp(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := systemctl(t, "show", "-p", prop, "--value", unit)
	require.NoError(t, err, "systemctl show %s %s: %s", unit, prop, out)
	return out
}

func journal(t *testing.T, unit string) string {
	out, _ := exec.Command("journalctl", "--no-pager", "-u", unit, "-n", "80").CombinedOutput()
	return string(out)
}

// serviceDaemon installs clonebot with `make install` (once per guest),
// starts clonebotd.service and returns a daemon handle on its socket. The
// service is stopped when the test ends.
func serviceDaemon(t *testing.T) *daemon {
	t.Helper()
	src := os.Getenv("CLONEBOT_VM_SRC")
	require.NotEmpty(t, src, "CLONEBOT_VM_SRC must name a directory with the Makefile and dist/")
	if _, err := os.Stat("/etc/systemd/system/clonebotd.service"); err != nil {
		out, err := exec.Command("make", "-C", src, "-o", "build", "install", "BIN="+bins.dir).CombinedOutput()
		require.NoError(t, err, "make install:\n%s", out)
		t.Logf("make install:\n%s", out)
	}
	out, err := exec.Command("getent", "group", "clonebot").CombinedOutput()
	require.NoError(t, err, "make install creates the group clonebot: %s", out)

	start := time.Now()
	out2, err := systemctl(t, "start", "clonebotd")
	t.Logf("systemctl start clonebotd: %v in %v", err, time.Since(start).Round(time.Millisecond))
	state := unitProp(t, "clonebotd", "ActiveState") + "/" + unitProp(t, "clonebotd", "SubState")
	if !assert.Equal(t, "active/running", state, "clonebotd.service after start: %s", out2) {
		st, _ := systemctl(t, "status", "clonebotd")
		t.Logf("systemctl status:\n%s\njournal:\n%s", st, journal(t, "clonebotd"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of clonebotd:\n%s", journal(t, "clonebotd"))
		}
		_, _ = systemctl(t, "stop", "clonebotd")
	})
	d := &daemon{t: t, sock: api.DefaultSocket, state: serviceStateDir, img: serviceImageDir, logPath: "/dev/null",
		c: api.NewClient(api.DefaultSocket)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.c.Status(ctx(t)); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the service does not answer on %s", api.DefaultSocket)
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

// TestVMSystemdService: `make install`, then clonebotd as a Type=notify
// service with a watchdog: it becomes active, answers clonebotctl on the
// default socket, clones (a root server, nginx with www-data workers, a
// process with a login uid) with the unit's capabilities, and its clones
// outlive a restart and a stop of the service.
func TestVMSystemdService(t *testing.T) {
	requireSystemdGuest(t)
	d := serviceDaemon(t)
	mainPID := unitProp(t, "clonebotd", "MainPID")
	assert.Equal(t, "notify", unitProp(t, "clonebotd", "Type"))
	assert.Equal(t, "30s", unitProp(t, "clonebotd", "WatchdogUSec"))

	// clonebotctl on the default socket; its mode and group.
	cmd := exec.Command(filepath.Join(bins.dir, "clonebotctl"), "status")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "clonebotctl status through %s:\n%s", api.DefaultSocket, out)
	t.Logf("clonebotctl status:\n%s", out)
	fi, err := os.Stat(api.DefaultSocket)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket|0o660, fi.Mode()&(os.ModeType|os.ModePerm), "socket mode")
	grp, _ := exec.Command("stat", "-c", "%G", api.DefaultSocket).Output()
	assert.Equal(t, "clonebot", strings.TrimSpace(string(grp)), "socket group")
	fi, err = os.Stat(serviceStateDir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "state dir mode")
	st := status(t, d)
	for _, c := range []string{"sys_admin", "sys_ptrace", "checkpoint_restore", "sys_resource", "setuid", "setgid", "kill", "net_admin", "sys_chroot", "dac_override", "chown"} {
		assert.True(t, st.Capabilities[c], "the service has CAP_%s", strings.ToUpper(c))
	}
	assert.True(t, st.CRIU.OK, "criu under the unit: %+v", st.CRIU)

	// A root server with every capability, as root starts it.
	srv := startGoServer(t, "-reuseport")
	rec := d.clone(t, api.CloneRequest{PID: srv.pid})
	checkClone(t, d, srv.pid, rec)
	assert.Equal(t, procStatusField(t, srv.pid, "CapEff"), procStatusField(t, rec.PID, "CapEff"), "the clone keeps the original's capabilities")
	assert.Equal(t, procStatusField(t, srv.pid, "CapBnd"), procStatusField(t, rec.PID, "CapBnd"))

	// A process of a login session (loginuid set, here 0): restoring it
	// must not need CAP_AUDIT_CONTROL.
	pf := filepath.Join(t.TempDir(), "addr")
	lu := startTarget(t, []string{"sh", "-c", `echo 0 >/proc/self/loginuid && exec "$0" -port-file "$1"`, bins.goserver, pf})
	lu.addr = waitFile(t, pf)
	require.Equal(t, "0", readTrim(t, fmt.Sprintf("/proc/%d/loginuid", lu.pid)))
	lrec := d.clone(t, api.CloneRequest{PID: lu.pid})
	checkClone(t, d, lu.pid, lrec)
	assert.Equal(t, "0", readTrim(t, fmt.Sprintf("/proc/%d/loginuid", lrec.PID)), "the clone keeps the login uid")
	removeAndCheck(t, d, lrec)

	// nginx, workers as www-data: uids, rlimits of other uids.
	master, port := startNginxAs(t, "www-data")
	nrec := d.clone(t, api.CloneRequest{PID: master})
	checkClone(t, d, master, nrec)
	for _, w := range children(nrec.PID) {
		assert.Equal(t, "33\t33\t33\t33", procStatusField(t, w, "Uid"))
	}
	code, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	assert.Equal(t, 200, code)
	removeAndCheck(t, d, nrec)

	// Restart: the clone runs on and is re-adopted; nothing of the old
	// daemon (a CRIU, a clone's init) is left in the unit's cgroup.
	out3, err := systemctl(t, "restart", "clonebotd")
	require.NoError(t, err, "restart: %s", out3)
	assert.Equal(t, "active", unitProp(t, "clonebotd", "ActiveState"))
	require.True(t, alive(rec.PID), "the clone must outlive a restart of the service")
	got, err := d.c.GetClone(ctx(t), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, api.StateRunning, got.State)
	newPID := unitProp(t, "clonebotd", "MainPID")
	assert.NotEqual(t, mainPID, newPID)
	procs := readTrim(t, filepath.Join(cgroupRoot, unitProp(t, "clonebotd", "ControlGroup"), "cgroup.procs"))
	assert.Equal(t, newPID, procs, "only the daemon runs in the unit's cgroup")

	// systemd re-applying its cgroup settings leaves the clone's cpuset alone.
	_, err = systemctl(t, "daemon-reload")
	require.NoError(t, err)
	if st.Cgroup.Pinning == api.PinCgroup {
		assert.Equal(t, rec.CPUs, cgroupValue(t, st, rec.Cgroup, "cpuset.cpus.effective"), "after daemon-reload")
	}

	// The watchdog: still the same process after more than WatchdogSec.
	time.Sleep(35 * time.Second)
	assert.Equal(t, newPID, unitProp(t, "clonebotd", "MainPID"), "the watchdog must not have restarted the daemon")
	assert.Equal(t, "0", unitProp(t, "clonebotd", "NRestarts"))

	// Stop: the clone runs on, the socket goes.
	out4, err := systemctl(t, "stop", "clonebotd")
	require.NoError(t, err, "stop: %s", out4)
	require.True(t, alive(rec.PID), "the clone must outlive a stop of the service")
	_, err = os.Stat(api.DefaultSocket)
	assert.True(t, os.IsNotExist(err), "socket left behind after stop")
	_, _ = systemctl(t, "start", "clonebotd")
	removeAndCheck(t, d, rec)
}

// TestVMCloneJournaldService clones services whose stdout and stderr are
// streams to journald (issue 4, part 3): the clone gets journal streams of
// its own, its log lines reach the journal as the clone's, it lives in
// clonebot.slice where `systemctl status` shows it, and it takes over when
// the original service stops.
func TestVMCloneJournaldService(t *testing.T) {
	requireSystemdGuest(t)
	d := serviceDaemon(t)
	st := status(t, d)

	for _, tc := range []struct {
		name string
		argv func(port int) []string
		logs bool // logs each request to stderr
	}{
		{"go", func(port int) []string {
			return []string{bins.goserver, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-log-requests"}
		}, true},
		{"python", func(port int) []string {
			return []string{"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(port)}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			unit := fmt.Sprintf("cbtest-%s-%d.service", tc.name, port)
			out, err := exec.Command("systemd-run", append([]string{"--unit", unit, "--property", "Type=exec", "--"}, tc.argv(port)...)...).CombinedOutput()
			require.NoError(t, err, "systemd-run: %s", out)
			t.Cleanup(func() { _, _ = systemctl(t, "stop", unit) })
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			waitListening(t, addr)
			pid := atoi(t, unitProp(t, unit, "MainPID"))
			orig1 := fdTarget(t, pid, 1)
			require.True(t, strings.HasPrefix(orig1, "socket:"), "the service's stdout should be a journal stream; got %s", orig1)

			rec, err := d.c.CreateClone(ctx(t), api.CloneRequest{PID: pid, Name: "svc-" + tc.name})
			require.NoError(t, err, "clone of %s (PID %d), whose stdout and stderr are journal streams", unit, pid)
			t.Cleanup(func() { _, _ = d.c.DeleteClone(ctx(t), rec.ID) })
			checkClone(t, d, pid, rec)
			t.Logf("clone %s: PID %d cgroup %s log %s streams %+v warnings %q", rec.ID, rec.PID, rec.Cgroup, rec.LogPath, rec.Streams, rec.Warnings)
			assert.True(t, strings.HasPrefix(rec.Cgroup, "/clonebot.slice/"), "cgroup %s", rec.Cgroup)
			require.Len(t, rec.Streams, 1, "stdout and stderr are one journal stream: the clone gets one new one")
			stream := rec.Streams[0]
			assert.Equal(t, api.StreamJournal, stream.Kind)
			assert.Equal(t, "/run/systemd/journal/stdout", stream.Peer)
			assert.Equal(t, unit, stream.Unit, "the record names the original's unit")
			assert.True(t, strings.HasSuffix(stream.Identifier, "-clone-"+rec.ID), "identifier %q", stream.Identifier)
			for _, fd := range []int{1, 2} {
				c := fdTarget(t, rec.PID, fd)
				assert.True(t, strings.HasPrefix(c, "socket:"), "the clone's fd %d should be a journal stream of its own; got %s", fd, c)
				assert.NotEqual(t, fdTarget(t, pid, fd), c, "the clone must not share the original's journal stream (fd %d)", fd)
			}
			sst, _ := systemctl(t, "status", strconv.Itoa(rec.PID))
			assert.Contains(t, sst, "clonebot.slice", "systemctl status of the clone's PID:\n%s", sst)
			_ = st

			// Takeover: the original service stops; the clone serves alone.
			out2, err := systemctl(t, "stop", unit)
			require.NoError(t, err, "stop %s: %s", unit, out2)
			waitGone(t, pid)
			require.True(t, alive(rec.PID), "stopping the service must not stop its clone")
			nonce := fmt.Sprintf("clone-%d-%d", rec.PID, time.Now().UnixNano())
			code, _ := get(t, "http://"+addr+"/"+nonce)
			assert.Contains(t, []int{200, 404}, code)
			if tc.logs {
				e := waitJournal(t, nonce)
				t.Logf("journal entry of the clone: _PID=%v _SYSTEMD_CGROUP=%v _SYSTEMD_UNIT=%v SYSLOG_IDENTIFIER=%v", e["_PID"], e["_SYSTEMD_CGROUP"], e["_SYSTEMD_UNIT"], e["SYSLOG_IDENTIFIER"])
				cg, _ := e["_SYSTEMD_CGROUP"].(string)
				assert.True(t, e["_PID"] == strconv.Itoa(rec.PID) || strings.HasPrefix(cg, rec.Cgroup),
					"the clone's log line must be the clone's in the journal (_PID %v, _SYSTEMD_CGROUP %v; clone PID %d, cgroup %s)", e["_PID"], e["_SYSTEMD_CGROUP"], rec.PID, rec.Cgroup)
				assert.Equal(t, stream.Identifier, e["SYSLOG_IDENTIFIER"], "the clone's lines carry its identifier")
				assert.NotEqual(t, unit, e["_SYSTEMD_UNIT"], "the clone's lines must not be filed under the original's unit")
			}
			removeAndCheck(t, d, rec)
		})
	}
}

func fdTarget(t *testing.T, pid, fd int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	require.NoError(t, err)
	return l
}

// waitJournal returns the first journal entry whose message contains s.
func waitJournal(t *testing.T, s string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.Command("journalctl", "--no-pager", "-o", "json", "--since", "-10min").Output()
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if !bytes.Contains(sc.Bytes(), []byte(s)) {
				continue
			}
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				if m, _ := e["MESSAGE"].(string); strings.Contains(m, s) {
					return e
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no journal entry contains %q after 20s", s)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
