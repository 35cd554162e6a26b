//go:build linux

package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/stats"
	"github.com/clonebot/clonebot/api"
)

// benchReps is how many interleaved repetitions each benchmark makes; the
// machines are noisy (±50% between identical dumps), so medians are reported.
const benchReps = 5

// smallReps is the repetitions for the small server: its whole freeze is
// CRIU's fixed cost (seizing threads, collecting sockets, the parasite),
// about 10 ms, which the machine's noise moves by as much; each repetition
// takes a fraction of a second, so more of them buy a median that means
// something.
const smallReps = 15

// repsFor is how many interleaved repetitions a server of heapMiB gets.
func repsFor(heapMiB int) int {
	if heapMiB < 64 {
		return smallReps
	}
	return benchReps
}

// benchRow is one line of docs/BENCHMARKS.md.
type benchRow struct {
	name                    string
	heapMiB                 int
	servingMS, residentMS   float64
	memcpyMS                float64
	copiedMiB, rawCopiedMiB float64 // memory the dumps wrote
	cloneMS, cloneFrozenMS  float64
	rawMS, rawFrozenMS      float64
	rawDumpMS, rawRestoreMS float64
	clonePhases             api.Timings
}

// scaleRow is one point of the scaling curve.
type scaleRow struct {
	heapMiB, threads                  int
	servingMS, residentMS, totalMS    float64
	frozenMS, checkpointMS, restoreMS float64
	lazy                              bool
}

var scaleRows []scaleRow

// BenchmarkScaling clones servers of growing heap (16 MiB to 4 GiB, as far
// as memory allows: the original, its images and the clone each hold it)
// and growing thread count (1 to 200), once each, to show how the cost
// grows and where it goes.
func BenchmarkScaling(b *testing.B) {
	points := []struct{ heap, threads int }{{16, 1}, {64, 1}, {256, 1}, {1024, 1}, {4096, 1}, {16, 10}, {16, 50}, {16, 200}}
	for _, pt := range points {
		if !heapFits(b, pt.heap) {
			continue
		}
		b.Run(fmt.Sprintf("heap%dMiB-threads%d", pt.heap, pt.threads), func(b *testing.B) {
			d := startDaemon(b)
			srv := startGoServer(b, "-reuseport", "-heap", fmt.Sprint(pt.heap), "-threads", fmt.Sprint(pt.threads))
			rec, err := d.c.CreateClone(ctx(b), api.CloneRequest{PID: srv.pid})
			if err != nil {
				b.Fatal(err)
			}
			final := waitResident(b, d, rec.ID)
			_, _ = d.c.DeleteClone(ctx(b), rec.ID)
			row := scaleRow{heapMiB: pt.heap, threads: pt.threads, servingMS: rec.TimingsMS.Serving, residentMS: final.TimingsMS.Resident,
				totalMS: rec.TimingsMS.Total, frozenMS: rec.FrozenMS, checkpointMS: rec.TimingsMS.Checkpoint, restoreMS: rec.TimingsMS.Restore, lazy: rec.LazyPages}
			b.ReportMetric(row.servingMS, "serving-ms")
			b.ReportMetric(row.frozenMS, "frozen-ms")
			benchMu.Lock()
			scaleRows = append(scaleRows, row)
			benchMu.Unlock()
		})
	}
}

var (
	benchMu      sync.Mutex
	benchRows    []benchRow
	takeoverRows []takeoverRow
)

// takeoverRow is one handover measured under load.
type takeoverRow struct {
	name              string
	totalMS, frozenMS float64
	probeMS, drainMS  float64
	base, during      heyResult
}

