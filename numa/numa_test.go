package numa

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

var cpuListCases = []struct {
	in      string
	want    []int
	canon   string
	wantErr bool
}{
	{in: "", want: []int{}, canon: ""},
	{in: "\n", want: []int{}, canon: ""},
	{in: "0", want: []int{0}, canon: "0"},
	{in: "0-1\n", want: []int{0, 1}, canon: "0-1"},
	{in: "0-3,8,10-11", want: []int{0, 1, 2, 3, 8, 10, 11}, canon: "0-3,8,10-11"},
	{in: "8,0-3", want: []int{0, 1, 2, 3, 8}, canon: "0-3,8"},
	{in: "0-3,2-5", want: []int{0, 1, 2, 3, 4, 5}, canon: "0-5"},
	{in: "1,2,3", want: []int{1, 2, 3}, canon: "1-3"},
	{in: "5-5", want: []int{5}, canon: "5"},
	{in: "8191", want: []int{8191}, canon: "8191"},
	{in: "8192", wantErr: true},
	{in: "0-99999", wantErr: true},
	{in: "3-1", wantErr: true},
	{in: "a", wantErr: true},
	{in: "1,", wantErr: true},
	{in: ",1", wantErr: true},
	{in: "1,,2", wantErr: true},
	{in: "-1", wantErr: true},
	{in: "1-", wantErr: true},
	{in: "1-2-3", wantErr: true},
	{in: "+1", wantErr: true},
	{in: "1 ,2", wantErr: true},
	{in: "0-7:2/4", wantErr: true},
	{in: "0x3", wantErr: true},
	{in: "99999999999999999999", wantErr: true},
}

func TestParseCPUList(t *testing.T) {
	for _, tc := range cpuListCases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCPUList(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseCPUList(%q) = %v; want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCPUList(%q): %v", tc.in, err)
			}
			if got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseCPUList(%q) = %#v; want %#v", tc.in, got, tc.want)
			}
			if s := FormatCPUList(got); s != tc.canon {
				t.Fatalf("FormatCPUList(%v) = %q; want %q", got, s, tc.canon)
			}
			again, err := ParseCPUList(tc.canon)
			if err != nil || !slices.Equal(again, got) {
				t.Fatalf("round trip of %q: got %v, %v; want %v", tc.canon, again, err, got)
			}
		})
	}
}

func TestFormatCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{}, ""},
		{[]int{3, 1, 2, 2}, "1-3"},
		{[]int{0, 2, 4}, "0,2,4"},
		{[]int{10, 11}, "10-11"},
		{[]int{-1, 0}, "0"},
	} {
		if got := FormatCPUList(tc.in); got != tc.want {
			t.Errorf("FormatCPUList(%v) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseCPUList(f *testing.F) {
	for _, tc := range cpuListCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err != nil {
			return
		}
		canon := FormatCPUList(cpus)
		again, err := ParseCPUList(canon)
		if err != nil {
			t.Fatalf("ParseCPUList(FormatCPUList(%v) = %q): %v", cpus, canon, err)
		}
		if !slices.Equal(again, cpus) {
			t.Fatalf("round trip of %q: got %v; want %v", s, again, cpus)
		}
		if FormatCPUList(again) != canon {
			t.Fatalf("format not canonical for %q", s)
		}
	})
}

func TestParseMeminfo(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		total, free uint64
		wantErr     bool
	}{
		{
			name: "node",
			in: "Node 0 MemTotal:        4809284 kB\nNode 0 MemFree:         3482060 kB\n" +
				"Node 0 MemUsed:         1327224 kB\nNode 0 HugePages_Total:     0\n",
			total: 4809284 * 1024, free: 3482060 * 1024,
		},
		{
			name:  "node12",
			in:    "Node 12 MemFree:  1 kB\nNode 12 MemTotal:  24576000 kB\n",
			total: 24576000 * 1024, free: 1024,
		},
		{
			name:  "proc",
			in:    "MemTotal:       24682416 kB\nMemFree:        20000000 kB\nMemAvailable:   21000000 kB\n",
			total: 24682416 * 1024, free: 20000000 * 1024,
		},
		{name: "no total", in: "Node 0 MemFree: 5 kB\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "garbage number", in: "Node 0 MemTotal: x kB\n", wantErr: true},
		{name: "no unit", in: "Node 0 MemTotal: 5\n", wantErr: true},
		{name: "negative", in: "Node 0 MemTotal: -5 kB\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mi, err := ParseMeminfo(strings.NewReader(tc.in))
			total, free := mi.Total, mi.Free
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %d, %d, nil; want an error", total, free)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if total != tc.total || free != tc.free {
				t.Fatalf("got total %d free %d; want %d %d", total, free, tc.total, tc.free)
			}
		})
	}
}

