//go:build linux

package clone

import (
	"fmt"

	"github.com/clonebot/clonebot/numa"
	"golang.org/x/sys/unix"
)

// room is what a clone will hold while it is made, against what the host
// has. The images hold every resident anonymous and shared page of the tree
// (CRIU writes each process's pages) until the clone has them all; the
// clone holds at least as much as the largest process of the tree (forked
// workers may share the rest copy-on-write with their parent).
type room struct {
	dump    uint64 // bytes the dump writes: RssAnon+RssShmem of the tree
	largest uint64 // of those, the largest process's
	imgDir  string
	imgFree uint64 // free bytes on the image tmpfs; 0 with imgKnown false
	// imgKnown is false when the image dir could not be measured.
	imgKnown bool
	avail    uint64 // MemAvailable; 0 when unknown
}

// check refuses, before anything is frozen, a clone that cannot fit: images
// larger than the image tmpfs (the dump would fail with the original frozen
// for nothing), or images and clone together beyond the memory the host has
// available (the out-of-memory killer would choose among the original, its
// clone and its neighbours).
func (r room) check(pid int) error {
	if r.imgKnown && r.dump > r.imgFree {
		return refuse(pid, fmt.Sprintf("its memory to dump (%d MiB resident anonymous and shared pages) does not fit the image directory %s (%d MiB free)",
			mib(r.dump), r.imgDir, mib(r.imgFree)),
			"give --image-dir a larger tmpfs (mount -o remount,size=... "+r.imgDir+"), or wait until other clones' images are gone")
	}
	if need := r.dump + r.largest; r.avail > 0 && need > r.avail {
		return refuse(pid, fmt.Sprintf("its images (%d MiB) and its clone (at least %d MiB) need %d MiB while the clone is made, and the host has %d MiB available (MemAvailable); the out-of-memory killer could pick the original",
			mib(r.dump), mib(r.largest), mib(need), mib(r.avail)),
			"free memory on the host, or clone when it has room")
	}
	return nil
}

// mib is n in MiB, rounded up: a small need does not read as 0.
func mib(n uint64) uint64 { return (n + 1<<20 - 1) >> 20 }

// measureRoom fills in what the host has: free space on the image tmpfs and
// MemAvailable. What cannot be read is left unknown (and not checked).
func (m *Manager) measureRoom(r *room) {
	r.imgDir = m.opts.ImageDir
	var st unix.Statfs_t
	if err := unix.Statfs(r.imgDir, &st); err == nil {
		r.imgFree, r.imgKnown = st.Bavail*uint64(st.Bsize), true
	}
	if mi, err := numa.ReadMeminfo(); err == nil {
		r.avail = mi.Available
	}
}
