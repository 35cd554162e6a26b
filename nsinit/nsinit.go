// Package nsinit is the init clonebot runs as PID 1 of each clone's PID
// namespace (Linux >= 5.7 for CLONE_INTO_CGROUP).
//
// The daemon re-executes its own binary with CLONE_NEWPID|CLONE_NEWNS (and
// CLONE_NEWNET for isolated clones) straight into the clone's cgroup. The init
// mounts a fresh /proc, applies the CPU affinity and memory policy the restore
// must run under, asks CRIU to restore the images as its sibling (so the
// restored root becomes the init's child), and then stays: it reaps orphans,
// forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the clone's root,
// and when the root exits records its status and exits, which tears the
// namespace down. CRIU's --restore-detached cannot do this: with CRIU as PID 1
// the namespace would die with it.
//
// The daemon and the init talk over a SOCK_SEQPACKET pair (fd 3 in the init),
// one JSON message per packet: Config down, Report up.
package nsinit

import (
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/clonebot/clonebot/internal/atomicfile"
	"github.com/clonebot/clonebot/journal"
)

// EnvMarker is set in the environment of a re-executed init.
const EnvMarker = "_CLONEBOT_NSINIT"

// ErrUnsupported is returned on systems without PID namespaces.
var ErrUnsupported = errors.New("nsinit: not supported on this OS")

// InheritSpec is a file the init opens and hands to CRIU to replace a resource
// of the original the clone cannot share (see criu.InheritFd).
type InheritSpec struct {
	Key  string `json:"key"`
	Path string `json:"path"`
	// Flags are open(2) flags; O_CREAT files get mode 0600.
	Flags int `json:"flags"`
	// Journal, when set, makes the init open a new journald stream to the
	// socket at Path with this header instead of opening a file (Flags
	// unused). The init connects from the clone's cgroup, so journald
	// files the clone's lines under the clone's cgroup, not clonebotd's,
	// even where it goes by the connecting process rather than by each
	// writer's credentials (systemd 252 does the latter).
	Journal *journal.StreamHeader `json:"journal,omitempty"`
}

// Config is what the daemon asks of the init.
type Config struct {
	CRIUPath string `json:"criu_path"`
	ImageDir string `json:"image_dir"`
	WorkDir  string `json:"work_dir"`
	LogLevel int    `json:"log_level"`
	// CPUs and MemNodes, when set, are the affinity and MPOL_BIND nodes the
	// restore runs under (inherited by the restored tree).
	CPUs     []int `json:"cpus,omitempty"`
	MemNodes []int `json:"mem_nodes,omitempty"`
	// LoopbackUp brings lo up (for a new network namespace).
	LoopbackUp bool          `json:"loopback_up,omitempty"`
	Inherit    []InheritSpec `json:"inherit,omitempty"`
	ShellJob   bool          `json:"shell_job,omitempty"`
	ExtUnixSk  bool          `json:"ext_unix_sk,omitempty"`
	External   []string      `json:"external,omitempty"`
	// TTYs are CRIU names of terminals (tty[rdev:dev]) the clone gets a new
	// pseudo-terminal for; the init copies what the clone writes to it into
	// TTYLog.
	TTYs   []string `json:"ttys,omitempty"`
	TTYLog string   `json:"tty_log,omitempty"`
	// StatusFile receives the clone's ExitStatus as JSON when its root exits.
	StatusFile string `json:"status_file"`
	// Lazy restores memory lazily: the clone runs before its pages are in,
	// and a `criu lazy-pages` daemon of the init's serves them from the
	// images on demand and in the background (userfaultfd). If it fails
	// before every page is in, the clone is killed.
	Lazy bool `json:"lazy,omitempty"`
}

// Report phases.
const (
	PhaseRestored = "restored"
	PhaseFailed   = "failed"
	PhaseExited   = "exited"
	// PhaseResident: every page of a lazily restored clone is in (or, with
	// Error set, the page server failed and the clone was killed).
	PhaseResident = "resident"
)

// Report is what the init tells the daemon.
type Report struct {
	Phase string `json:"phase"`
	// NSPID is the clone root's PID in the namespace (PhaseRestored).
	NSPID     int     `json:"ns_pid,omitempty"`
	RestoreMS float64 `json:"restore_ms,omitempty"`
	// ResidentMS is from the restore request to the last page in (lazy).
	ResidentMS    float64 `json:"resident_ms,omitempty"`
	PagesRestored uint64  `json:"pages_restored,omitempty"`
	// Error fields (PhaseFailed): the restore failed and the init exits.
	Error   string   `json:"error,omitempty"`
	Hint    string   `json:"hint,omitempty"`
	LogPath string   `json:"log_path,omitempty"`
	Lines   []string `json:"lines,omitempty"`
	// Exit (PhaseExited).
	Exit *ExitStatus `json:"exit,omitempty"`
}

// ExitStatus is how the clone's root process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+signal when killed by a signal.
	Code     int       `json:"code"`
	Signal   string    `json:"signal,omitempty"`
	ExitedAt time.Time `json:"exited_at"`
}

// ReadStatusFile reads the ExitStatus an init wrote; os.ErrNotExist while the
// clone runs.
func ReadStatusFile(path string) (*ExitStatus, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st ExitStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func writeStatusFile(path string, st ExitStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
