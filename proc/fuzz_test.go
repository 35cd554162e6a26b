package proc

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// Every parser must reject bad input with a *ParseError and never panic. The
// seeds are the testdata captures.

func checkErr(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if err != nil && !errors.As(err, &pe) {
		t.Fatalf("got error %v (%T); want a *ParseError", err, err)
	}
	if pe != nil {
		_ = pe.Error()
		if len(pe.Text) > maxErrText+3 {
			t.Fatalf("got ParseError.Text of %d bytes; want at most %d", len(pe.Text), maxErrText+3)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	seedFromTestdata(f, "status_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatus(bytes.NewReader(b))
		checkErr(t, err)
		if (s == nil) == (err == nil) {
			t.Fatalf("got %v, %v; want exactly one of result and error", s, err)
		}
	})
}

func FuzzParseStat(f *testing.F) {
	seedFromTestdata(f, "stat_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(bytes.NewReader(b))
		checkErr(t, err)
		if err == nil {
			_ = s.IsKernelThread()
			if strings.Count(string(b), "(") == 0 {
				t.Fatalf("parsed %q without a '('", b)
			}
		}
	})
}

func FuzzParseMaps(f *testing.F) {
	seedFromTestdata(f, "maps_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		maps, err := ParseMaps(bytes.NewReader(b))
		checkErr(t, err)
		for _, m := range maps {
			if m.End < m.Start || m.Size() != m.End-m.Start {
				t.Fatalf("got %+v with Size %d", m, m.Size())
			}
		}
	})
}

func FuzzParseNUMAMaps(f *testing.F) {
	seedFromTestdata(f, "numa_maps_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		maps, err := ParseNUMAMaps(bytes.NewReader(b))
		checkErr(t, err)
		for _, m := range maps {
			if m.Policy == "" || m.Anon < 0 || m.Dirty < 0 || m.Mapped < 0 || m.PageSizeKB < 0 {
				t.Fatalf("got %+v", m)
			}
			for _, n := range m.Nodes {
				if n < 0 {
					t.Fatalf("got negative node count in %+v", m)
				}
			}
		}
		_ = NodeBytes(maps)
	})
}

func FuzzParseFDInfo(f *testing.F) {
	seedFromTestdata(f, "fdinfo_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := ParseFDInfo(bytes.NewReader(b))
		checkErr(t, err)
		if (fi == nil) == (err == nil) {
			t.Fatalf("got %v, %v; want exactly one of result and error", fi, err)
		}
	})
}

func FuzzParseChildren(f *testing.F) {
	for _, s := range []string{"", "12 34 ", "1\n", "4194304 2 3", "x", "-1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kids, err := ParseChildren(bytes.NewReader(b))
		checkErr(t, err)
		for _, k := range kids {
			if k <= 0 {
				t.Fatalf("got PID %d", k)
			}
		}
	})
}

func FuzzParseCgroup(f *testing.F) {
	seedFromTestdata(f, "cgroup_*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		cg, err := ParseCgroup(bytes.NewReader(b))
		checkErr(t, err)
		if p, ok := UnifiedPath(cg); !ok && p != "" {
			t.Fatalf("UnifiedPath: got %q without a v2 line", p)
		}
	})
}

func FuzzParseNetTCP(f *testing.F) {
	seedFromTestdata(f, "net_tcp*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		socks, err := ParseNetTCP(bytes.NewReader(b))
		checkErr(t, err)
		for _, s := range socks {
			if !s.Local.IsValid() || !s.Remote.IsValid() || s.Local.Addr().BitLen() != s.Remote.Addr().BitLen() {
				t.Fatalf("got %+v", s)
			}
			_ = s.State.String()
		}
	})
}

func FuzzClassifyFD(f *testing.F) {
	for _, file := range []string{"fd_links.txt", "fd_links_kinds.txt"} {
		sc := bufio.NewScanner(bytes.NewReader(readTestdata(f, file)))
		for sc.Scan() {
			num, target, _ := strings.Cut(sc.Text(), " ")
			n, _ := strconv.Atoi(num)
			f.Add(n, target)
		}
	}
	f.Add(3, "/dev/dri/renderD128")
	f.Add(4, "anon_inode:[vfio-device]")
	f.Fuzz(func(t *testing.T, num int, target string) {
		fd := ClassifyFD(num, target)
		if fd.Num != num || fd.Target != target || fd.Kind == "" {
			t.Fatalf("ClassifyFD(%d, %q) = %+v", num, target, fd)
		}
		if fd.Inode != 0 && fd.Kind != FDSocket && fd.Kind != FDPipe {
			t.Fatalf("ClassifyFD(%d, %q) = %+v: inode on a %s", num, target, fd, fd.Kind)
		}
		if fd.AnonType != "" && fd.Kind != FDAnon {
			t.Fatalf("ClassifyFD(%d, %q) = %+v: AnonType on a %s", num, target, fd, fd.Kind)
		}
		if reason, bad := fd.Unsupported(); bad != (reason != "") {
			t.Fatalf("Unsupported() = (%q, %v)", reason, bad)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("/usr/bin/python3\x00-m\x00http.server\x00"))
	f.Add([]byte("nginx: master process\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		args := ParseCmdline(b)
		if len(b) > 0 && string(b) != "\x00" && len(args) == 0 {
			t.Fatalf("ParseCmdline(%q) = none", b)
		}
	})
}
