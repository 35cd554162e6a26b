//go:build linux

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/clonebot/clonebot/api"
)

// precopyRow is one line of the pre-copy table.
type precopyRow struct {
	heapMiB                        int
	precopyFrozenMS, plainFrozenMS float64
	rawFrozenMS                    float64
	rounds                         float64
	finalMiB, firstMiB             float64
	precopyTotalMS, plainTotalMS   float64
	reqPerSec                      float64
	load                           int // requests/s asked for
}

var precopyRows []precopyRow

// precopyReps is smaller than benchReps: under TCG one 1 GiB clone takes
// over a minute, and the three variants are interleaved.
const precopyReps = 3

// BenchmarkPrecopy measures how long the original is frozen with iterative
// pre-copy against a plain dump (clonebot's, and the raw CRIU CLI's), for a
// Go server under a steady request load that keeps its heap partly live
// (every request allocates; the collector then writes to the heap). It
// needs soft-dirty tracking: the test VM has it (make bench-vm), the CI
// hosts do not. The heap is the largest of 1 GiB, 512 MiB, 256 MiB of
// which four fit in the free memory of the smallest node (the original, a
// pre-copy round, the final dump's share and the clone).
func BenchmarkPrecopy(b *testing.B) {
	d := startDaemon(b)
	st, err := d.c.Status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if !st.Features["soft_dirty"].OK {
		b.Skipf("pre-copy needs soft-dirty tracking (%s); make bench-vm runs this in the test VM", st.Features["soft_dirty"].Detail)
	}
	// The original, its images (a pre-copy round and the final dump) and
	// the clone may all land on one node, the one with the least free
	// memory at worst: in the 4 GiB-per-node guest a 1 GiB heap ran out
	// of room (ENOSPC on the images, or the original killed).
	freeMiB := -1
	for _, n := range st.NUMA {
		if f := int(n.MemFree >> 20); freeMiB < 0 || f < freeMiB {
			freeMiB = f
		}
	}
	heap := 0
	for _, h := range []int{1024, 512, 256} {
		if h*4+512 <= freeMiB {
			heap = h
			break
		}
	}
	if heap == 0 {
		b.Skipf("not even 256 MiB fits four times in the smallest node's %d MiB free", freeMiB)
	}
	// Idle, and answering a steady load (its dirtying is what pre-copy
	// has to outrun).
	for _, rate := range []int{0, 200} {
		b.Run(fmt.Sprintf("heap%dMiB-load%d", heap, rate), func(b *testing.B) { benchPrecopy(b, d, heap, rate) })
	}
}

