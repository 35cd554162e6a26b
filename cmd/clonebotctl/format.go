package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clonebot/clonebot/api"
)

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeClone writes one record as a "key: value" list.
func writeClone(w io.Writer, cl *api.Clone) error {
	var buf strings.Builder
	tw := newTabWriter(&buf)
	kv := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", key, fmt.Sprintf(format, args...))
	}
	kv("id:", "%s", cl.ID)
	kv("name:", "%s", orDash(cl.Name))
	kv("kind:", "%s", orDash(cl.Kind))
	kv("source_pid:", "%d", cl.SourcePID)
	kv("pid:", "%d", cl.PID)
	kv("ns_pid:", "%d", cl.NSPID)
	kv("init_pid:", "%d", cl.InitPID)
	kv("cgroup:", "%s", orDash(cl.Cgroup))
	kv("numa_node:", "%d", cl.NUMANode)
	kv("cpus:", "%s", orDash(cl.CPUs))
	kv("mems:", "%s", orDash(cl.Mems))
	kv("pinning:", "%s", orDash(cl.Pinning))
	kv("numa_local_fraction:", "%.1f%%", cl.NUMALocalFraction*100)
	kv("freeze:", "%s", orDash(cl.Freeze))
	kv("isolated_net:", "%s", yesNo(cl.IsolatedNet))
	kv("state:", "%s", cl.State)
	if cl.ExitCode != nil {
		kv("exit_code:", "%d", *cl.ExitCode)
	} else {
		kv("exit_code:", "-")
	}
	kv("created_at:", "%s", formatTime(cl.CreatedAt))
	if cl.ExitedAt != nil {
		kv("exited_at:", "%s", formatTime(*cl.ExitedAt))
	}
	if cl.MemoryMax > 0 {
		kv("memory_max:", "%s", formatBytes(int64(cl.MemoryMax)))
	}
	if cl.PidsMax > 0 {
		kv("pids_max:", "%d", cl.PidsMax)
	}
	t := cl.TimingsMS
	kv("timings_ms:", "preflight %.1f, freeze %.1f, checkpoint %.1f, restore %.1f, place %.1f, total %.1f",
		t.Preflight, t.Freeze, t.Checkpoint, t.Restore, t.Place, t.Total)
	kv("frozen_ms:", "%.1f", cl.FrozenMS)
	if len(cl.Listeners) == 0 {
		kv("listeners:", "-")
	}
	for i, l := range cl.Listeners {
		key := ""
		if i == 0 {
			key = "listeners:"
		}
		s := fmt.Sprintf("%s (pid %d, fd %d)", l.Addr, l.PID, l.FD)
		if l.ReusePortSet {
			s += " (SO_REUSEPORT set by clonebot)"
		}
		kv(key, "%s", s)
	}
	kv("log_path:", "%s", orDash(cl.LogPath))
	for i, st := range cl.Streams {
		key := ""
		if i == 0 {
			key = "streams:"
		}
		kv(key, "%s socket:[%d] (%s) -> new stream to %s as %s (socket:[%d])", st.Kind, st.Inode, st.FDs, st.Peer, st.Identifier, st.CloneInode)
	}
	if len(cl.Warnings) == 0 {
		kv("warnings:", "-")
	}
	for i, warn := range cl.Warnings {
		key := ""
		if i == 0 {
			key = "warnings:"
		}
		kv(key, "%s", warn)
	}
	kv("operation:", "%s", orDash(cl.Operation))
	if to := cl.Takeover; to != nil {
		kv("takeover:", "")
		kv("  probe_ms:", "%.1f", to.ProbeMS)
		if to.SteerError != "" {
			kv("  steered:", "no (%s)", to.SteerError)
		} else {
			kv("  steered:", "%s", yesNo(to.Steered))
		}
		kv("  settle_ms:", "%.1f", to.SettleMS)
		kv("  drain_ms:", "%.1f", to.DrainMS)
		kv("  original_exit:", "%s", orDash(to.OriginalExit))
		kv("  drain_signal:", "%s", orDash(to.DrainSignal))
		kv("  requests_migrated:", "%d", to.RequestsMigrated)
		kv("  listener_shutdown:", "%s", yesNo(to.ListenerShutdown))
		kv("  total_ms:", "%.1f", to.TotalMS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, trimLines(buf.String()))
	return err
}

// writeClones writes one line per clone; now gives their age.
func writeClones(w io.Writer, cls []api.Clone, now time.Time) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "ID\tNAME\tSOURCE\tPID\tNODE\tPINNING\tSTATE\tFROZEN(ms)\tTOTAL(ms)\tAGE")
	for _, cl := range cls {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%.1f\t%.1f\t%s\n",
			cl.ID, orDash(cl.Name), cl.SourcePID, cl.PID, cl.NUMANode, orDash(cl.Pinning),
			cl.State, cl.FrozenMS, cl.TimingsMS.Total, age(cl.CreatedAt, now))
	}
	return tw.Flush()
}

// writeStatus writes the daemon's view of the host, one section at a time.
func writeStatus(w io.Writer, st *api.Status) error {
	tw := newTabWriter(w)
	fmt.Fprintf(tw, "daemon:\t%s\n", orDash(st.Version))
	fmt.Fprintf(tw, "kernel:\t%s\n", orDash(st.Kernel))
	c := st.CRIU
	criu := orDash(c.Version) + " (" + orDash(c.Path) + "): "
	if c.OK {
		criu += "ok"
	} else {
		criu += "error: " + orDash(c.Error)
	}
	fmt.Fprintf(tw, "criu:\t%s\n", criu)
	if c.Hint != "" {
		fmt.Fprintf(tw, "\thint: %s\n", c.Hint)
	}
	cg := st.Cgroup
	fmt.Fprintf(tw, "cgroup:\t%s at %s\n", orDash(cg.Mode), orDash(cg.Mount))
	fmt.Fprintf(tw, "controllers:\t%s\n", orDash(strings.Join(cg.Controllers, " ")))
	fmt.Fprintf(tw, "pinning:\t%s\n", orDash(cg.Pinning))
	fmt.Fprintf(tw, "clones:\t%d\n", st.Clones)
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(st.NUMA) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "NODE\tCPUS\tMEM FREE/TOTAL (MiB)\tCLONES")
		for _, n := range st.NUMA {
			fmt.Fprintf(tw, "%d\t%s\t%d/%d\t%d\n", n.ID, orDash(n.CPUs), n.MemFree>>20, n.MemTotal>>20, n.Clones)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Capabilities) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "CAPABILITY\tHELD")
		for _, name := range slices.Sorted(maps.Keys(st.Capabilities)) {
			fmt.Fprintf(tw, "%s\t%s\n", name, yesNo(st.Capabilities[name]))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Features) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "FEATURE\tSTATUS")
		for _, name := range slices.Sorted(maps.Keys(st.Features)) {
			f := st.Features[name]
			s := "ok"
			if !f.OK {
				s = "no"
				if f.Detail != "" {
					s += ": " + f.Detail
				}
			}
			fmt.Fprintf(tw, "%s\t%s\n", name, s)
		}
	}
	return tw.Flush()
}

// trimLines drops the spaces a tabwriter pads a line's last key with when
// its value is empty ("takeover:").
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// formatBytes writes n in the largest binary unit that divides it, as
// ParseByteSize reads it back: "512M", "2G", "1000".
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// age says how long ago t was, in its largest whole unit: "42s", "5m", "3h", "2d".
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
