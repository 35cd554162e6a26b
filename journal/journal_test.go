package journal

import (
	"bufio"
	"strings"
	"testing"
)

func TestMarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    StreamHeader
		want string
	}{
		{"service defaults", ServiceHeader("goserver-clone-0123456789ab"), "goserver-clone-0123456789ab\n\n6\n1\n0\n0\n0\n"},
		{"everything", StreamHeader{Identifier: "x", UnitID: "x.service", Priority: 3, ForwardToSyslog: true, ForwardToKmsg: true, ForwardToConsole: true},
			"x\nx.service\n3\n0\n1\n1\n1\n"},
		{"empty identifier", StreamHeader{Priority: PriorityDebug}, "\n\n7\n0\n0\n0\n0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.h.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if string(b) != tc.want {
				t.Errorf("got %q; want %q", b, tc.want)
			}
			back, err := ReadStreamHeader(bufio.NewReader(strings.NewReader(string(b) + "first line\n")))
			if err != nil {
				t.Fatalf("ReadStreamHeader: %v", err)
			}
			if back != tc.h {
				t.Errorf("read back %+v; want %+v", back, tc.h)
			}
		})
	}
}

func TestMarshalRefuses(t *testing.T) {
	for _, h := range []StreamHeader{
		{Identifier: "a\nb", Priority: 6},
		{UnitID: "a\x00", Priority: 6},
		{Priority: 8},
		{Priority: -1},
	} {
		if b, err := h.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) = %q, nil; want an error", h, b)
		}
	}
}

func TestReadStreamHeader(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("nginx\nnginx.service\n30\nyes\nfalse\noff\nn\nhello\nworld\n"))
	h, err := ReadStreamHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	want := StreamHeader{Identifier: "nginx", UnitID: "nginx.service", Priority: 30, LevelPrefix: true}
	if h != want {
		t.Errorf("got %+v; want %+v", h, want)
	}
	line, _ := r.ReadString('\n')
	if line != "hello\n" {
		t.Errorf("after the header got %q; want the first log line", line)
	}
	for _, bad := range []string{
		"",
		"id\n\n6\n1\n0\n0\n",      // one line short
		"id\n\nsix\n1\n0\n0\n0\n", // priority
		"id\n\n6\nmaybe\n0\n0\n0\n",
		"id\n\n1000\n1\n0\n0\n0\n",
	} {
		if h, err := ReadStreamHeader(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("ReadStreamHeader(%q) = %+v, nil; want an error", bad, h)
		}
	}
	long := strings.Repeat("x", MaxHeaderLine+1) + "\n\n6\n1\n0\n0\n0\n"
	if _, err := ReadStreamHeader(bufio.NewReaderSize(strings.NewReader(long), 16)); err == nil {
		t.Error("an identifier longer than MaxHeaderLine: got nil; want an error")
	}
}

func FuzzReadStreamHeader(f *testing.F) {
	f.Add("goserver\n\n6\n1\n0\n0\n0\nline\n")
	f.Add("\n\n\n\n\n\n\n")
	f.Add("a\nb\n999\ntrue\nno\nyes\nOFF\n")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ReadStreamHeader(bufio.NewReaderSize(strings.NewReader(s), 16))
		if err != nil {
			return
		}
		if h.Priority > 7 {
			return // journald accepts facility|level; Marshal does not
		}
		b, err := h.Marshal()
		if err != nil {
			return // a NUL in the identifier
		}
		back, err := ReadStreamHeader(bufio.NewReader(strings.NewReader(string(b))))
		if err != nil || back != h {
			t.Fatalf("round trip of %+v: got %+v, %v", h, back, err)
		}
	})
}
