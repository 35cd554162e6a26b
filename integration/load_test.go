//go:build linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Load: hey from Debian, 10 workers at 120 requests/s each (1,200/s), for
// loadDuration, with the handover started handoverAt into the run; a
// baseline run of baselineDuration before it gives the steady state.
const (
	loadWorkers      = 10
	loadPerWorker    = 120
	loadDuration     = 10 * time.Second
	baselineDuration = 3 * time.Second
	handoverAt       = 3 * time.Second
)

type heyResult struct {
	OK, Non2xx, Errors int
	RPS, P50, P99      float64 // P50, P99 in ms
	ErrorLines         []string
}

func (r heyResult) String() string {
	return fmt.Sprintf("%d ok, %d non-2xx, %d errors, %.0f req/s, p50 %.2f ms, p99 %.2f ms", r.OK, r.Non2xx, r.Errors, r.RPS, r.P50, r.P99)
}

// startHey runs hey against url for d and returns a func that waits for it.
func startHey(t testing.TB, url string, d time.Duration, keepAlive bool) func() heyResult {
	t.Helper()
	hey := testutil.RequireBinary(t, "hey")
	args := []string{"-z", d.String(), "-c", fmt.Sprint(loadWorkers), "-q", fmt.Sprint(loadPerWorker), "-t", "10"}
	if !keepAlive {
		args = append(args, "-disable-keepalive")
	}
	cmd := exec.Command(hey, append(args, url)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	return func() heyResult {
		_ = cmd.Wait()
		r := parseHey(out.String())
		if r.OK == 0 {
			t.Logf("hey output:\n%s", out.String())
		}
		return r
	}
}

var (
	heyStatus = regexp.MustCompile(`^\s*\[(\d+)\]\s+(\d+) responses`)
	heyErr    = regexp.MustCompile(`^\s*\[(\d+)\]\s+(.*)$`)
	heyPct    = regexp.MustCompile(`^\s*(\d+)% in ([0-9.]+) secs`)
	heyRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
)

func parseHey(s string) heyResult {
	var r heyResult
	inErrors := false
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Error distribution:") {
			inErrors = true
			continue
		}
		if m := heyRPS.FindStringSubmatch(line); m != nil {
			r.RPS, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := heyPct.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			switch m[1] {
			case "50":
				r.P50 = v * 1000
			case "99":
				r.P99 = v * 1000
			}
		}
		if inErrors {
			if m := heyErr.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				r.Errors += n
				r.ErrorLines = append(r.ErrorLines, strings.TrimSpace(line))
			}
			continue
		}
		if m := heyStatus.FindStringSubmatch(line); m != nil {
			code, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			if code >= 200 && code < 300 {
				r.OK += n
			} else {
				r.Non2xx += n
			}
		}
	}
	return r
}

// loadRun measures a baseline, then runs the load while handover() runs
// handoverAt into it, and returns both results and the handover's record.
func loadRun(t testing.TB, url string, keepAlive bool, handover func() (*api.Clone, error)) (base, during heyResult, rec *api.Clone) {
	t.Helper()
	base = startHey(t, url, baselineDuration, keepAlive)()
	wait := startHey(t, url, loadDuration, keepAlive)
	time.Sleep(handoverAt)
	rec, err := handover()
	during = wait()
	require.NoError(t, err, "the handover under load")
	t.Logf("steady state: %s", base)
	t.Logf("with handover: %s", during)
	if rec.Takeover != nil {
		t.Logf("handover: total %.0f ms (clone %.0f ms, original frozen %.1f ms, probe %.0f ms, steered %v, settle %.0f ms, drain %.0f ms, original %s, %d requests migrated)",
			rec.Takeover.TotalMS, rec.TimingsMS.Total, rec.FrozenMS, rec.Takeover.ProbeMS, rec.Takeover.Steered, rec.Takeover.SettleMS,
			rec.Takeover.DrainMS, rec.Takeover.OriginalExit, rec.Takeover.RequestsMigrated)
	}
	for _, l := range during.ErrorLines {
		t.Logf("hey error: %s", l)
	}
	return base, during, rec
}

func keepAliveName(k bool) string {
	if k {
		return "keep-alive"
	}
	return "close"
}

func TestLoadTakeoverGoGraceful(t *testing.T) {
	for _, ka := range []bool{true, false} {
		t.Run(keepAliveName(ka), func(t *testing.T) {
			d := startDaemon(t)
			srv := startGoServer(t, "-graceful")
			url := "http://" + srv.addr + "/"
			_, during, rec := loadRun(t, url, ka, func() (*api.Clone, error) {
				return d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
					Handover: api.Handover{Probe: "http://" + srv.addr + "/count"}})
			})
			t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
			assert.Zero(t, during.Errors, "failed requests during the takeover")
			assert.Zero(t, during.Non2xx, "non-2xx responses during the takeover")
			assert.Greater(t, during.OK, 0)
			assert.Equal(t, "exited", rec.Takeover.OriginalExit)
			waitGone(t, srv.pid)
		})
	}
}