// BenchmarkTakeover moves a graceful Go server's traffic to its clone while
// hey sends 1,200 requests/s, with and without keep-alive, and reports the
// takeover's duration, the time the original was frozen, and p50/p99
// latency during the handover against the steady state.
func BenchmarkTakeover(b *testing.B) {
	for _, ka := range []bool{true, false} {
		b.Run(keepAliveName(ka), func(b *testing.B) {
			d := startDaemon(b)
			srv := startGoServer(b, "-graceful")
			url := "http://" + srv.addr + "/"
			base, during, rec := loadRun(b, url, ka, func() (*api.Clone, error) {
				return d.c.Takeover(ctx(b), api.TakeoverRequest{CloneRequest: api.CloneRequest{PID: srv.pid},
					Handover: api.Handover{Probe: url}})
			})
			b.Cleanup(func() { _, _ = d.c.DeleteClone(ctx(b), rec.ID) })
			row := takeoverRow{name: "Go server, graceful, " + keepAliveName(ka), totalMS: rec.Takeover.TotalMS, frozenMS: rec.FrozenMS,
				probeMS: rec.Takeover.ProbeMS, drainMS: rec.Takeover.DrainMS, base: base, during: during}
			b.ReportMetric(row.totalMS, "takeover-ms")
			b.ReportMetric(row.frozenMS, "frozen-ms")
			b.ReportMetric(during.P99, "p99-during-ms")
			b.ReportMetric(base.P99, "p99-steady-ms")
			b.ReportMetric(float64(during.Errors+during.Non2xx), "failed-requests")
			benchMu.Lock()
			takeoverRows = append(takeoverRows, row)
			benchMu.Unlock()
		})
	}
}

// heapFits reports whether a server of heapMiB can be cloned here: the
// original, its images and the clone each hold the heap, and 1 GiB is kept
// for the rest. It logs why a point is left out.
func heapFits(b *testing.B, heapMiB int) bool {
	var si syscall.Sysinfo_t
	_ = syscall.Sysinfo(&si)
	freeMiB := int(uint64(si.Freeram) * uint64(si.Unit) >> 20)
	if need := heapMiB*3 + 1024; need > freeMiB {
		b.Logf("leaving out the %d MiB heap: %d MiB free, %d needed", heapMiB, freeMiB, need)
		return false
	}
	return true
}

// BenchmarkClone clones a small Go server and ones with 256 MiB, 1 GiB and
// (where memory allows) 4 GiB heaps, and runs the raw CRIU CLI sequence
// (criu dump --leave-running --tcp-close to a tmpfs, criu restore
// --restore-detached in a new PID and mount namespace) on the same server
// in the same run, interleaved, reporting medians.
func BenchmarkClone(b *testing.B) {
	for _, bc := range []struct {
		name string
		heap int
	}{
		{"small", 0},
		{"heap256MiB", 256},
		{"heap1GiB", 1024},
		{"heap4GiB", 4096},
	} {
		if !heapFits(b, bc.heap) {
			continue
		}
		b.Run(bc.name, func(b *testing.B) { benchOne(b, bc.name, bc.heap) })
	}
}

