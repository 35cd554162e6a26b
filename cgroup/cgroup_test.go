package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clonebot/clonebot/api"
)

// replace sets *p to v for the duration of the test.
func replace[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func readMountinfo(t *testing.T, name string) []Mount {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ParseMountinfo(f)
	if err != nil {
		t.Fatalf("ParseMountinfo(%s): %v", name, err)
	}
	return m
}

func TestParseMountinfoSamples(t *testing.T) {
	for _, tc := range []struct {
		file      string
		count     int
		mount     string
		mode      string
		noCgroup2 bool
	}{
		// Captured on a development host: v1 controllers plus cgroup2 at /unified.
		{file: "mountinfo-hybrid.txt", count: 19, mount: "/sys/fs/cgroup/unified", mode: ModeHybrid},
		// Debian 12 with systemd, written by hand.
		{file: "mountinfo-v2.txt", count: 20, mount: "/sys/fs/cgroup", mode: ModeV2},
		// An old systemd host with v1 only.
		{file: "mountinfo-v1.txt", count: 8, noCgroup2: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			mounts := readMountinfo(t, tc.file)
			if len(mounts) != tc.count {
				t.Fatalf("got %d mounts; want %d", len(mounts), tc.count)
			}
			mount, mode, err := pickHierarchy(mounts)
			if tc.noCgroup2 {
				if !errors.Is(err, ErrNoCgroup2) {
					t.Fatalf("got %q, %q, %v; want ErrNoCgroup2", mount, mode, err)
				}
				for _, remedy := range []string{"mount -t cgroup2 none /sys/fs/cgroup/unified", "systemd.unified_cgroup_hierarchy=1"} {
					if !strings.Contains(err.Error(), remedy) {
						t.Errorf("error %q does not name the remedy %q", err, remedy)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if mount != tc.mount || mode != tc.mode {
				t.Fatalf("got mount %q mode %q; want %q %q", mount, mode, tc.mount, tc.mode)
			}
		})
	}
}

func TestParseMountinfoFields(t *testing.T) {
	mounts := readMountinfo(t, "mountinfo-v2.txt")
	cg := mounts[slices.IndexFunc(mounts, func(m Mount) bool { return m.FSType == "cgroup2" })]
	want := Mount{
		ID: 32, Parent: 22, MajorMinor: "0:27", Root: "/", MountPoint: "/sys/fs/cgroup",
		Options: "rw,nosuid,nodev,noexec,relatime", Optional: []string{"shared:9"},
		FSType: "cgroup2", Source: "cgroup2", SuperOptions: "rw,nsdelegate,memory_recursiveprot",
	}
	if !mountEqual(cg, want) {
		t.Errorf("got %+v; want %+v", cg, want)
	}
	last := mounts[len(mounts)-1]
	if last.MountPoint != "/mnt/clonebot share" {
		t.Errorf("escaped mount point: got %q; want %q", last.MountPoint, "/mnt/clonebot share")
	}
}

func mountEqual(a, b Mount) bool {
	return a.ID == b.ID && a.Parent == b.Parent && a.MajorMinor == b.MajorMinor && a.Root == b.Root &&
		a.MountPoint == b.MountPoint && a.Options == b.Options && slices.Equal(a.Optional, b.Optional) &&
		a.FSType == b.FSType && a.Source == b.Source && a.SuperOptions == b.SuperOptions
}

func TestParseMountinfoTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []Mount
		wantErr bool
	}{
		{name: "empty", in: ""},
		{
			name: "no optional fields",
			in:   "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
			want: []Mount{{ID: 41, Parent: 31, MajorMinor: "0:38", Root: "/", MountPoint: "/sys/fs/cgroup/unified",
				Options: "rw,relatime", Optional: []string{}, FSType: "cgroup2", Source: "cgroup2", SuperOptions: "rw"}},
		},
		{
			name: "two optional fields, escapes",
			in:   `50 1 0:40 /a\134b /x\011y rw shared:3 master:1 - tmpfs my\040src rw` + "\n",
			want: []Mount{{ID: 50, Parent: 1, MajorMinor: "0:40", Root: `/a\b`, MountPoint: "/x\ty",
				Options: "rw", Optional: []string{"shared:3", "master:1"}, FSType: "tmpfs", Source: "my src", SuperOptions: "rw"}},
		},
		{
			name: "no super options",
			in:   "1 0 0:1 / / rw - rootfs rootfs\n",
			want: []Mount{{ID: 1, Parent: 0, MajorMinor: "0:1", Root: "/", MountPoint: "/", Options: "rw",
				Optional: []string{}, FSType: "rootfs", Source: "rootfs"}},
		},
		{name: "truncated escape", in: `1 0 0:1 / /a\04 rw - tmpfs t rw` + "\n",
			want: []Mount{{ID: 1, MajorMinor: "0:1", Root: "/", MountPoint: `/a\04`, Options: "rw", Optional: []string{},
				FSType: "tmpfs", Source: "t", SuperOptions: "rw"}}},
		{name: "no separator", in: "41 31 0:38 / /x rw cgroup2 cgroup2 rw\n", wantErr: true},
		{name: "too short", in: "41 31 0:38 / - cgroup2\n", wantErr: true},
		{name: "bad id", in: "x 31 0:38 / /x rw - cgroup2 cgroup2 rw\n", wantErr: true},
		{name: "bad dev", in: "41 31 038 / /x rw - cgroup2 cgroup2 rw\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %+v; want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, mountEqual) {
				t.Fatalf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseMountinfo(f *testing.F) {
	for _, name := range []string{"mountinfo-hybrid.txt", "mountinfo-v2.txt", "mountinfo-v1.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(`1 0 0:1 / /a\04 rw - tmpfs t rw`)
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := ParseMountinfo(strings.NewReader(s))
		if err == nil {
			_, _, _ = pickHierarchy(mounts)
		}
	})
}

func TestPickHierarchy(t *testing.T) {
	m := func(fstype, point, super string) Mount {
		return Mount{FSType: fstype, MountPoint: point, SuperOptions: super}
	}
	for _, tc := range []struct {
		name        string
		mounts      []Mount
		mount, mode string
	}{
		{"systemd name only is not a controller", []Mount{
			m("cgroup", "/sys/fs/cgroup/systemd", "rw,xattr,name=systemd"),
			m("cgroup2", "/sys/fs/cgroup/unified", "rw,nsdelegate"),
		}, "/sys/fs/cgroup/unified", ModeV2},
		{"prefers /sys/fs/cgroup", []Mount{
			m("cgroup2", "/run/other", "rw"),
			m("cgroup2", "/sys/fs/cgroup", "rw"),
			m("cgroup2", "/sys/fs/cgroup/unified", "rw"),
		}, "/sys/fs/cgroup", ModeV2},
		{"elsewhere", []Mount{m("cgroup2", "/cg", "rw")}, "/cg", ModeV2},
		{"v1 controller makes hybrid", []Mount{
			m("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "rw,cpu,cpuacct"),
			m("cgroup2", "/sys/fs/cgroup/unified", "rw"),
		}, "/sys/fs/cgroup/unified", ModeHybrid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mount, mode, err := pickHierarchy(tc.mounts)
			if err != nil || mount != tc.mount || mode != tc.mode {
				t.Fatalf("got %q %q %v; want %q %q", mount, mode, err, tc.mount, tc.mode)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "hybrid", in: "9:name=systemd:/\n4:memory:/process_api/96fa\n0::/clonebot.slice/ab12\n", want: "/clonebot.slice/ab12"},
		{name: "pure", in: "0::/system.slice/ssh.service\n", want: "/system.slice/ssh.service"},
		{name: "root", in: "0::/\n", want: "/"},
		{name: "colon in path", in: "0::/a:b\n", want: "/a:b"},
		{name: "v1 only", in: "4:memory:/x\n1:cpu:/\n", wantErr: true},
		{name: "relative", in: "0::x\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcCgroup(strings.NewReader(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %q; want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseFlatKeyed(t *testing.T) {
	kv, err := parseFlatKeyed("populated 1\nfrozen 0\n")
	if err != nil || kv["populated"] != "1" || kv["frozen"] != "0" || len(kv) != 2 {
		t.Fatalf("got %v, %v; want populated 1, frozen 0", kv, err)
	}
	for _, bad := range []string{"populated\n", "a b c\n", " 1\n"} {
		if kv, err := parseFlatKeyed(bad); err == nil {
			t.Errorf("parseFlatKeyed(%q) = %v; want an error", bad, kv)
		}
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]int64{"max\n": -1, "0\n": 0, "1048576\n": 1048576, "max": -1} {
		if got, err := parseLimit(in); err != nil || got != want {
			t.Errorf("parseLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "lots", "1 2"} {
		if got, err := parseLimit(bad); err == nil {
			t.Errorf("parseLimit(%q) = %d; want an error", bad, got)
		}
	}
}

func TestCleanRel(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "/",
		"/":                       "/",
		"clonebot.slice":          "/clonebot.slice",
		"/clonebot.slice/ab12":    "/clonebot.slice/ab12",
		"clonebot.slice/ab12/":    "/clonebot.slice/ab12",
		"clonebot-test.slice/x y": "/clonebot-test.slice/x y",
	} {
		if got, err := cleanRel(in); err != nil || got != want {
			t.Errorf("cleanRel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"..", "a/../b", "a/./b", "a//b", "a/\x01", "x\ny", "a/\x7f"} {
		if got, err := cleanRel(bad); err == nil {
			t.Errorf("cleanRel(%q) = %q; want an error", bad, got)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a\tb", strings.Repeat("x", 256)} {
		if err := checkName(bad); err == nil {
			t.Errorf("checkName(%q): got nil error", bad)
		}
	}
}

func TestHierarchyHelpers(t *testing.T) {
	h := &Hierarchy{Mount: "/sys/fs/cgroup", Mode: ModeV2, Controllers: []string{"cpuset", "cpu", "memory", "pids"}}
	if !h.Has("cpuset") || h.Has("io") {
		t.Errorf("Has: got cpuset %v io %v; want true false", h.Has("cpuset"), h.Has("io"))
	}
	if got := h.PinningMode(); got != api.PinCgroup {
		t.Errorf("PinningMode() = %q; want %q", got, api.PinCgroup)
	}
	for rel, want := range map[string]string{
		"/clonebot.slice/ab12": "/sys/fs/cgroup/clonebot.slice/ab12",
		"clonebot.slice":       "/sys/fs/cgroup/clonebot.slice",
		"/":                    "/sys/fs/cgroup",
		"../../etc":            "/sys/fs/cgroup/etc",
	} {
		if got := h.Path(rel); got != want {
			t.Errorf("Path(%q) = %q; want %q", rel, got, want)
		}
	}
	hy := &Hierarchy{Mount: "/sys/fs/cgroup/unified", Mode: ModeHybrid, Controllers: []string{"hugetlb"}}
	if got := hy.PinningMode(); got != api.PinAffinity {
		t.Errorf("hybrid PinningMode() = %q; want %q", got, api.PinAffinity)
	}
	msg := unavailable(hy, "memory", "memory_max").Error()
	for _, s := range []string{"memory", "/sys/fs/cgroup/unified", "systemd.unified_cgroup_hierarchy=1"} {
		if !strings.Contains(msg, s) {
			t.Errorf("UnavailableError %q does not mention %q", msg, s)
		}
	}
}
