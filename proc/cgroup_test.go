package proc

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name, file, in string
		want           []CgroupEntry
		unified        string
		hasUnified     bool
	}{{
		name: "v1 hybrid capture",
		file: "cgroup_v1_hybrid.txt",
		want: []CgroupEntry{
			{9, []string{"name=systemd"}, "/"},
			{8, []string{"pids"}, "/"},
			{7, []string{"blkio"}, "/"},
			{6, []string{"freezer"}, "/"},
			{5, []string{"devices"}, "/"},
			{4, []string{"memory"}, "/process_api/a92805ed2dad4420b550b47923a705da"},
			{3, []string{"cpuset"}, "/"},
			{2, []string{"cpuacct"}, "/"},
			{1, []string{"cpu"}, "/"},
			{0, nil, "/"},
		},
		unified: "/", hasUnified: true,
	}, {
		name:    "v2 only",
		file:    "cgroup_v2.txt",
		want:    []CgroupEntry{{0, nil, "/system.slice/clonebot.service"}},
		unified: "/system.slice/clonebot.service", hasUnified: true,
	}, {
		name: "v1 only, joined controllers, colon in path",
		in:   "3:cpu,cpuacct:/a:b\n2:name=systemd:/user.slice\n",
		want: []CgroupEntry{
			{3, []string{"cpu", "cpuacct"}, "/a:b"},
			{2, []string{"name=systemd"}, "/user.slice"},
		},
	}, {
		name: "empty",
		in:   "",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if tt.file != "" {
				in = readTestdata(t, tt.file)
			}
			got, err := ParseCgroup(bytes.NewReader(in))
			if err != nil {
				t.Fatalf("ParseCgroup: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v;\nwant %+v", got, tt.want)
			}
			p, ok := UnifiedPath(got)
			if p != tt.unified || ok != tt.hasUnified {
				t.Errorf("UnifiedPath: got (%q, %v); want (%q, %v)", p, ok, tt.unified, tt.hasUnified)
			}
		})
	}
}

func TestParseCgroupErrors(t *testing.T) {
	for _, in := range []string{"0:/\n", "x::/\n", "-1::/\n", "nocolons\n"} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseCgroup(strings.NewReader(in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, 1)
		})
	}
}

func TestParseChildren(t *testing.T) {
	tests := []struct {
		in   string
		want []int
	}{
		{"", nil},
		{"\n", nil},
		{"12 ", []int{12}},
		{"12 34 ", []int{12, 34}},
		{"12 34 4194304\n", []int{12, 34, 4194304}},
	}
	for _, tt := range tests {
		got, err := ParseChildren(strings.NewReader(tt.in))
		if err != nil {
			t.Errorf("ParseChildren(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseChildren(%q): got %v; want %v", tt.in, got, tt.want)
		}
	}
	for _, in := range []string{"12 x ", "0", "-3", "1 " + strings.Repeat("9", 100)} {
		got, err := ParseChildren(strings.NewReader(in))
		if err == nil {
			t.Errorf("ParseChildren(%q): got %v, nil error; want an error", in, got)
			continue
		}
		wantParseError(t, err, 1)
	}
}
