package proc

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseStatus(t *testing.T) {
	const fullCaps = 0x000001fffeffffff
	tests := []struct {
		file string
		want Status
	}{{
		file: "status_self.txt", // cat /proc/self/status
		want: Status{
			Name: "cat", State: 'R', Tgid: 11435, Pid: 11435, PPid: 11382,
			Threads: 1, NSpid: []int{11435}, NSpgid: []int{11382}, NSsid: []int{8208},
			CapEff: fullCaps, CapBnd: fullCaps, CapPrm: fullCaps,
			VmRSS: 1760 << 10, VmSize: 3060 << 10, RssAnon: 112 << 10,
			CpusAllowedList: "0-1", MemsAllowedList: "0",
		},
	}, {
		file: "status_kthreadd.txt", // PID 2: no memory, Kthread: 1
		want: Status{
			Name: "kthreadd", State: 'S', Tgid: 2, Pid: 2, Threads: 1,
			NSpid: []int{2}, NSpgid: []int{0}, NSsid: []int{0},
			CapEff: 0x000001ffffffffff, CapBnd: 0x000001ffffffffff, CapPrm: 0x000001ffffffffff,
			CpusAllowedList: "0-1", MemsAllowedList: "0", Kthread: true,
			SigIgn: 0xffffffffffffffff,
		},
	}, {
		file: "status_nested_pidns.txt", // sleep under unshare --pid --fork
		want: Status{
			Name: "sleep", State: 'S', Tgid: 12236, Pid: 12236, PPid: 12234, Threads: 1,
			NSpid: []int{12236, 1}, NSpgid: []int{12231, 0}, NSsid: []int{8208, 0},
			CapEff: fullCaps, CapBnd: fullCaps, CapPrm: fullCaps,
			VmRSS: 1788 << 10, VmSize: 2920 << 10, RssAnon: 108 << 10,
			CpusAllowedList: "0-1", MemsAllowedList: "0", SigIgn: 6,
		},
	}, {
		file: "status_weird_name.txt", // comm set to "x) y\\z\tq\nr"
		want: Status{
			Name: "x) y\\z\tq\nr", State: 'R', Tgid: 11384, Pid: 11384, PPid: 11382, Threads: 1,
			NSpid: []int{11384}, NSpgid: []int{11382}, NSsid: []int{8208},
			CapEff: fullCaps, CapBnd: fullCaps, CapPrm: fullCaps,
			VmRSS: 13472 << 10, VmSize: 16568 << 10, RssAnon: 6864 << 10,
			CpusAllowedList: "0-1", MemsAllowedList: "0", SigIgn: 0x1001000, SigCgt: 2,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseStatus(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseStatus: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v;\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseStatusHandWritten(t *testing.T) {
	// An old kernel: no Kthread line, nested pid namespace, traced, odd IDs.
	in := "Name:\tmy prog \nState:\tt (tracing stop)\nTgid:\t4242\nPid:\t4243\nPPid:\t1\nTracerPid:\t77\n" +
		"Uid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\nNSpid:\t4243\t1\nThreads:\t2\n" +
		"SigBlk:\t0000000000010000\nVmRSS:\t       0 kB\n"
	got, err := ParseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ParseStatus: %v", err)
	}
	want := Status{
		Name: "my prog ", State: 't', Tgid: 4242, Pid: 4243, PPid: 1, TracerPid: 77,
		Uid: [4]int{1000, 1001, 1002, 1003}, Gid: [4]int{5, 6, 7, 8},
		NSpid: []int{4243, 1}, Threads: 2, SigBlk: 1 << 16,
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("got  %+v;\nwant %+v", *got, want)
	}
}

func TestParseStatusErrors(t *testing.T) {
	const ok = "Name:\tx\nState:\tS (sleeping)\nPid:\t1\n"
	tests := []struct {
		name, in string
		line     int
	}{
		{"missing pid", "Name:\tx\nState:\tS (sleeping)\n", 0},
		{"missing name", "State:\tS\nPid:\t1\n", 0},
		{"empty", "", 0},
		{"no colon", ok + "garbage\n", 4},
		{"bad pid", "Name:\tx\nState:\tS\nPid:\tone\n", 3},
		{"three uids", ok + "Uid:\t0\t0\t0\n", 4},
		{"bad unit", ok + "VmRSS:\t12 MB\n", 4},
		{"kB overflow", ok + "VmRSS:\t18446744073709551615 kB\n", 4},
		{"bad cap", ok + "CapEff:\txyz\n", 4},
		{"bad kthread", ok + "Kthread:\t2\n", 4},
		{"empty state", "Name:\tx\nState:\t\nPid:\t1\n", 2},
		{"too long", ok + "Groups:" + strings.Repeat(" 1", maxLine) + "\n", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatus(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, tt.line)
		})
	}
	_, err := ParseStatus(strings.NewReader(ok + "Groups:" + strings.Repeat(" 1", maxLine) + "\n"))
	if !errors.Is(err, bufio.ErrTooLong) {
		t.Errorf("got %v; want an error wrapping bufio.ErrTooLong", err)
	}
}