func TestLoadTakeoverNginx(t *testing.T) {
	for _, ka := range []bool{true, false} {
		t.Run(keepAliveName(ka), func(t *testing.T) {
			d := startDaemon(t)
			master, port := startNginx(t)
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			workers := children(master)
			_, during, rec := loadRun(t, url, ka, func() (*api.Clone, error) {
				return d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: master},
					Handover: api.Handover{Probe: url, DrainSignal: "QUIT"}})
			})
			t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
			assert.Zero(t, during.Errors, "failed requests during the takeover")
			assert.Zero(t, during.Non2xx, "non-2xx responses during the takeover")
			assert.Equal(t, "exited", rec.Takeover.OriginalExit)
			for _, w := range append(workers, master) {
				waitGone(t, w)
			}
		})
	}
}

// TestLoadTakeoverPython: python's http.server dies on SIGTERM with
// requests in flight. clonebot signals it only once new connections go to
// the clone alone and it has answered what it accepted, so it loses none;
// nor with its listener shut down from outside first.
func TestLoadTakeoverPython(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
		shutdown  bool
	}{
		{"keep-alive", true, false},
		{"close", false, false},
		{"close-shutdown-listener", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			port := freePort(t)
			srv := startTarget(t, []string{"python3", "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", t.TempDir()})
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			waitListening(t, addr)
			url := "http://" + addr + "/"
			_, during, rec := loadRun(t, url, tc.keepAlive, func() (*api.Clone, error) {
				return d.c.Takeover(context.Background(), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
					Handover: api.Handover{Probe: url, ShutdownListener: tc.shutdown}})
			})
			t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
			t.Logf("python http.server, %s: lost %d requests (%d errors, %d non-2xx) of %d", tc.name, during.Errors+during.Non2xx,
				during.Errors, during.Non2xx, during.OK+during.Errors+during.Non2xx)
			if tc.shutdown {
				assert.True(t, rec.Takeover.ListenerShutdown)
			} else {
				assert.True(t, rec.Takeover.Steered, rec.Takeover.SteerError)
			}
			assert.Zero(t, during.Errors, "failed requests")
			assert.Zero(t, during.Non2xx)
			waitGone(t, srv.pid)
		})
	}
}

func TestLoadUpgradeGo(t *testing.T) {
	for _, ka := range []bool{true, false} {
		t.Run(keepAliveName(ka), func(t *testing.T) {
			d := startDaemon(t)
			srv := startGoServer(t, "-graceful", "-version", "v1")
			url := "http://" + srv.addr + "/version"
			_, during, rec := loadRun(t, url, ka, func() (*api.Clone, error) {
				return d.c.Upgrade(context.Background(), api.UpgradeRequest{PID: srv.pid, Exec: bins.goserver,
					Args: []string{"-activation", "-graceful", "-version", "v2"}, Handover: api.Handover{Probe: url}})
			})
			t.Cleanup(func() { _, _ = d.c.DeleteClone(context.Background(), rec.ID) })
			assert.Zero(t, during.Errors, "failed requests during the upgrade")
			assert.Zero(t, during.Non2xx)
			waitGone(t, srv.pid)
			_, body := get(t, url)
			assert.Equal(t, "v2", body)
		})
	}
}

// startNginx starts nginx (master + 2 workers, user root, no reuseport)
// on a free port and returns the master's PID and the port.
func startNginx(t *testing.T) (int, int) {
	return startNginxAs(t, "root")
}

// startNginxAs starts nginx (master as root, 2 workers as user, no
// reuseport) on a free port and returns the master's PID and the port once
// both workers run as user.
func startNginxAs(t *testing.T, user string) (int, int) {
	t.Helper()
	nginx := testutil.RequireBinary(t, "/usr/sbin/nginx")
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`user %[3]s;
worker_processes 2;
daemon on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[2]d;
        location / { return 200 "nginx $pid\n"; }
    }
}
`, dir, port, user)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644))
	out, err := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	require.NoError(t, err, "start nginx: %s", out)
	master := 0
	fmt.Sscan(waitFile(t, filepath.Join(dir, "nginx.pid")), &master)
	require.Greater(t, master, 0)
	t.Cleanup(func() { killChildren(master); _ = syscall.Kill(master, syscall.SIGKILL) })
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port))
	// The master listens before it forks its workers, and a worker runs
	// as root until it has switched to user.
	u, err := osuser.Lookup(user)
	require.NoError(t, err)
	for deadline := time.Now().Add(20 * time.Second); ; {
		ws, ready := children(master), 0
		for _, w := range ws {
			if f := strings.Fields(procStatusField(t, w, "Uid")); len(f) == 4 && f[0] == u.Uid && f[3] == u.Uid {
				ready++
			}
		}
		if len(ws) == 2 && ready == 2 {
			return master, port
		}
		require.True(t, time.Now().Before(deadline), "nginx master %d: %d workers, %d of them as %s, after 20s; want 2", master, len(ws), ready, user)
		time.Sleep(10 * time.Millisecond)
	}
}