func TestParseMeminfoAvailable(t *testing.T) {
	mi, err := ParseMeminfo(strings.NewReader("MemTotal:       24682416 kB\nMemFree:        20000000 kB\nMemAvailable:   21000000 kB\nBuffers:  5 kB\n"))
	if err != nil || mi != (Meminfo{Total: 24682416 << 10, Free: 20000000 << 10, Available: 21000000 << 10}) {
		t.Fatalf("got %+v, %v; want total, free and available in bytes", mi, err)
	}
	if _, err := ParseMeminfo(strings.NewReader("MemTotal: 5 kB\nMemAvailable: 5 MB\n")); err == nil {
		t.Fatalf("MemAvailable in MB: got no error; want one")
	}
	if mi, err := ReadMeminfo(); err != nil || mi.Total == 0 || mi.Available == 0 || mi.Available > mi.Total {
		t.Fatalf("ReadMeminfo: got %+v, %v; want 0 < available <= total", mi, err)
	}
}

// FuzzParseMeminfo: never panics; what it returns fits in the kB range.
func FuzzParseMeminfo(f *testing.F) {
	f.Add("MemTotal: 5 kB\nMemFree: 3 kB\nMemAvailable: 4 kB\n")
	f.Add("Node 0 MemTotal:        4809284 kB\nNode 0 MemFree:         3482060 kB\n")
	f.Add("MemAvailable: 18446744073709551615 kB\n")
	f.Fuzz(func(t *testing.T, in string) {
		mi, err := ParseMeminfo(strings.NewReader(in))
		if err == nil && (mi.Total > 1<<63 || mi.Free > 1<<63 || mi.Available > 1<<63) {
			t.Fatalf("got %+v: beyond 2^53 kB", mi)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeNodes builds a sysfs node tree: node0 = cpu 0, node1 = cpu 1.
func fakeNodes(t *testing.T) string {
	root := t.TempDir()
	for _, f := range []string{"online", "possible", "has_cpu"} {
		writeFile(t, filepath.Join(root, f), "0-1\n")
	}
	// Written in reverse order, and a non-node entry, to check sorting and filtering.
	writeFile(t, filepath.Join(root, "node1", "cpulist"), "1\n")
	writeFile(t, filepath.Join(root, "node1", "meminfo"),
		"Node 1 MemTotal:        2048000 kB\nNode 1 MemFree:         1500000 kB\nNode 1 MemUsed:          548000 kB\n")
	writeFile(t, filepath.Join(root, "node0", "cpulist"), "0\n")
	writeFile(t, filepath.Join(root, "node0", "meminfo"),
		"Node 0 MemTotal:        2048000 kB\nNode 0 MemFree:         1000000 kB\nNode 0 MemUsed:         1048000 kB\n")
	if err := os.Mkdir(filepath.Join(root, "nodefoo"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestReadTopology(t *testing.T) {
	topo, err := ReadTopology(fakeNodes(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Node{
		{ID: 0, CPUs: []int{0}, CPUList: "0", MemTotal: 2048000 << 10, MemFree: 1000000 << 10},
		{ID: 1, CPUs: []int{1}, CPUList: "1", MemTotal: 2048000 << 10, MemFree: 1500000 << 10},
	}
	if len(topo.Nodes) != len(want) {
		t.Fatalf("got %d nodes; want %d: %+v", len(topo.Nodes), len(want), topo.Nodes)
	}
	for i, n := range topo.Nodes {
		w := want[i]
		if n.ID != w.ID || !slices.Equal(n.CPUs, w.CPUs) || n.CPUList != w.CPUList || n.MemTotal != w.MemTotal || n.MemFree != w.MemFree {
			t.Errorf("node %d: got %+v; want %+v", i, n, w)
		}
	}
	if ids := topo.IDs(); !slices.Equal(ids, []int{0, 1}) {
		t.Errorf("IDs() = %v; want [0 1]", ids)
	}
	if n, ok := topo.Node(1); !ok || n.CPUList != "1" {
		t.Errorf("Node(1) = %+v, %v; want cpus 1, true", n, ok)
	}
	if _, ok := topo.Node(7); ok {
		t.Errorf("Node(7) found; want not found")
	}
}

func TestReadTopologyBroken(t *testing.T) {
	root := fakeNodes(t)
	writeFile(t, filepath.Join(root, "node1", "cpulist"), "1-0\n")
	if _, err := ReadTopology(root); err == nil || !strings.Contains(err.Error(), "node 1") {
		t.Fatalf("got %v; want an error naming node 1", err)
	}
}

func TestReadTopologyWithoutNUMA(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "online"), "0-3\n")
	writeFile(t, filepath.Join(dir, "meminfo"), "MemTotal:  1000 kB\nMemFree:  600 kB\nMemAvailable:  700 kB\n")
	replace(t, &cpuOnlinePath, filepath.Join(dir, "online"))
	replace(t, &procMeminfoPath, filepath.Join(dir, "meminfo"))
	for _, root := range []string{filepath.Join(dir, "missing"), t.TempDir()} {
		topo, err := ReadTopology(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(topo.Nodes) != 1 {
			t.Fatalf("got %d nodes; want 1", len(topo.Nodes))
		}
		n := topo.Nodes[0]
		if n.ID != 0 || n.CPUList != "0-3" || n.MemTotal != 1000<<10 || n.MemFree != 600<<10 {
			t.Fatalf("got %+v; want node 0, cpus 0-3, 1000 kB total, 600 kB free", n)
		}
	}
}

func TestReadTopologyHost(t *testing.T) {
	topo, err := ReadTopology(DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Nodes) == 0 || topo.Nodes[0].MemTotal == 0 || len(topo.Nodes[0].CPUs) == 0 {
		t.Fatalf("implausible host topology %+v", topo.Nodes)
	}
	t.Logf("host NUMA nodes: %+v", topo.Nodes)
}

func twoNodes() *Topology {
	return &Topology{Nodes: []Node{
		{ID: 0, CPUs: []int{0}, CPUList: "0", MemTotal: 8 << 30, MemFree: 2 << 30},
		{ID: 1, CPUs: []int{1}, CPUList: "1", MemTotal: 8 << 30, MemFree: 4 << 30},
	}}
}

func TestChoose(t *testing.T) {
	topo := twoNodes()
	for _, tc := range []struct {
		name string
		p    api.Placement
		in   Inputs
		want int
	}{
		{"same by target bytes", "same", Inputs{TargetBytes: map[int]uint64{0: 100, 1: 10}}, 0},
		{"default is same", "", Inputs{TargetBytes: map[int]uint64{0: 10, 1: 100}}, 1},
		{"same tie lowest id", "same", Inputs{TargetBytes: map[int]uint64{0: 50, 1: 50}}, 0},
		{"same no data most free", "same", Inputs{}, 1},
		{"same skips full node", "same", Inputs{TargetBytes: map[int]uint64{0: 100}, NeedBytes: 3 << 30}, 1},
		{"same fits", "same", Inputs{TargetBytes: map[int]uint64{0: 100}, NeedBytes: 2 << 30}, 0},
		{"spread most free", "spread", Inputs{}, 1},
		{"spread fewer clones", "spread", Inputs{ClonesPerNode: map[int]int{1: 1}}, 0},
		{"spread tie on clones", "spread", Inputs{ClonesPerNode: map[int]int{0: 2, 1: 2}}, 1},
		{"spread skips full node", "spread", Inputs{ClonesPerNode: map[int]int{1: 1}, NeedBytes: 3 << 30}, 1},
		{"explicit", "0", Inputs{TargetBytes: map[int]uint64{1: 100}}, 0},
		{"explicit 1", "1", Inputs{NeedBytes: 4 << 30}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Topology = topo
			got, err := Choose(tc.p, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Choose(%q) = %d; want %d", tc.p, got, tc.want)
			}
		})
	}
}

func TestChooseSpreadAlternates(t *testing.T) {
	in := Inputs{Topology: twoNodes(), ClonesPerNode: map[int]int{}}
	var got []int
	for range 4 {
		n, err := Choose(api.PlaceSpread, in)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		in.ClonesPerNode[n]++
	}
	if want := []int{1, 0, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("successive spread placements = %v; want %v", got, want)
	}
}

func TestChooseErrors(t *testing.T) {
	topo := twoNodes()

	_, err := Choose("7", Inputs{Topology: topo})
	var nsn *NoSuchNodeError
	if !errors.As(err, &nsn) {
		t.Fatalf("Choose(7) error = %v; want *NoSuchNodeError", err)
	}
	if nsn.Node != 7 || !slices.Equal(nsn.Have, []int{0, 1}) {
		t.Errorf("got %+v; want node 7, have [0 1]", nsn)
	}
	if msg := err.Error(); !strings.Contains(msg, "7") || !strings.Contains(msg, "0, 1") {
		t.Errorf("message %q does not name node 7 and the nodes 0, 1", msg)
	}

	for _, p := range []api.Placement{"1", "same", "spread"} {
		_, err = Choose(p, Inputs{Topology: topo, NeedBytes: 5 << 30})
		var nme *NoMemoryError
		if !errors.As(err, &nme) {
			t.Fatalf("Choose(%q) error = %v; want *NoMemoryError", p, err)
		}
		if nme.Node != 1 || nme.Need != 5<<30 || nme.Free != 4<<30 {
			t.Errorf("Choose(%q): got %+v; want node 1, need 5 GiB, free 4 GiB", p, nme)
		}
		if msg := err.Error(); !strings.Contains(msg, "5120 MiB") || !strings.Contains(msg, "4096 MiB") || !strings.Contains(msg, "another node") {
			t.Errorf("message %q lacks the numbers in MiB or the hint", msg)
		}
	}

	if _, err := Choose("bogus", Inputs{Topology: topo}); err == nil {
		t.Errorf("Choose(bogus): got nil error")
	}
	if _, err := Choose("same", Inputs{}); err == nil {
		t.Errorf("Choose without topology: got nil error")
	}
	memOnly := &Topology{Nodes: []Node{{ID: 0, CPUs: []int{0}, MemFree: 1}, {ID: 1, MemFree: 100}}}
	if n, err := Choose("same", Inputs{Topology: memOnly, TargetBytes: map[int]uint64{1: 100}}); err != nil || n != 0 {
		t.Errorf("same with a memory-only node: got %d, %v; want 0", n, err)
	}
	if _, err := Choose("1", Inputs{Topology: memOnly}); err == nil {
		t.Errorf("explicit memory-only node: got nil error")
	}
}

func TestLocalFraction(t *testing.T) {
	for _, tc := range []struct {
		bytes map[int]uint64
		node  int
		want  float64
	}{
		{nil, 0, 0},
		{map[int]uint64{0: 0, 1: 0}, 0, 0},
		{map[int]uint64{0: 300, 1: 100}, 0, 0.75},
		{map[int]uint64{0: 300, 1: 100}, 1, 0.25},
		{map[int]uint64{0: 300}, 2, 0},
		{map[int]uint64{1: 5}, 1, 1},
	} {
		if got := LocalFraction(tc.bytes, tc.node); got != tc.want {
			t.Errorf("LocalFraction(%v, %d) = %v; want %v", tc.bytes, tc.node, got, tc.want)
		}
	}
}
