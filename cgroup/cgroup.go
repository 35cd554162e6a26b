// Package cgroup creates, fills, freezes and destroys the cgroup v2 leaves
// clonebot puts clones in (clonebot.slice/<id>), and answers which cgroup a
// process is in.
//
// Mechanism: the cgroup v2 interface files, opened through
// github.com/opencontainers/cgroups (openat2 confined under /sys/fs/cgroup).
// Kernel versions: cgroup v2 itself 4.5; the cpuset controller in v2 5.0;
// cgroup.freeze and the "frozen" key of cgroup.events 5.2; CLONE_INTO_CGROUP
// (OpenFD, for syscall.SysProcAttr.UseCgroupFD) 5.7; cgroup.kill 5.14 (Kill
// falls back to SIGKILL through pidfds on older kernels).
//
// Hosts come in two shapes. Pure v2 mounts cgroup2 at /sys/fs/cgroup with
// every controller. Hybrid hosts keep cpuset, memory, pids... in v1
// hierarchies and mount cgroup2 at /sys/fs/cgroup/unified with none of them:
// freezing and killing through v2 still work there, but CPU and memory
// pinning fall back to sched_setaffinity and set_mempolicy (Pinning reports
// api.PinAffinity) and memory/pids limits are unavailable.
//
// Parsers (ParseMountinfo and the /proc/PID/cgroup and cgroup.events readers)
// are portable; everything that touches the kernel is in cgroup_linux.go and
// returns ErrUnsupported elsewhere.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/clonebot/clonebot/api"
)

// ErrUnsupported is returned where the OS or kernel lacks a mechanism: on
// systems other than Linux, and wrapped when a v2 interface file the call
// needs does not exist (a kernel older than the version named in the error).
var ErrUnsupported = errors.New("cgroup: not supported")

// ErrNoCgroup2 is wrapped by Detect when no cgroup2 file system is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 file system mounted")

// Modes of a Hierarchy.
const (
	ModeV2     = "v2"     // cgroup2 only: no v1 controller hierarchies mounted
	ModeHybrid = "hybrid" // cgroup2 beside v1 controller hierarchies
)

// Hierarchy is the host's cgroup v2 hierarchy.
type Hierarchy struct {
	// Mount is where cgroup2 is mounted: "/sys/fs/cgroup" or "/sys/fs/cgroup/unified".
	Mount string
	// Mode is ModeV2 or ModeHybrid.
	Mode string
	// Controllers is the contents of Mount/cgroup.controllers.
	Controllers []string
}

// Has reports whether controller is available at the root of the hierarchy.
func (h *Hierarchy) Has(controller string) bool {
	return slices.Contains(h.Controllers, controller)
}

// Path returns the absolute directory of a cgroup path relative to the
// hierarchy root, such as "/clonebot.slice/ab12". The path is cleaned, so it
// never leaves Mount.
func (h *Hierarchy) Path(rel string) string {
	return filepath.Join(h.Mount, filepath.Clean("/"+rel))
}

// PinningMode is how clones get pinned on this host: api.PinCgroup when the
// cpuset controller is available at the root, else api.PinAffinity.
func (h *Hierarchy) PinningMode() string {
	if h.Has("cpuset") {
		return api.PinCgroup
	}
	return api.PinAffinity
}

// Config is what Create applies to a new cgroup. Its zero value applies
// nothing.
type Config struct {
	// CPUs is written to cpuset.cpus, e.g. "1"; "" leaves it.
	CPUs string
	// Mems is written to cpuset.mems, e.g. "1"; "" leaves it.
	Mems string
	// MemoryMax is written to memory.max in bytes; 0 means no limit. The
	// kernel rounds it down to a multiple of the page size.
	MemoryMax int64
	// PidsMax is written to pids.max; 0 means no limit.
	PidsMax int64
}

// Cgroup is one cgroup v2 directory.
type Cgroup struct {
	H *Hierarchy
	// Rel is the path relative to the hierarchy root: "/clonebot.slice/<id>".
	Rel string
	// Dir is the absolute directory, H.Path(Rel).
	Dir string
	// Pinning is api.PinCgroup when the cgroup has the cpuset controller,
	// else api.PinAffinity: the caller must pin with sched_setaffinity and a
	// memory policy instead.
	Pinning string
}

// Stats are the resource figures of a cgroup. Figures of a controller the
// cgroup lacks are zero, with HasMemory or HasPids false.
type Stats struct {
	HasMemory     bool
	MemoryCurrent uint64 // memory.current, bytes
	MemoryMax     int64  // memory.max, bytes; -1 when "max" (no limit)
	HasPids       bool
	PidsCurrent   uint64 // pids.current
	PidsMax       int64  // pids.max; -1 when "max" (no limit)
}

// UnavailableError reports that a Config asks for a controller the cgroup v2
// hierarchy does not offer.
type UnavailableError struct {
	Controller string
	// Hierarchy is the cgroup2 mount point.
	Hierarchy string
	// Hint says how to make the controller available.
	Hint string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("cgroup controller %q is not available in the cgroup v2 hierarchy at %s: %s",
		e.Controller, e.Hierarchy, e.Hint)
}

