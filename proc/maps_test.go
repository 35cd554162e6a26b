package proc

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	tests := []struct {
		file  string
		count int
		// spot maps a line index to the Mapping expected there.
		spot map[int]Mapping
	}{{
		file:  "maps_c.txt", // a C program with hugetlb, deleted and "with space=eq" mappings
		count: 28,
		spot: map[int]Mapping{
			0:  {Start: 0x55b65848e000, End: 0x55b65848f000, Perms: "r--p", Dev: "fe:00", Inode: 9978450, Path: "/tmp/cap/fds"},
			5:  {Start: 0x55b68f04a000, End: 0x55b68f06b000, Perms: "rw-p", Dev: "00:00", Path: "[heap]"},
			6:  {Start: 0x7f0416000000, End: 0x7f0416200000, Perms: "rw-p", Dev: "00:11", Inode: 18289, Path: "/anon_hugepage (deleted)"},
			7:  {Start: 0x7f041622e000, End: 0x7f0416231000, Perms: "rw-p", Dev: "00:00"},
			9:  {Start: 0x7f0416257000, End: 0x7f04163ad000, Perms: "r-xp", Offset: 0x26000, Dev: "fe:00", Inode: 326269, Path: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
			15: {Start: 0x7f041641a000, End: 0x7f041641b000, Perms: "r--s", Dev: "fe:00", Inode: 9978386, Path: "/tmp/cap/gone (deleted)"},
			16: {Start: 0x7f041641b000, End: 0x7f041641c000, Perms: "rw-s", Dev: "fe:00", Inode: 9978370, Path: "/tmp/cap/with space=eq"},
			27: {Start: 0xffffffffff600000, End: 0xffffffffff601000, Perms: "--xp", Dev: "00:00", Path: "[vsyscall]"},
		},
	}, {
		file:  "maps_python.txt",
		count: 125,
	}, {
		file:  "maps_edge.txt", // hand-written
		count: 6,
		spot: map[int]Mapping{
			0: {Start: 0x08048000, End: 0x08056000, Perms: "r-xp", Dev: "03:0c", Inode: 64593, Path: "/usr/sbin/gpm"},
			1: {Start: 0x7f0000000000, End: 0x7f0000001000, Perms: "rw-s", Dev: "00:01", Inode: 1034, Path: "/memfd:clone bot (deleted)"},
			2: {Start: 0x7f0000001000, End: 0x7f0000003000, Perms: "rw-p", Dev: "00:00", Path: "[anon:clonebot arena]"},
			3: {Start: 0x7f0000003000, End: 0x7f0000004000, Perms: "r--p", Dev: "fe:00", Inode: 42, Path: "/srv/data/a\nb"},
			4: {Start: 0x7f0000004000, End: 0x7f0000005000, Perms: "r--p", Offset: 0x1000, Dev: "103:02", Inode: 7, Path: "/srv/data/trailing space "},
			5: {Start: 0x7f0000005000, End: 0x7f0000006000, Perms: "---p", Dev: "00:00"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseMaps(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseMaps: %v", err)
			}
			if len(got) != tt.count {
				t.Fatalf("got %d mappings; want %d", len(got), tt.count)
			}
			for i, want := range tt.spot {
				if got[i] != want {
					t.Errorf("mapping %d: got  %+v;\nwant %+v", i, got[i], want)
				}
			}
			for i, m := range got {
				if m.Size() == 0 || m.Size()%4096 != 0 {
					t.Errorf("mapping %d: got Size() %d; want a positive multiple of 4096", i, m.Size())
				}
			}
		})
	}
}

func TestMappingSize(t *testing.T) {
	if got, want := (Mapping{Start: 0x1000, End: 0x3000}).Size(), uint64(0x2000); got != want {
		t.Errorf("got %#x; want %#x", got, want)
	}
	if got := (Mapping{Start: 0x3000, End: 0x1000}).Size(); got != 0 {
		t.Errorf("inverted mapping: got %#x; want 0", got)
	}
}

func TestParseMapsErrors(t *testing.T) {
	const ok = "00400000-00401000 r-xp 00000000 fe:00 1 /bin/x\n"
	tests := []struct {
		name, in string
		line     int
	}{
		{"few fields", ok + "00400000-00401000 r-xp 00000000\n", 2},
		{"no dash", "00400000 r-xp 00000000 fe:00 1\n", 1},
		{"bad start", "0040000g-00401000 r-xp 00000000 fe:00 1\n", 1},
		{"bad end", "00400000-x r-xp 00000000 fe:00 1\n", 1},
		{"end below start", "00402000-00401000 r-xp 00000000 fe:00 1\n", 1},
		{"perms", "00400000-00401000 rwx 00000000 fe:00 1\n", 1},
		{"offset", "00400000-00401000 r-xp zz fe:00 1\n", 1},
		{"device", "00400000-00401000 r-xp 00000000 fe00 1\n", 1},
		{"inode", "00400000-00401000 r-xp 00000000 fe:00 -1\n", 1},
		{"too long", ok + "00400000-00401000 r-xp 00000000 fe:00 1 /" + strings.Repeat("a", maxLine) + "\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMaps(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, tt.line)
		})
	}
}

