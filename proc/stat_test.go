package proc

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		file    string
		want    Stat
		kthread bool
	}{
		{"stat_self.txt", Stat{PID: 11436, Comm: "cat", State: 'R', PPID: 11382, Flags: 4194304, NumThreads: 1, StartTime: 41745}, false},
		{"stat_python.txt", Stat{PID: 9869, Comm: "python3", State: 'R', PPID: 9865, Flags: 4194304, NumThreads: 1, StartTime: 32653}, false},
		{"stat_kthreadd.txt", Stat{PID: 2, Comm: "kthreadd", State: 'S', PPID: 0, Flags: 2129984, NumThreads: 1, StartTime: 10}, true},
		{"stat_kworker.txt", Stat{PID: 10, Comm: "kworker/0:0H-events_highpri", State: 'I', PPID: 2, Flags: 69238880, NumThreads: 1, StartTime: 10}, true},
		// comm "x) y\\z\tq\nr": stat prints it raw, newline and all.
		{"stat_weird_comm.txt", Stat{PID: 11384, Comm: "x) y\\z\tq\nr", State: 'R', PPID: 11382, Flags: 4194304, NumThreads: 1, StartTime: 41705}, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseStat(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseStat: %v", err)
			}
			if *got != tt.want {
				t.Errorf("got  %+v;\nwant %+v", *got, tt.want)
			}
			if k := got.IsKernelThread(); k != tt.kthread {
				t.Errorf("IsKernelThread() = %v; want %v", k, tt.kthread)
			}
		})
	}
}

func TestParseStatHandWritten(t *testing.T) {
	// A comm that looks like more fields: "a) S 1 (b".
	in := "77 (a) S 1 (b)) Z 1 77 77 0 -1 4194380 0 0 0 0 0 0 0 0 20 0 3 0 123456789012 0 0\n"
	got, err := ParseStat(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ParseStat: %v", err)
	}
	want := Stat{PID: 77, Comm: "a) S 1 (b)", State: 'Z', PPID: 1, Flags: 4194380, NumThreads: 3, StartTime: 123456789012}
	if *got != want {
		t.Errorf("got  %+v;\nwant %+v", *got, want)
	}
}

func TestParseStatErrors(t *testing.T) {
	const tail = " 0 0 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 100\n"
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no parens", "1 cat R 0" + tail},
		{"reversed parens", "1 )cat( R 0" + tail},
		{"short", "1 (cat) R 0 0 0\n"},
		{"bad pid", "x (cat) R 0" + tail},
		{"long state", "1 (cat) RR 0" + tail},
		{"bad ppid", "1 (cat) R p" + tail},
		{"flags overflow", "1 (cat) R 0 0 0 0 -1 4294967296 0 0 0 0 0 0 0 0 20 0 1 0 100\n"},
		{"bad threads", "1 (cat) R 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 x 0 100\n"},
		{"bad starttime", "1 (cat) R 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5\n"},
		{"too long", "1 (" + strings.Repeat("a", maxStat) + ") R 0" + tail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, 1)
		})
	}
}
