//go:build linux

package cgroup

import (
	"context"
	"fmt"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/clonebot/clonebot/numa"
)

// On a host whose cgroup v2 hierarchy systemd manages, a cgroup systemd
// does not know is invisible to `systemctl status` and is not accounted to
// any unit. So there a clone's cgroup is a transient scope unit: clonebotd
// names the directory as systemd names a scope's (ScopeName), creates and
// configures it itself as anywhere else, starts the clone's first process
// in it, and then asks systemd to start the scope with that process
// (StartTransientUnit through systemd's private bus socket, which needs no
// D-Bus daemon). systemd adopts the existing directory. Delegate=yes keeps
// systemd out of the subtree and keeps every controller enabled above it;
// the scope's own cpuset, memory.max and pids.max are passed as its
// properties, as systemd writes a unit's configured values (or its
// defaults) into the unit's cgroup whenever it applies them.

// Systemd reports whether systemd, as PID 1, manages this hierarchy (pure
// cgroup v2 at /sys/fs/cgroup).
func (h *Hierarchy) Systemd() bool {
	if h.Mode != ModeV2 || h.Mount != "/sys/fs/cgroup" {
		return false
	}
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// ScopeName is the cgroup directory (and unit) name of clone id on a
// systemd host.
func ScopeName(id string) string { return "clonebot-" + id + ".scope" }

// RegisterScope makes systemd adopt c, a cgroup named by ScopeName directly
// under a slice of the root ("/clonebot.slice/clonebot-<id>.scope"), as a
// transient scope unit holding pid. It waits for the job, at most 10 s.
func (c *Cgroup) RegisterScope(ctx context.Context, pid int, description string) error {
	slice, unit := path.Split(c.Rel)
	slice = strings.Trim(slice, "/")
	if !strings.HasSuffix(unit, ".scope") || !strings.HasSuffix(slice, ".slice") || strings.Contains(slice, "/") {
		return fmt.Errorf("register cgroup %s with systemd: want /<name>.slice/<name>.scope", c.Rel)
	}
	props, err := scopeProperties(func(file string) (string, error) { return readFile(c.Dir, file) })
	if err != nil {
		return fmt.Errorf("register cgroup %s with systemd: %w", c.Rel, err)
	}
	props = append(props, sddbus.PropDescription(description), sddbus.PropSlice(slice), sddbus.PropPids(uint32(pid)),
		sddbus.Property{Name: "Delegate", Value: godbus.MakeVariant(true)})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connect to systemd to register cgroup %s: %w", c.Rel, err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "fail", props, done); err != nil {
		return fmt.Errorf("start transient unit %s for cgroup %s: %w", unit, c.Rel, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("start transient unit %s for cgroup %s: job %s", unit, c.Rel, res)
		}
	case <-ctx.Done():
		return fmt.Errorf("start transient unit %s for cgroup %s: %w", unit, c.Rel, ctx.Err())
	}
	return nil
}

// scopeProperties reads back (with read) what clonebotd set in a cgroup as
// systemd unit properties, so that systemd applying the unit's settings
// writes the same.
func scopeProperties(read func(file string) (string, error)) ([]sddbus.Property, error) {
	var props []sddbus.Property
	for _, f := range []struct{ file, prop string }{{"cpuset.cpus", "AllowedCPUs"}, {"cpuset.mems", "AllowedMemoryNodes"}} {
		v, err := read(f.file)
		if err != nil {
			if isGone(err) {
				continue // no cpuset controller here
			}
			return nil, err
		}
		if strings.TrimSpace(v) == "" {
			continue
		}
		ids, err := numa.ParseCPUList(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.file, err)
		}
		props = append(props, sddbus.Property{Name: f.prop, Value: godbus.MakeVariant(bitmask(ids))})
	}
	for _, f := range []struct{ file, prop string }{{"memory.max", "MemoryMax"}, {"pids.max", "TasksMax"}} {
		v, err := read(f.file)
		if err != nil {
			if isGone(err) {
				continue
			}
			return nil, err
		}
		n := uint64(math.MaxUint64) // "max": systemd's infinity
		if v = strings.TrimSpace(v); v != "max" {
			if n, err = strconv.ParseUint(v, 10, 64); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.file, v, err)
			}
		}
		props = append(props, sddbus.Property{Name: f.prop, Value: godbus.MakeVariant(n)})
	}
	return props, nil
}

// bitmask is systemd's D-Bus form of a CPU or node set: bit i%8 of byte i/8.
func bitmask(ids []int) []byte {
	var b []byte
	for _, i := range ids {
		for len(b) <= i/8 {
			b = append(b, 0)
		}
		b[i/8] |= 1 << (i % 8)
	}
	return b
}