func benchOne(b *testing.B, name string, heapMiB int) {
	d := startDaemon(b)
	srv := startGoServer(b, "-reuseport", "-heap", fmt.Sprint(heapMiB))
	var clone, cloneFrozen, raw, rawFrozen, rawDump, rawRestore, serving, resident, copied, rawCopied []float64
	var phases []api.Timings
	for i := 0; i < b.N*repsFor(heapMiB); i++ {
		// Raw CRIU first on odd runs, clonebot first on even ones.
		runClone := func() {
			rec, err := d.c.CreateClone(ctx(b), api.CloneRequest{PID: srv.pid})
			if err != nil {
				b.Fatalf("clone: %v", err)
			}
			clone = append(clone, rec.TimingsMS.Total)
			cloneFrozen = append(cloneFrozen, rec.FrozenMS)
			phases = append(phases, rec.TimingsMS)
			serving = append(serving, rec.TimingsMS.Serving)
			copied = append(copied, float64(rec.DumpedBytes))
			final := waitResident(b, d, rec.ID)
			resident = append(resident, final.TimingsMS.Resident)
			if _, err := d.c.DeleteClone(ctx(b), rec.ID); err != nil {
				b.Fatalf("rm: %v", err)
			}
		}
		runRaw := func() {
			r := rawCRIU(b, srv.pid)
			raw = append(raw, r.dumpMS+r.restoreMS)
			rawDump = append(rawDump, r.dumpMS)
			rawRestore = append(rawRestore, r.restoreMS)
			rawFrozen = append(rawFrozen, r.frozenMS)
			rawCopied = append(rawCopied, float64(r.copiedBytes))
		}
		if i%2 == 0 {
			runClone()
			runRaw()
		} else {
			runRaw()
			runClone()
		}
	}
	row := benchRow{name: name, heapMiB: heapMiB, cloneMS: median(clone), cloneFrozenMS: median(cloneFrozen), rawMS: median(raw),
		rawFrozenMS: median(rawFrozen), rawDumpMS: median(rawDump), rawRestoreMS: median(rawRestore), clonePhases: medianPhases(phases),
		servingMS: median(serving), residentMS: median(resident), memcpyMS: memcpyMS(heapMiB),
		copiedMiB: median(copied) / (1 << 20), rawCopiedMiB: median(rawCopied) / (1 << 20)}
	b.ReportMetric(row.servingMS, "serving-ms")
	b.ReportMetric(row.residentMS, "resident-ms")
	b.ReportMetric(row.servingMS/row.rawMS, "serving/raw")
	b.ReportMetric(row.cloneMS, "clone-ms")
	b.ReportMetric(row.cloneFrozenMS, "frozen-ms")
	b.ReportMetric(row.rawMS, "raw-criu-ms")
	b.ReportMetric(row.rawFrozenMS, "raw-frozen-ms")
	b.ReportMetric(row.cloneMS/row.rawMS, "clone/raw")
	b.ReportMetric(row.cloneFrozenMS/row.rawFrozenMS, "frozen/raw")
	benchMu.Lock()
	benchRows = append(benchRows, row)
	benchMu.Unlock()
}

// rawCRIU runs the CRIU CLI sequence by hand and returns what it took. It
// runs as CRIU runs for a user on this host without clonebot: CRIU keeps no
// kerndat cache where /run is not a tmpfs, so the cache clonebotd installs
// there is moved aside for the raw runs.
func rawCRIU(b *testing.B, pid int) (r rawRun) {
	if restore := asideKerndat(b); restore != nil {
		defer restore()
	}
	// Images on a tmpfs, as clonebot's.
	dir, err := os.MkdirTemp("/dev/shm", "clonebot-raw-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	// --skip-in-flight: a server under load always has connections
	// half-way into its accept queue, which CRIU refuses without it
	// (clonebot passes the same).
	out, err := exec.Command("criu", "dump", "-t", fmt.Sprint(pid), "-D", dir, "--leave-running", "--tcp-close", "--skip-in-flight", "-o", "dump.log").CombinedOutput()
	r.dumpMS = msSince(t0)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		b.Fatalf("criu dump: %v\n%s\n%s", err, out, tail(string(log), 20))
	}
	if f, err := os.Open(dir); err == nil {
		if st, err := stats.CriuGetDumpStats(f); err == nil {
			r.frozenMS = float64(st.GetFreezingTime()+st.GetFrozenTime()) / 1000
			r.copiedBytes = int64(st.GetPagesWritten()) * int64(os.Getpagesize())
		}
		f.Close()
	}
	// criu must not be PID 1 of the namespace (--restore-detached would
	// take the namespace down with it): sh stays as PID 1.
	script := fmt.Sprintf("criu restore -D %s --tcp-close --restore-detached -o restore.log && echo restored; exec sleep 1000000", dir)
	cmd := exec.Command("unshare", "--pid", "--mount", "--fork", "--mount-proc", "--propagation", "private", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, _ := cmd.StdoutPipe()
	t1 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	r.restoreMS = msSince(t1)
	if strings.TrimSpace(line) != "restored" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log, _ := os.ReadFile(filepath.Join(dir, "restore.log"))
		b.Fatalf("raw criu restore failed:\n%s", tail(string(log), 20))
	}
	// Kill the namespace's PID 1 (the child of unshare): all of it goes.
	for _, c := range children(cmd.Process.Pid) {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	_ = cmd.Wait()
	return r
}

// rawRun is one raw CRIU dump and restore: wall times and the frozen time
// CRIU reports in ms, and the memory its dump wrote.
type rawRun struct {
	dumpMS, restoreMS, frozenMS float64
	copiedBytes                 int64
}

// asideKerndat moves /run/criu.kdat away when /run is not a tmpfs (where
// CRIU alone would not have one); the returned func puts it back.
func asideKerndat(b *testing.B) func() {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/run", &st); err != nil || st.Type == 0x01021994 /* TMPFS_MAGIC */ {
		return nil
	}
	const kdat, aside = "/run/criu.kdat", "/run/criu.kdat.bench-aside"
	if err := os.Rename(kdat, aside); err != nil {
		return nil
	}
	return func() {
		if err := os.Rename(aside, kdat); err != nil {
			b.Logf("put back %s: %v", kdat, err)
		}
	}
}