func TestParseNUMAMaps(t *testing.T) {
	tests := []struct {
		file      string
		count     int
		spot      map[int]NUMAMap
		nodeBytes map[int]uint64
	}{{
		file:  "numa_maps_hugetlb.txt", // the same C program as maps_c.txt
		count: 27,
		spot: map[int]NUMAMap{
			0:  {Addr: 0x55b65848e000, Policy: "default", Path: "/tmp/cap/fds", Dirty: 1, Nodes: map[int]int64{0: 1}, PageSizeKB: 4},
			5:  {Addr: 0x55b68f04a000, Policy: "default", Heap: true, Anon: 3, Dirty: 3, Nodes: map[int]int64{0: 3}, PageSizeKB: 4},
			6:  {Addr: 0x7f0416000000, Policy: "default", Path: "/anon_hugepage (deleted)", Huge: true, Anon: 1, Dirty: 1, Nodes: map[int]int64{0: 1}, PageSizeKB: 2048},
			8:  {Addr: 0x7f0416231000, Policy: "default", Path: "/usr/lib/x86_64-linux-gnu/libc.so.6", Mapped: 37, Nodes: map[int]int64{0: 37}, PageSizeKB: 4},
			15: {Addr: 0x7f041641a000, Policy: "default", Path: "/tmp/cap/gone (deleted)", Mapped: 1, Nodes: map[int]int64{0: 1}, PageSizeKB: 4},
			16: {Addr: 0x7f041641b000, Policy: "default", Path: "/tmp/cap/with space=eq", Dirty: 1, Nodes: map[int]int64{0: 1}, PageSizeKB: 4},
			18: {Addr: 0x7f041641e000, Policy: "default"},
			26: {Addr: 0x7fff55711000, Policy: "default", Stack: true, Anon: 7, Dirty: 7, Nodes: map[int]int64{0: 7}, PageSizeKB: 4},
		},
		nodeBytes: map[int]uint64{0: 3682304},
	}, {
		file:      "numa_maps_python.txt",
		count:     124,
		nodeBytes: map[int]uint64{0: 15040512},
	}, {
		file:      "numa_maps_policies.txt", // mbind(2) with every mode and flag
		count:     31,
		nodeBytes: map[int]uint64{0: 1327104},
	}, {
		file:  "numa_maps_edge.txt", // hand-written: several nodes, 1 GiB pages
		count: 5,
		spot: map[int]NUMAMap{
			0: {Addr: 0x7f0000000000, Policy: "bind:0-1", Anon: 1024, Dirty: 1024, Nodes: map[int]int64{0: 512, 1: 512}, PageSizeKB: 4},
			1: {Addr: 0x7f0040000000, Policy: "weighted interleave=static:0-1", Anon: 6, Dirty: 6, Nodes: map[int]int64{0: 3, 1: 3}, PageSizeKB: 4},
			2: {Addr: 0x7f0080000000, Policy: "default", Path: "/dev/hugepages/db buf", Huge: true, Dirty: 2, Nodes: map[int]int64{1: 2}, PageSizeKB: 1 << 20},
			3: {Addr: 0x7f00c0000000, Policy: "prefer (many)=relative:1", Path: "/srv/a=b\tc\\134d", Mapped: 5, Nodes: map[int]int64{0: 5}, PageSizeKB: 4},
			4: {Addr: 0x7f0100000000, Policy: "default", Stack: true, Anon: 3, Dirty: 3, Nodes: map[int]int64{2: 3}, PageSizeKB: 4},
		},
		nodeBytes: map[int]uint64{0: 520 * 4096, 1: 515*4096 + 2<<30, 2: 3 * 4096},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseNUMAMaps(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseNUMAMaps: %v", err)
			}
			if len(got) != tt.count {
				t.Fatalf("got %d areas; want %d", len(got), tt.count)
			}
			for i, want := range tt.spot {
				if !reflect.DeepEqual(got[i], want) {
					t.Errorf("area %d: got  %+v;\nwant %+v", i, got[i], want)
				}
			}
			if nb := NodeBytes(got); !reflect.DeepEqual(nb, tt.nodeBytes) {
				t.Errorf("NodeBytes: got %v; want %v", nb, tt.nodeBytes)
			}
		})
	}
}

func TestNUMAMapsPolicies(t *testing.T) {
	got, err := ParseNUMAMaps(bytes.NewReader(readTestdata(t, "numa_maps_policies.txt")))
	if err != nil {
		t.Fatalf("ParseNUMAMaps: %v", err)
	}
	seen := make(map[string]bool)
	for _, m := range got {
		seen[m.Policy] = true
	}
	for _, want := range []string{
		"default", "prefer:0", "bind:0", "interleave:0", "weighted interleave:0",
		"prefer (many):0", "local", "bind=static:0", "interleave=relative:0",
	} {
		if !seen[want] {
			t.Errorf("policy %q not found; got %v", want, seen)
		}
	}
}

func TestNodeBytes(t *testing.T) {
	got := NodeBytes([]NUMAMap{
		{Nodes: map[int]int64{0: 2}},                         // no page size: 4 KiB assumed
		{Nodes: map[int]int64{0: 1, 3: 1}, PageSizeKB: 2048}, // 2 MiB pages
		{Nodes: map[int]int64{5: 0}, PageSizeKB: 4},          // nothing resident
	})
	want := map[int]uint64{0: 2*4096 + 2<<20, 3: 2 << 20}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	if got := NodeBytes(nil); got == nil || len(got) != 0 {
		t.Errorf("NodeBytes(nil): got %#v; want an empty map", got)
	}
}

func TestParseNUMAMapsErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"address only", "7f0000000000\n"},
		{"bad address", "7f00000g0000 default\n"},
		{"bad anon", "7f0000000000 default anon=x\n"},
		{"negative node", "7f0000000000 default N0=-1\n"},
		{"bad pagesize", "7f0000000000 default kernelpagesize_kB=4k\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNUMAMaps(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, 1)
		})
	}
}
