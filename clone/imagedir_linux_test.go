//go:build linux

package clone

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/clonebot/clonebot/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestPrepareImageDir: a directory that only lies on a shared tmpfs (as
// /run/clonebot/images on /run does) gets a private tmpfs of mode 0700; a
// tmpfs already mounted at the directory is used as it is.
func TestPrepareImageDir(t *testing.T) {
	testutil.RequireRoot(t)
	shared := t.TempDir()
	if err := unix.Mount("clonebot-test", shared, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", shared, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shared, unix.MNT_DETACH) })

	img := filepath.Join(shared, "images")
	mounted, err := prepareImageDir(img)
	if err != nil {
		t.Fatal(err)
	}
	if !mounted {
		t.Fatalf("prepareImageDir(%s) on a shared tmpfs: got mounted=false; want a private tmpfs", img)
	}
	t.Cleanup(func() { _ = unix.Unmount(img, unix.MNT_DETACH) })
	var a, b unix.Stat_t
	if err := unix.Stat(shared, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(img, &b); err != nil {
		t.Fatal(err)
	}
	if a.Dev == b.Dev {
		t.Errorf("%s is on the same file system as %s; want a tmpfs of its own", img, shared)
	}
	if policy, ok := hugeImages(img); !ok || policy != imageHuge {
		t.Errorf("hugeImages(%s): got %q, %v; want %q, true (page images get huge folios)", img, policy, ok, imageHuge)
	}
	if policy, ok := hugeImages(shared); ok || policy != "" {
		t.Errorf("hugeImages(%s) of a tmpfs without huge=: got %q, %v; want \"\", false", shared, policy, ok)
	}
	if fi, err := os.Stat(img); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode of %s: got %v (%v); want 0700", img, fi.Mode().Perm(), err)
	}

	// Again (a daemon restarted after a crash): the mount is reused.
	mounted, err = prepareImageDir(img)
	if err != nil {
		t.Fatal(err)
	}
	if mounted {
		_ = unix.Unmount(img, unix.MNT_DETACH)
		t.Errorf("prepareImageDir(%s) where a tmpfs is mounted: got mounted=true; want it reused", img)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v445", true}, {"6.12.0", true}, {"6.11.9", false}, {"6.1.0-28-amd64", false},
		{"7.0", true}, {"5.19.17", false}, {"", false}, {"garbage", false}, {"6", false},
	} {
		if got := kernelAtLeast(tc.release, 6, 12); got != tc.want {
			t.Errorf("kernelAtLeast(%q, 6, 12): got %v; want %v", tc.release, got, tc.want)
		}
	}
}