// memcpyMS times one copy of mib MiB (the bound for moving it once).
func memcpyMS(mib int) float64 {
	if mib == 0 {
		return 0
	}
	src := make([]byte, mib<<20)
	dst := make([]byte, mib<<20)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src) // fault both in
	t := time.Now()
	copy(dst, src)
	return msSince(t)
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianPhases(ps []api.Timings) api.Timings {
	pick := func(f func(api.Timings) float64) float64 {
		var v []float64
		for _, p := range ps {
			v = append(v, f(p))
		}
		return median(v)
	}
	return api.Timings{
		Preflight:  pick(func(p api.Timings) float64 { return p.Preflight }),
		Freeze:     pick(func(p api.Timings) float64 { return p.Freeze }),
		Checkpoint: pick(func(p api.Timings) float64 { return p.Checkpoint }),
		Restore:    pick(func(p api.Timings) float64 { return p.Restore }),
		Place:      pick(func(p api.Timings) float64 { return p.Place }),
		Total:      pick(func(p api.Timings) float64 { return p.Total }),
	}
}

// writeBenchReport writes docs/BENCHMARKS.md when CLONEBOT_BENCH_REPORT
// names it (make bench).
func writeBenchReport() error {
	path := os.Getenv("CLONEBOT_BENCH_REPORT")
	if path == "" || len(benchRows)+len(takeoverRows)+len(scaleRows)+len(precopyRows) == 0 {
		return nil
	}
	var sb strings.Builder
	host, _ := os.Hostname()
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	rel := utsString(uts.Release[:])
	criuV, _ := exec.Command("criu", "--version").Output()
	criuVersion := "CRIU " + strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(criuV), "\n", 2)[0], "Version:"))
	cpu := cpuModel()
	by := "make bench"
	if len(benchRows) == 0 && len(precopyRows) > 0 {
		by = "make bench-vm"
	}
	fmt.Fprintf(&sb, "# Benchmarks\n\nWritten by `%s` on %s.\n\n", by, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&sb, "Machine: %s, %s, %d CPUs, kernel %s, %s, Go %s.\n\n", host, cpu, runtime.NumCPU(), rel, criuVersion, runtime.Version())
	if len(benchRows) > 0 {
		writeCloneTables(&sb)
	}
	if len(scaleRows) > 0 {
		sb.WriteString("\n## Scaling: heap size and threads (one clone each)\n\n| heap | threads | serving | resident | total | frozen | checkpoint | restore | lazy |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range scaleRows {
			fmt.Fprintf(&sb, "| %d MiB | %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %v |\n",
				r.heapMiB, r.threads, r.servingMS, r.residentMS, r.totalMS, r.frozenMS, r.checkpointMS, r.restoreMS, r.lazy)
		}
	}
	if len(takeoverRows) > 0 {
		sb.WriteString("\n## Takeover under load\n\nhey at 1,200 requests/s (10 workers), a 3 s steady-state run, then a 10 s run with the takeover started 3 s in. Latency percentiles are hey's over each whole run.\n\n")
		sb.WriteString("| target | takeover total | original frozen | probe | drain | failed requests | p50 steady / during | p99 steady / during |\n|---|---|---|---|---|---|---|---|\n")
		for _, r := range takeoverRows {
			fmt.Fprintf(&sb, "| %s | %.0f ms | %.1f ms | %.0f ms | %.0f ms | %d of %d | %.2f / %.2f ms | %.2f / %.2f ms |\n",
				r.name, r.totalMS, r.frozenMS, r.probeMS, r.drainMS, r.during.Errors+r.during.Non2xx,
				r.during.OK+r.during.Errors+r.during.Non2xx, r.base.P50, r.during.P50, r.base.P99, r.during.P99)
		}
	}
	writePrecopyReport(&sb)
	// The notes (what a run means, written by hand) outlive the tables.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), "\n"+notesHeading); i >= 0 {
			sb.WriteString(string(old[i:]))
		}
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

