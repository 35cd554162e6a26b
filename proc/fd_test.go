package proc

import (
	"bufio"
	"bytes"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestClassifyFD(t *testing.T) {
	tests := []struct {
		target string
		want   FD // Num and Target are filled in
	}{
		// Targets seen on Linux 6.18 (testdata/fd_links*.txt).
		{"/dev/null", FD{Kind: FDFile}},
		{"/etc/hostname", FD{Kind: FDFile}},
		{"/tmp/cap/gone (deleted)", FD{Kind: FDFile}},
		{"/tmp/cap/with space=eq", FD{Kind: FDFile}},
		{"socket:[17119]", FD{Kind: FDSocket, Inode: 17119}},
		{"pipe:[17127]", FD{Kind: FDPipe, Inode: 17127}},
		{"anon_inode:[eventfd]", FD{Kind: FDAnon, AnonType: "eventfd"}},
		{"anon_inode:[eventpoll]", FD{Kind: FDAnon, AnonType: "eventpoll"}},
		{"anon_inode:[signalfd]", FD{Kind: FDAnon, AnonType: "signalfd"}},
		{"anon_inode:[timerfd]", FD{Kind: FDAnon, AnonType: "timerfd"}},
		{"anon_inode:inotify", FD{Kind: FDAnon, AnonType: "inotify"}},
		{"anon_inode:[fanotify]", FD{Kind: FDAnon, AnonType: "fanotify"}},
		{"anon_inode:[pidfd]", FD{Kind: FDAnon, AnonType: "pidfd"}},
		{"anon_inode:[io_uring]", FD{Kind: FDAnon, AnonType: "io_uring"}},
		{"anon_inode:[perf_event]", FD{Kind: FDAnon, AnonType: "perf_event"}},
		{"anon_inode:[userfaultfd]", FD{Kind: FDAnon, AnonType: "userfaultfd"}},
		{"anon_inode:kvm-vm", FD{Kind: FDAnon, AnonType: "kvm-vm"}},
		{"anon_inode:kvm-vcpu:0", FD{Kind: FDAnon, AnonType: "kvm-vcpu:0"}},
		{"anon_inode:bpf-map", FD{Kind: FDAnon, AnonType: "bpf-map"}},
		{"/dev/kvm", FD{Kind: FDFile}},
		{"/memfd:buf (deleted)", FD{Kind: FDMemfd}},
		{"/memfd:clone bot (deleted)", FD{Kind: FDMemfd}},
		{"/dev/ptmx", FD{Kind: FDTTY}},
		{"/dev/pts/0", FD{Kind: FDTTY}},
		{"/dev/console", FD{Kind: FDTTY}},
		// Others.
		{"/dev/pts/ptmx", FD{Kind: FDTTY}},
		{"/dev/tty", FD{Kind: FDTTY}},
		{"/dev/ttyS0", FD{Kind: FDTTY}},
		{"/dev/pts/", FD{Kind: FDFile}},
		{"/dev/ttyfoo/bar", FD{Kind: FDFile}},
		{"/dev/nvidia0", FD{Kind: FDFile}},
		{"net:[4026531840]", FD{Kind: FDOther}},
		{"socket:[x]", FD{Kind: FDOther}},
		{"socket:[]", FD{Kind: FDOther}},
		{"pipe:17127", FD{Kind: FDOther}},
		{"anon_inode:", FD{Kind: FDAnon}},
		{"anon_inode:[]", FD{Kind: FDAnon}},
		{"", FD{Kind: FDOther}},
	}
	for i, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			tt.want.Num, tt.want.Target = i, tt.target
			if got := ClassifyFD(i, tt.target); got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestClassifyFDCaptures checks that every descriptor in the captures gets a
// specific kind.
func TestClassifyFDCaptures(t *testing.T) {
	for _, file := range []string{"fd_links.txt", "fd_links_kinds.txt"} {
		sc := bufio.NewScanner(bytes.NewReader(readTestdata(t, file)))
		for sc.Scan() {
			num, target, _ := strings.Cut(sc.Text(), " ")
			n, err := strconv.Atoi(num)
			if err != nil {
				t.Fatalf("%s: bad line %q", file, sc.Text())
			}
			if fd := ClassifyFD(n, target); fd.Kind == FDOther {
				t.Errorf("%s: ClassifyFD(%d, %q) got kind %q; want a specific kind", file, n, target, fd.Kind)
			}
		}
	}
}

func TestFDUnsupported(t *testing.T) {
	tests := []struct {
		target string
		reason string // "" means supported
	}{
		{"anon_inode:[io_uring]", "io_uring instance"},
		{"anon_inode:[perf_event]", "perf_event counter"},
		{"anon_inode:[userfaultfd]", "userfaultfd"},
		{"anon_inode:kvm-vm", "KVM virtual machine"},
		{"anon_inode:kvm-vcpu:0", "KVM vCPU"},
		{"anon_inode:[vfio-device]", "VFIO object vfio-device"},
		{"/dev/kvm", "KVM device /dev/kvm"},
		{"/dev/nvidia0", "GPU device /dev/nvidia0"},
		{"/dev/nvidiactl", "GPU device /dev/nvidiactl"},
		{"/dev/nvidia-uvm", "GPU device /dev/nvidia-uvm"},
		{"/dev/dri/renderD128", "GPU device /dev/dri/renderD128"},
		{"/dev/kfd", "GPU device /dev/kfd"},
		{"/dev/vfio/vfio", "VFIO device /dev/vfio/vfio"},
		{"/dev/vfio/12", "VFIO device /dev/vfio/12"},
		// CRIU 4.2 dumps these.
		{"anon_inode:[eventfd]", ""},
		{"anon_inode:[eventpoll]", ""},
		{"anon_inode:[signalfd]", ""},
		{"anon_inode:[timerfd]", ""},
		{"anon_inode:inotify", ""},
		{"anon_inode:[fanotify]", ""},
		{"anon_inode:[pidfd]", ""},
		{"anon_inode:bpf-map", ""},
		{"/memfd:buf (deleted)", ""},
		{"/dev/null", ""},
		{"/dev/pts/3", ""},
		{"socket:[1]", ""},
		{"pipe:[1]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			reason, bad := ClassifyFD(3, tt.target).Unsupported()
			if reason != tt.reason || bad != (tt.reason != "") {
				t.Errorf("got (%q, %v); want (%q, %v)", reason, bad, tt.reason, tt.reason != "")
			}
		})
	}
}

func TestParseFDInfo(t *testing.T) {
	tests := []struct {
		file string
		want FDInfo
	}{
		{"fdinfo_socket.txt", FDInfo{Flags: 02000002, MntID: 10, Ino: 17119}},
		{"fdinfo_file.txt", FDInfo{Pos: 3, Flags: 02100000, MntID: 27, Ino: 611}},
		{"fdinfo_memfd.txt", FDInfo{Flags: 02100002, MntID: 0, Ino: 1029}},
		{"fdinfo_eventfd.txt", FDInfo{Flags: 02000002, MntID: 17, Ino: 12, Extra: map[string]string{
			"eventfd-count": "7", "eventfd-id": "4", "eventfd-semaphore": "0"}}},
		{"fdinfo_epoll.txt", FDInfo{Flags: 02000002, MntID: 17, Ino: 12, Extra: map[string]string{
			"tfd": "12 events:       1c data:                c  pos:0 ino:c sdev:10"}}},
		{"fdinfo_inotify.txt", FDInfo{MntID: 17, Ino: 12, Extra: map[string]string{
			"inotify wd": "1 ino:3c4a3 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000"}}},
		{"fdinfo_fanotify.txt", FDInfo{Flags: 02, MntID: 17, Ino: 12, Extra: map[string]string{
			"fanotify flags": "0 event-flags:8000"}}},
		{"fdinfo_timerfd.txt", FDInfo{Flags: 02, MntID: 17, Ino: 12, Extra: map[string]string{
			"clockid": "1", "ticks": "0", "settime flags": "00", "it_value": "(0, 0)", "it_interval": "(0, 0)"}}},
		{"fdinfo_pidfd.txt", FDInfo{Flags: 02000002, MntID: 4, Ino: 10397, Extra: map[string]string{
			"Pid": "10396", "NSpid": "10396"}}},
		{"fdinfo_signalfd.txt", FDInfo{Flags: 02, MntID: 17, Ino: 12, Extra: map[string]string{"sigmask": "0000000000000200"}}},
		{"fdinfo_userfaultfd.txt", FDInfo{Flags: 02000000, MntID: 17, Ino: 18220, Extra: map[string]string{
			"pending": "0", "total": "0", "API": "aa:0:80000000000001ff"}}},
		{"fdinfo_ptmx.txt", FDInfo{Flags: 0100002, MntID: 24, Ino: 91, Extra: map[string]string{"tty-index": "0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseFDInfo(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseFDInfo: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v;\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseFDInfoIOUring(t *testing.T) {
	got, err := ParseFDInfo(bytes.NewReader(readTestdata(t, "fdinfo_io_uring.txt")))
	if err != nil {
		t.Fatalf("ParseFDInfo: %v", err)
	}
	for k, want := range map[string]string{"SqMask": "0x3", "SqThread": "-1", "PollList": "", "NAPI": "disabled"} {
		if v, ok := got.Extra[k]; !ok || v != want {
			t.Errorf("Extra[%q]: got %q (present %v); want %q", k, v, ok, want)
		}
	}
	if got.Ino != 18219 || got.Flags != 02000002 {
		t.Errorf("got Ino %d Flags %#o; want 18219 02000002", got.Ino, got.Flags)
	}
}

func TestParseFDInfoErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
	}{
		{"empty", "", 0},
		{"no flags", "pos:\t0\n", 0},
		{"bad pos", "pos:\tx\nflags:\t02\n", 1},
		{"decimal flags", "pos:\t0\nflags:\t09\n", 2},
		{"flags overflow", "pos:\t0\nflags:\t077777777777\n", 2},
		{"bad mnt_id", "pos:\t0\nflags:\t02\nmnt_id:\t-\n", 3},
		{"bad ino", "pos:\t0\nflags:\t02\nino:\t-1\n", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFDInfo(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, tt.line)
		})
	}
}
