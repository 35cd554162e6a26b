//go:build linux

package clone

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/numa"
	"golang.org/x/sys/unix"
)

// Status reports what the host offers and what works.
func (m *Manager) Status(ctx context.Context) api.Status {
	st := api.Status{Version: Version, Capabilities: m.caps, Features: map[string]api.Feature{}}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		st.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	info, err := m.probeCRIU(ctx)
	st.CRIU = api.CRIUStatus{Path: info.Path, OK: err == nil}
	if info.Version > 0 {
		st.CRIU.Version = info.VersionString()
	}
	if err != nil {
		st.CRIU.Error = err.Error()
		st.CRIU.Hint = "install CRIU >= 4.2 with 'make deps', or pass --criu PATH"
	}
	st.Features["clone"] = feature(err == nil && m.cg != nil, firstErr(err, m.cgErr))
	if m.cg != nil {
		st.Cgroup = api.CgroupStatus{Mode: m.cg.Mode, Mount: m.cg.Mount, Controllers: m.cg.Controllers, Pinning: m.cg.PinningMode()}
		st.Features["cgroup_freeze"] = api.Feature{OK: true, Detail: "targets alone in their cgroup are frozen with cgroup.freeze, others with ptrace"}
		if m.cg.Has("cpuset") {
			st.Features["cpuset_pinning"] = api.Feature{OK: true}
		} else {
			st.Features["cpuset_pinning"] = api.Feature{Detail: "cpuset is not available in cgroup v2 at " + m.cg.Mount + "; clones are pinned with sched_setaffinity and a memory policy"}
		}
		st.Features["memory_max"] = feature(m.cg.Has("memory"), nil)
		if !m.cg.Has("memory") {
			st.Features["memory_max"] = api.Feature{Detail: "the memory controller is not available in cgroup v2 at " + m.cg.Mount}
		}
	} else {
		st.Cgroup = api.CgroupStatus{Mode: "none"}
	}
	if info.Features != nil {
		st.Features["soft_dirty"] = feature(info.Features["mem_track"], nil)
		if !info.Features["mem_track"] {
			st.Features["soft_dirty"] = api.Feature{Detail: "the kernel has no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY): no iterative pre-copy, the dump runs frozen"}
		}
		st.Features["lazy_pages"] = feature(info.Features["lazy_pages"], nil)
	}
	st.Features["image_huge_pages"] = imageHugeFeature(m.opts.ImageDir, st.Kernel)
	st.Features["pidfd_getfd"] = probePidfdGetfd()
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil {
		st.Features["tcp_migrate_req"] = api.Feature{OK: true}
	} else {
		st.Features["tcp_migrate_req"] = api.Feature{Detail: "net.ipv4.tcp_migrate_req needs Linux >= 5.14"}
	}
	if topo, err := numa.ReadTopology(m.opts.NodeRoot); err == nil {
		per := m.clonesPerNode()
		for _, n := range topo.Nodes {
			st.NUMA = append(st.NUMA, api.NUMANode{ID: n.ID, CPUs: n.CPUList, MemTotal: n.MemTotal, MemFree: n.MemFree, Clones: per[n.ID]})
		}
	}
	m.mu.Lock()
	st.Clones = len(m.clones)
	m.mu.Unlock()
	return st
}

func feature(ok bool, err error) api.Feature {
	f := api.Feature{OK: ok}
	if err != nil {
		f.Detail = strings.TrimSpace(err.Error())
	}
	return f
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// probePidfdGetfd duplicates one of our own fds through pidfd_getfd.
func probePidfdGetfd() api.Feature {
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return api.Feature{Detail: "pidfd_open: " + err.Error() + " (needs Linux >= 5.3)"}
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, pidfd, 0)
	if err != nil {
		return api.Feature{Detail: "pidfd_getfd: " + err.Error() + " (needs Linux >= 5.6 and ptrace access)"}
	}
	unix.Close(fd)
	return api.Feature{OK: true}
}

// imageHugeFeature says whether the page images in the tmpfs at dir get
// huge pages on this kernel (release), and if not, why and what to do.
func imageHugeFeature(dir, release string) api.Feature {
	policy, ok := hugeImages(dir)
	at := "the image tmpfs at " + dir
	var why string
	switch {
	case ok && policy == "within_size" && !kernelAtLeast(release, 6, 12):
		return api.Feature{Detail: at + " has huge=within_size, which gives page images (written by appending) huge pages only from Linux 6.12 on; this kernel is " + release}
	case ok:
		return api.Feature{OK: true, Detail: at + " has huge=" + policy}
	case policy == "":
		why = "no huge= option"
	case policy == "never":
		why = "huge=never"
	default:
		why = "huge=" + policy + ", but /sys/kernel/mm/transparent_hugepage/shmem_enabled is deny"
	}
	return api.Feature{Detail: at + " has no huge pages (" + why +
		"): dumps write about a third slower; let clonebotd mount it (unmount it while clonebotd is stopped), or mount it with huge=" + imageHuge}
}

// kernelAtLeast reports whether a kernel release string ("6.18.44-fc",
// "6.1.0-28-amd64") is at least major.minor; an unreadable one is not.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
