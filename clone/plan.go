package clone

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/clonebot/clonebot/proc"
)

// ProcInfo is what preflight learned about one process of the target tree.
type ProcInfo struct {
	PID    int
	Status *proc.Status
	Stat   *proc.Stat
	FDs    []proc.FD
	// Flags holds the open flags of the fds that planning needs (pipes,
	// ttys, stdout and stderr), by fd number.
	Flags map[int]uint32
	// FileKeys are CRIU's names (file[mnt_id:inode]) of the regular files
	// on stdout and stderr, by fd number.
	FileKeys map[int]string
}

// Inherit is a resource of the original that the clone gets a substitute
// for: Key is CRIU's name for it, Path what the clone's init opens instead.
type Inherit struct {
	Key   string
	Path  string
	Flags int
	// Why names the original's fds, for the record's warnings.
	Why string
}

// StdioPlan says how the clone gets resources it cannot share with the
// original: its end of a pipe whose other end lives outside the tree (a
// supervisor's log pipe), or a terminal.
type StdioPlan struct {
	Inherit  []Inherit
	ShellJob bool
	// External are files CRIU must dump as external (file[mnt_id:inode]),
	// so that an Inherit can replace them.
	External []string
}

// PlanStdio decides, from the tree's fd tables, which resources are replaced
// in the clone: a pipe with only one end in the tree becomes logPath (for the
// writing end) or /dev/null (for the reading end); a terminal becomes logPath
// for writers and /dev/null for readers, and the dump is a shell job; a
// regular file on stdout or stderr opened without O_APPEND ("server > log")
// becomes logPath, because the original keeps writing it and CRIU refuses
// to restore a file whose size changed (and the copies would overwrite each
// other's lines). Other files, sockets and pipes internal to the tree are
// restored as they are.
func PlanStdio(tree []ProcInfo, logPath string) StdioPlan {
	type use struct {
		read, write bool
		where       []string
		key         string
	}
	pipes := map[uint64]*use{}
	ttys := map[string]*use{}
	var order []string // stable output: first-seen order
	for _, p := range tree {
		for _, fd := range p.FDs {
			fl, ok := p.Flags[fd.Num]
			acc := fl & uint32(os.O_RDONLY|os.O_WRONLY|os.O_RDWR)
			rd := !ok || acc == uint32(os.O_RDONLY) || acc == uint32(os.O_RDWR)
			wr := ok && (acc == uint32(os.O_WRONLY) || acc == uint32(os.O_RDWR))
			where := fmt.Sprintf("PID %d fd %d", p.PID, fd.Num)
			switch fd.Kind {
			case proc.FDPipe:
				u := pipes[fd.Inode]
				if u == nil {
					u = &use{key: fmt.Sprintf("pipe:[%d]", fd.Inode)}
					pipes[fd.Inode] = u
					order = append(order, "p"+strconv.FormatUint(fd.Inode, 10))
				}
				u.read, u.write = u.read || rd, u.write || wr
				u.where = append(u.where, where)
			case proc.FDTTY:
				u := ttys[fd.Target]
				if u == nil {
					u = &use{key: fd.Target}
					ttys[fd.Target] = u
					order = append(order, "t"+fd.Target)
				}
				u.read, u.write = u.read || rd, u.write || wr
				u.where = append(u.where, where)
			}
		}
	}
	var plan StdioPlan
	files := map[string]*Inherit{}
	for _, p := range tree {
		for _, fd := range p.FDs {
			key, ok := p.FileKeys[fd.Num]
			if fd.Kind != proc.FDFile || (fd.Num != 1 && fd.Num != 2) || !ok {
				continue
			}
			fl, ok := p.Flags[fd.Num]
			acc := fl & uint32(os.O_RDONLY|os.O_WRONLY|os.O_RDWR)
			if !ok || acc == uint32(os.O_RDONLY) || fl&uint32(os.O_APPEND) != 0 {
				continue
			}
			where := fmt.Sprintf("PID %d fd %d", p.PID, fd.Num)
			if in := files[key]; in != nil {
				in.Why += ", " + where
				continue
			}
			plan.External = append(plan.External, key)
			plan.Inherit = append(plan.Inherit, Inherit{Key: key, Path: logPath, Flags: os.O_WRONLY | os.O_APPEND | os.O_CREATE,
				Why: fd.Target + ": " + where})
			files[key] = &plan.Inherit[len(plan.Inherit)-1]
		}
	}
	for _, k := range order {
		var u *use
		if k[0] == 'p' {
			ino, _ := strconv.ParseUint(k[1:], 10, 64)
			u = pipes[ino]
			if u.read && u.write {
				continue // both ends in the tree: CRIU restores the pipe itself
			}
		} else {
			u = ttys[k[1:]]
			plan.ShellJob = true
			// A terminal is not substituted through inherit-fd: CRIU names it
			// by device numbers the caller fills in (see TTYKey).
		}
		in := Inherit{Key: u.key, Why: strings.Join(u.where, ", ")}
		if u.write {
			in.Path, in.Flags = logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE
		} else {
			in.Path, in.Flags = os.DevNull, os.O_RDONLY
		}
		plan.Inherit = append(plan.Inherit, in)
	}
	return plan
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether name is acceptable as a clone's label: letters,
// digits, '.', '_' and '-', starting with a letter or digit, at most 64.
func ValidName(name string) error {
	if name == "" || nameRE.MatchString(name) {
		return nil
	}
	return fmt.Errorf("name %q: use at most 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
}

var idRE = regexp.MustCompile(`^[a-f0-9]{12}$`)

// ValidID reports whether id has the form of a clone ID (12 hex digits).
func ValidID(id string) bool { return idRE.MatchString(id) }