func benchPrecopy(b *testing.B, d *daemon, heapMiB, perSec int) {
	srv := startGoServer(b, "-reuseport", "-heap", fmt.Sprint(heapMiB))
	reqs, stop := steadyLoad("http://"+srv.addr+"/", perSec)
	defer stop()
	t0 := time.Now()
	var pre, plain, raw, rounds, final, first, preTotal, plainTotal []float64
	// The clone goes to the node with the most free memory: with two
	// nodes, not the one that holds the original and the images.
	place := api.Placement(api.PlaceSpread)
	for i := 0; i < b.N*precopyReps; i++ {
		runPre := func() {
			rec := benchCloneOnce(b, d, api.CloneRequest{PID: srv.pid, NUMA: place, Precopy: "on", LazyPages: "off"})
			if rec.Precopy == nil || !rec.Precopy.Used {
				b.Fatalf("pre-copy not used: %+v", rec.Precopy)
			}
			pre = append(pre, rec.FrozenMS)
			preTotal = append(preTotal, rec.TimingsMS.Total)
			rounds = append(rounds, float64(len(rec.Precopy.Rounds)))
			first = append(first, float64(rec.Precopy.Rounds[0].Bytes)/(1<<20))
			final = append(final, float64(rec.DumpedBytes)/(1<<20))
		}
		runPlain := func() {
			rec := benchCloneOnce(b, d, api.CloneRequest{PID: srv.pid, NUMA: place, Precopy: "off", LazyPages: "off"})
			plain = append(plain, rec.FrozenMS)
			plainTotal = append(plainTotal, rec.TimingsMS.Total)
		}
		runRaw := func() {
			raw = append(raw, rawCRIU(b, srv.pid).frozenMS)
		}
		// Each goes first in turn.
		steps := []func(){runPre, runPlain, runRaw}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	row := precopyRow{heapMiB: heapMiB, precopyFrozenMS: median(pre), plainFrozenMS: median(plain), rawFrozenMS: median(raw),
		rounds: median(rounds), finalMiB: median(final), firstMiB: median(first),
		precopyTotalMS: median(preTotal), plainTotalMS: median(plainTotal),
		reqPerSec: float64(reqs()) / time.Since(t0).Seconds(), load: perSec}
	b.ReportMetric(row.precopyFrozenMS, "precopy-frozen-ms")
	b.ReportMetric(row.plainFrozenMS, "plain-frozen-ms")
	b.ReportMetric(row.rawFrozenMS, "raw-frozen-ms")
	b.ReportMetric(row.precopyFrozenMS/row.plainFrozenMS, "precopy/plain")
	b.ReportMetric(row.precopyFrozenMS/row.rawFrozenMS, "precopy/raw")
	benchMu.Lock()
	precopyRows = append(precopyRows, row)
	benchMu.Unlock()
}

func loadName(r precopyRow) string {
	if r.load == 0 {
		return "idle"
	}
	return fmt.Sprintf("%.0f req/s", r.reqPerSec)
}

// benchCloneOnce makes a clone, waits until its memory is all in, and
// removes it, returning its record.
func benchCloneOnce(b *testing.B, d *daemon, req api.CloneRequest) api.Clone {
	rec, err := d.c.CreateClone(ctx(b), req)
	if err != nil {
		b.Fatalf("clone: %v", err)
	}
	final := waitResident(b, d, rec.ID)
	if _, err := d.c.DeleteClone(ctx(b), rec.ID); err != nil {
		b.Fatalf("rm: %v", err)
	}
	return final
}

// steadyLoad GETs url about perSec times a second on new connections until
// stop is called; n reports how many requests were answered.
func steadyLoad(url string, perSec int) (n func() int64, stop func()) {
	var mu sync.Mutex
	var count int64
	if perSec <= 0 {
		return func() int64 { return 0 }, func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		tick := time.NewTicker(time.Second / time.Duration(perSec))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if resp, err := client.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				count++
				mu.Unlock()
			}
		}
	}()
	return func() int64 { mu.Lock(); defer mu.Unlock(); return count },
		func() { close(done); wg.Wait() }
}

// writePrecopyReport adds the pre-copy table to the report.
func writePrecopyReport(w io.Writer) {
	if len(precopyRows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Iterative pre-copy (soft-dirty kernels)\n\n")
	fmt.Fprintf(w, "A Go server, idle or answering a steady load of requests on new connections throughout. Pre-copy: `precopy: on` (pre-dumps while it runs, then a final dump of the pages dirtied since the last); plain: `precopy: off`; raw: the CRIU CLI's `criu dump --leave-running`. Frozen times are CRIU's `freezing_time + frozen_time`, medians of %d interleaved repetitions. Only the ratios count under TCG.\n\n", precopyReps)
	fmt.Fprintf(w, "| heap | load | frozen, pre-copy | frozen, plain | frozen, raw CRIU | pre-copy / plain | pre-copy / raw | rounds | first round | final dump | total, pre-copy / plain |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range precopyRows {
		fmt.Fprintf(w, "| %d MiB | %s | %.1f ms | %.1f ms | %.1f ms | %.3fx | %.3fx | %.0f | %.0f MiB | %.1f MiB | %.0f / %.0f ms |\n",
			r.heapMiB, loadName(r), r.precopyFrozenMS, r.plainFrozenMS, r.rawFrozenMS, r.precopyFrozenMS/r.plainFrozenMS,
			r.precopyFrozenMS/r.rawFrozenMS, r.rounds, r.firstMiB, r.finalMiB, r.precopyTotalMS, r.plainTotalMS)
	}
}