// notesHeading starts the hand-written part of a report, which a new run
// keeps (update it by hand when the figures change what it says).
const notesHeading = "## Notes"

// writeCloneTables writes the clone against raw CRIU tables.
func writeCloneTables(sb *strings.Builder) {
	fmt.Fprintf(sb, "Each figure is the median of %d interleaved repetitions of the same server (%d for the small one, whose ~10 ms freeze is within the noise), clonebot and the raw CRIU CLI sequence taking turns; these machines are noisy (±50%% between identical dumps), so compare the ratios of one run.\n\n", benchReps, smallReps)
	sb.WriteString("Raw CRIU: `criu dump --leave-running --tcp-close --skip-in-flight` to a tmpfs, then `criu restore --tcp-close --restore-detached` in a new PID and mount namespace (sh as its PID 1), timed until criu returns. clonebot: the API's `timings_ms.total` (preflight, placement, cgroup, namespace init, dump, restore, pinning and verification) and `frozen_ms`. Frozen times are CRIU's own `freezing_time + frozen_time` for both.\n\n")
	sb.WriteString("| target | clone serving | clone resident | clonebot total | raw CRIU dump+restore | serving ratio | total ratio | clonebot frozen | raw CRIU frozen | frozen ratio | memory copied (clonebot / raw) | memcpy of the heap |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range benchRows {
		fmt.Fprintf(sb, "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms (%.1f + %.1f) | %.2fx | %.2fx | %.1f ms | %.1f ms | %.2fx | %.1f / %.1f MiB | %.1f ms |\n",
			r.name, r.servingMS, r.residentMS, r.cloneMS, r.rawMS, r.rawDumpMS, r.rawRestoreMS, r.servingMS/r.rawMS, r.cloneMS/r.rawMS,
			r.cloneFrozenMS, r.rawFrozenMS, r.cloneFrozenMS/r.rawFrozenMS, r.copiedMiB, r.rawCopiedMiB, r.memcpyMS)
	}
	sb.WriteString("\n`serving`: from the request to the clone running (restore done); `resident`: to its last page in (later than serving when memory is restored lazily, from 64 MiB on); `total`: until the API answers (placement and verification included). The memcpy column is one copy of the heap in this process: the physical bound for moving that memory once.\n")
	sb.WriteString("\n## Where clonebot's time goes (medians, ms)\n\n| target | preflight | freeze | checkpoint | restore | place | total |\n|---|---|---|---|---|---|---|\n")
	for _, r := range benchRows {
		p := r.clonePhases
		fmt.Fprintf(sb, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.name, p.Preflight, p.Freeze, p.Checkpoint, p.Restore, p.Place, p.Total)
	}
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}