func unavailable(h *Hierarchy, controller, setting string) *UnavailableError {
	hint := fmt.Sprintf("the kernel offers no %s controller in %s/cgroup.controllers; leave %s unset", controller, h.Mount, setting)
	if h.Mode == ModeHybrid {
		hint = fmt.Sprintf("this host runs hybrid cgroups, where %s belongs to a v1 hierarchy; "+
			"boot with systemd.unified_cgroup_hierarchy=1 (pure cgroup v2) to use it, or leave %s unset", controller, setting)
	}
	return &UnavailableError{Controller: controller, Hierarchy: h.Mount, Hint: hint}
}

// Mount is one line of /proc/PID/mountinfo (see proc_pid_mountinfo(5)).
type Mount struct {
	ID, Parent int
	MajorMinor string
	// Root is the directory of the file system mounted at MountPoint.
	Root       string
	MountPoint string
	// Options are the per-mount options, Optional the optional fields
	// ("shared:1", "master:2").
	Options  string
	Optional []string
	FSType   string
	Source   string
	// SuperOptions are the per-superblock options; for a cgroup v1 mount
	// they name its controllers ("rw,cpu,cpuacct").
	SuperOptions string
}

// ParseMountinfo parses /proc/PID/mountinfo. Octal escapes (\040 for a
// space) in paths and sources are decoded.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil || !strings.Contains(f[2], ":") {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		m := Mount{
			ID: id, Parent: parent, MajorMinor: f[2],
			Root: unescapeMount(f[3]), MountPoint: unescapeMount(f[4]),
			Options: f[5], Optional: slices.Clone(f[6:sep]),
			FSType: f[sep+1], Source: unescapeMount(f[sep+2]),
		}
		if len(f) > sep+3 {
			m.SuperOptions = f[sep+3]
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMount decodes the kernel's octal escapes (\040, \011, \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// v1NonControllers are cgroup v1 mount options that do not name a controller.
var v1NonControllers = []string{"rw", "ro", "none", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}

// pickHierarchy finds the cgroup2 mount among mounts (preferring
// /sys/fs/cgroup, then /sys/fs/cgroup/unified, then the first one) and the
// mode: ModeHybrid when a cgroup v1 hierarchy holding a controller is
// mounted as well. A v1 "name=systemd" hierarchy alone holds no controller.
func pickHierarchy(mounts []Mount) (mount, mode string, err error) {
	var v2 []string
	hybrid := false
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			v2 = append(v2, m.MountPoint)
		case "cgroup":
			for o := range strings.SplitSeq(m.SuperOptions, ",") {
				if o == "" || slices.Contains(v1NonControllers, o) ||
					strings.HasPrefix(o, "name=") || strings.HasPrefix(o, "release_agent=") {
					continue
				}
				hybrid = true
			}
		}
	}
	if len(v2) == 0 {
		return "", "", fmt.Errorf("%w: mount it with \"mount -t cgroup2 none /sys/fs/cgroup/unified\" "+
			"or boot with systemd.unified_cgroup_hierarchy=1", ErrNoCgroup2)
	}
	mount = v2[0]
	for _, want := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if slices.Contains(v2, want) {
			mount = want
		}
	}
	mode = ModeV2
	if hybrid {
		mode = ModeHybrid
	}
	return mount, mode, nil
}

// parseProcCgroup returns the cgroup v2 path (the "0::" line) of a
// /proc/PID/cgroup file.
func parseProcCgroup(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			if !strings.HasPrefix(p, "/") {
				return "", fmt.Errorf("cgroup v2 path %q is not absolute", p)
			}
			return p, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup v2 entry (\"0::\" line)")
}

// parseFlatKeyed parses a flat keyed cgroup file ("populated 1\nfrozen 0\n").
func parseFlatKeyed(s string) (map[string]string, error) {
	kv := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok || k == "" || strings.ContainsAny(v, " ") {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		kv[k] = v
	}
	return kv, nil
}

// parseLimit parses a "max"-or-number cgroup value; "max" is -1.
func parseLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("want a number or \"max\", got %q", s)
	}
	return v, nil
}

// checkName validates one path component of a cgroup.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty cgroup name")
	case name == "." || name == "..":
		return fmt.Errorf("cgroup name %q is not allowed", name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("cgroup name %q contains \"/\"", name)
	case len(name) > 255:
		return fmt.Errorf("cgroup name %q is longer than 255 bytes", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("cgroup name %q contains a control character", name)
		}
	}
	return nil
}

// cleanRel validates a relative cgroup path ("clonebot.slice/ab12", with or
// without a leading "/") and returns it as "/clonebot.slice/ab12"; "" and "/"
// give "/". No component may be "." or "..".
func cleanRel(rel string) (string, error) {
	t := strings.Trim(rel, "/")
	if t == "" {
		return "/", nil
	}
	for c := range strings.SplitSeq(t, "/") {
		if err := checkName(c); err != nil {
			return "", fmt.Errorf("cgroup path %q: %w", rel, err)
		}
	}
	return path.Join("/", t), nil
}
