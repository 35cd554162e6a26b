package proc

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// FDKind is what an open file descriptor refers to, judged from the target of
// its /proc/PID/fd/N symlink.
type FDKind string

// File descriptor kinds.
const (
	// FDFile is a path in the file system, including device nodes other
	// than terminals and deleted files ("/tmp/x (deleted)").
	FDFile FDKind = "file"
	// FDSocket is "socket:[inode]".
	FDSocket FDKind = "socket"
	// FDPipe is "pipe:[inode]".
	FDPipe FDKind = "pipe"
	// FDAnon is an anonymous-inode object: "anon_inode:[eventfd]",
	// "anon_inode:inotify", "anon_inode:kvm-vcpu:0" and so on.
	FDAnon FDKind = "anon_inode"
	// FDTTY is a terminal: /dev/pts/N, /dev/ptmx, /dev/tty*, /dev/console.
	FDTTY FDKind = "tty"
	// FDMemfd is a memfd_create(2) file, "/memfd:name (deleted)".
	FDMemfd FDKind = "memfd"
	// FDOther is anything else, such as a namespace ("net:[4026531840]").
	FDOther FDKind = "other"
)

// FD is one entry of /proc/PID/fd, classified from its readlink target.
type FD struct {
	// Num is the descriptor number.
	Num int
	// Target is the symlink target as read.
	Target string
	// Kind classifies Target.
	Kind FDKind
	// Inode is the inode number of a socket:[N] or pipe:[N] target, which
	// matches Socket.Inode and FDInfo.Ino; 0 for other kinds.
	Inode uint64
	// AnonType is the object type of an FDAnon descriptor with any brackets
	// removed: "eventfd", "eventpoll", "io_uring", "perf_event", "inotify",
	// "bpf-map", "kvm-vcpu:0" and so on; "" for other kinds.
	AnonType string
}

// ClassifyFD classifies descriptor num from target, the result of
// readlink(/proc/PID/fd/num).
func ClassifyFD(num int, target string) FD {
	fd := FD{Num: num, Target: target, Kind: FDOther}
	switch {
	case strings.HasPrefix(target, "socket:"):
		if ino, ok := bracketInode(target[len("socket:"):]); ok {
			fd.Kind, fd.Inode = FDSocket, ino
		}
	case strings.HasPrefix(target, "pipe:"):
		if ino, ok := bracketInode(target[len("pipe:"):]); ok {
			fd.Kind, fd.Inode = FDPipe, ino
		}
	case strings.HasPrefix(target, "anon_inode:"):
		t := target[len("anon_inode:"):]
		if len(t) >= 2 && t[0] == '[' && t[len(t)-1] == ']' {
			t = t[1 : len(t)-1]
		}
		fd.Kind, fd.AnonType = FDAnon, t
	case strings.HasPrefix(target, "/memfd:"):
		fd.Kind = FDMemfd
	case isTTY(target):
		fd.Kind = FDTTY
	case strings.HasPrefix(target, "/"):
		fd.Kind = FDFile
	}
	return fd
}

// bracketInode parses "[123]".
func bracketInode(s string) (uint64, bool) {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(s[1:len(s)-1], 10, 64)
	return n, err == nil
}

func isTTY(p string) bool {
	switch {
	case p == "/dev/console", p == "/dev/ptmx", p == "/dev/pts/ptmx":
		return true
	case strings.HasPrefix(p, "/dev/pts/"):
		n := p[len("/dev/pts/"):]
		return n != "" && strings.Trim(n, "0123456789") == ""
	case strings.HasPrefix(p, "/dev/tty"):
		return !strings.Contains(p[len("/dev/tty"):], "/")
	}
	return false
}

// Unsupported reports whether CRIU (4.2) cannot dump this descriptor, and if
// so a short human reason such as "io_uring instance". It refuses io_uring,
// perf events, userfaultfd, KVM and VFIO objects, and GPU and VFIO device
// files. eventfd, eventpoll, signalfd, timerfd, inotify, fanotify, pidfd,
// bpf-map and memfd descriptors are dumpable and not refused.
func (f FD) Unsupported() (reason string, bad bool) {
	switch f.Kind {
	case FDAnon:
		t := f.AnonType
		switch {
		case t == "io_uring":
			return "io_uring instance", true
		case t == "perf_event":
			return "perf_event counter", true
		case t == "userfaultfd":
			return "userfaultfd", true
		case t == "kvm-vm":
			return "KVM virtual machine", true
		case strings.HasPrefix(t, "kvm-vcpu"):
			return "KVM vCPU", true
		case strings.HasPrefix(t, "vfio"):
			return "VFIO object " + t, true
		}
	case FDFile:
		p := f.Target
		switch {
		case p == "/dev/kvm":
			return "KVM device /dev/kvm", true
		case strings.HasPrefix(p, "/dev/nvidia"), strings.HasPrefix(p, "/dev/dri/"), p == "/dev/kfd":
			return "GPU device " + p, true
		case strings.HasPrefix(p, "/dev/vfio/"):
			return "VFIO device " + p, true
		}
	}
	return "", false
}

// FDInfo is /proc/PID/fdinfo/N: the state of one open file description.
type FDInfo struct {
	// Pos is the file offset.
	Pos int64
	// Flags are the open(2) flags, O_CLOEXEC included (the file prints octal).
	Flags uint32
	// MntID is the ID of the mount the file lives on, as in mountinfo.
	MntID int
	// Ino is the inode number (printed by newer kernels; 0 if absent).
	Ino uint64
	// Extra holds every other "key: value" line, key and value trimmed, the
	// first occurrence of each key winning: "eventfd-count", "tfd" (epoll),
	// "inotify wd", "SqMask" (io_uring) and so on. It is nil when there are
	// none.
	Extra map[string]string
}

// ParseFDInfo parses /proc/PID/fdinfo/N. The pos and flags lines are
// required; lines without a ':' are ignored.
func ParseFDInfo(r io.Reader) (*FDInfo, error) {
	fi := &FDInfo{}
	var havePos, haveFlags bool
	err := eachLine(r, func(line string) error {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if key == "" {
			return nil
		}
		var err error
		switch key {
		case "pos":
			fi.Pos, err = strconv.ParseInt(val, 10, 64)
			havePos = true
		case "flags":
			var fl uint64
			fl, err = strconv.ParseUint(val, 8, 32)
			fi.Flags = uint32(fl)
			haveFlags = true
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(val)
		case "ino":
			fi.Ino, err = strconv.ParseUint(val, 10, 64)
		default:
			if fi.Extra == nil {
				fi.Extra = make(map[string]string)
			}
			if _, dup := fi.Extra[key]; !dup {
				fi.Extra[key] = val
			}
		}
		if err != nil {
			return fmt.Errorf("field %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !havePos || !haveFlags {
		return nil, &ParseError{Err: errors.New("missing pos or flags line")}
	}
	return fi, nil
}
