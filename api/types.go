// Package api holds clonebotd's wire types and a client for its HTTP/JSON API,
// served on a unix socket (DefaultSocket).
//
// Endpoints:
//
//	POST   /v1/clones        CloneRequest -> 201 Clone
//	GET    /v1/clones        -> 200 []Clone
//	GET    /v1/clones/{id}   -> 200 Clone
//	DELETE /v1/clones/{id}   -> 200 Clone (final record)
//	GET    /v1/status        -> 200 Status
//
// Every failure answers with an ErrorBody and a 4xx/5xx status.
package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultSocket is where clonebotd listens unless told otherwise.
const DefaultSocket = "/run/clonebot/clonebotd.sock"

// SocketEnv names the environment variable clonebotctl reads for the socket path.
const SocketEnv = "CLONEBOT_SOCKET"

// MaxBodyBytes is the largest request body the daemon accepts.
const MaxBodyBytes = 1 << 20

// Placement policies for CloneRequest.NUMA.
const (
	PlaceSame   = "same"   // the node holding most of the target's pages
	PlaceSpread = "spread" // the node with the most free memory not crowded by clones
)

// Placement is "same", "spread" or a node number. On the wire it is either a
// JSON string ("same", "spread", "1") or a JSON number (1). The zero value
// means "same".
type Placement string

// Node returns the explicit node number and true, or -1 and false for a policy.
func (p Placement) Node() (int, bool) {
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 0 {
		return -1, false
	}
	return n, true
}

// Validate reports whether p is a known policy or a non-negative node number.
func (p Placement) Validate() error {
	switch p {
	case "", PlaceSame, PlaceSpread:
		return nil
	}
	if _, ok := p.Node(); ok {
		return nil
	}
	return fmt.Errorf("numa %q: want %q, %q or a node number >= 0", string(p), PlaceSame, PlaceSpread)
}

// ParsePlacement parses a CLI or JSON string value; a node number is
// normalised ("01" and "+1" become "1").
func ParsePlacement(s string) (Placement, error) {
	p := Placement(strings.TrimSpace(s))
	if err := p.Validate(); err != nil {
		return p, err
	}
	if n, ok := p.Node(); ok {
		p = Placement(strconv.Itoa(n))
	}
	return p, nil
}

// UnmarshalJSON accepts a string or a non-negative integer.
func (p *Placement) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := ParsePlacement(s)
		if err != nil {
			return err
		}
		*p = v
		return nil
	}
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return fmt.Errorf("numa: want %q, %q or a node number", PlaceSame, PlaceSpread)
	}
	i, err := strconv.Atoi(n.String())
	if err != nil || i < 0 {
		return fmt.Errorf("numa %s: want a node number >= 0", n.String())
	}
	*p = Placement(strconv.Itoa(i))
	return nil
}

// ByteSize is a size in bytes. On the wire it is a JSON number of bytes or a
// string with an optional binary suffix: "512M", "1G", "65536".
type ByteSize int64

// ParseByteSize parses "123", "64K", "512M", "2G", "1T" (powers of 1024;
// an optional trailing "B" or "iB" is accepted).
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, optionally with K, M, G or T", s)
	}
	return ByteSize(v * mult), nil
}

// UnmarshalJSON accepts a positive number or a string for ParseByteSize.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		v, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		*b = v
		return nil
	}
	// 0 is accepted and means "no limit", as when the field is omitted.
	var n int64
	if err := json.Unmarshal(data, &n); err != nil || n < 0 || n > 1<<62 {
		return fmt.Errorf("size %s: want a positive number of bytes or a string like \"512M\"", string(data))
	}
	*b = ByteSize(n)
	return nil
}

// CloneRequest is the body of POST /v1/clones.
type CloneRequest struct {
	// PID is the root of the process tree to clone.
	PID int `json:"pid"`
	// NUMA is the placement: "same" (default), "spread" or a node number.
	NUMA Placement `json:"numa,omitempty"`
	// Name is a label for the clone (letters, digits, '-', '_', '.'; at most 64).
	Name string `json:"name,omitempty"`
	// MemoryMax sets memory.max of the clone's cgroup; 0 means no limit.
	MemoryMax ByteSize `json:"memory_max,omitempty"`
	// PidsMax sets pids.max of the clone's cgroup; 0 means no limit.
	PidsMax int64 `json:"pids_max,omitempty"`
	// IsolateNet restores the clone in a new network namespace with only
	// loopback up: it takes no production traffic (debug clones).
	IsolateNet bool `json:"isolate_net,omitempty"`
	// Precopy is "auto" (the default: on kernels with soft-dirty tracking,
	// above 64 MiB of memory), "on" or "off": copy the memory while the
	// original runs, in rounds, then freeze it only for the pages dirtied
	// since the last round.
	Precopy string `json:"precopy,omitempty"`
	// LazyPages is "auto" (the default: lazily above 64 MiB of memory),
	// "on" or "off": whether the clone starts running before its memory is
	// in, its pages then served on demand and in the background.
	LazyPages string `json:"lazy_pages,omitempty"`
	// Operation is an ID the caller picks (8..64 of [a-z0-9-]) to follow the
	// operation's events at GET /v1/operations/{id}/events while it runs.
	Operation string `json:"operation,omitempty"`
}

// Clone states.
const (
	StateCreating = "creating"
	StateRunning  = "running"
	StateExited   = "exited"
)

// Pinning modes reported in Clone.Pinning.
const (
	PinCgroup   = "cgroup"   // cpuset.cpus/cpuset.mems of the clone's cgroup v2
	PinAffinity = "affinity" // sched_setaffinity on every thread plus a memory policy
)

// Timings are the duration of each phase of a clone, in milliseconds.
type Timings struct {
	Preflight  float64 `json:"preflight"`
	Freeze     float64 `json:"freeze"`
	Checkpoint float64 `json:"checkpoint"`
	Restore    float64 `json:"restore"`
	Place      float64 `json:"place"`
	Total      float64 `json:"total"`
	// Serving is from the request to the clone running (its restore done).
	Serving float64 `json:"serving"`
	// Resident is from the request to the clone's last page in; equal to
	// Serving unless memory was restored lazily, and 0 while pages are
	// still coming in.
	Resident float64 `json:"resident"`
}

// Listener is a listening socket of the target that the clone shares.
type Listener struct {
	PID   int    `json:"pid"`
	FD    int    `json:"fd"`
	Addr  string `json:"addr"` // "127.0.0.1:8080", "[::]:80"
	Inode uint64 `json:"inode"`
	// ReusePortSet is true when clonebot set SO_REUSEPORT on the original's socket.
	ReusePortSet bool `json:"reuseport_set"`
}

// Stream kinds.
const (
	// StreamJournal is a journald stdout stream.
	StreamJournal = "journal"
)

// Stream is a unix stream connection of the original to a process outside
// its tree, which CRIU cannot copy, and what replaced it in the clone.
type Stream struct {
	// Kind is StreamJournal.
	Kind string `json:"kind"`
	// FDs are the original's fds on the connection: "PID 1234 fd 1, PID 1234 fd 2".
	FDs string `json:"fds"`
	// Inode is the original's socket (socket:[Inode]), which stays its own.
	Inode uint64 `json:"inode"`
	// Peer is the socket the clone's new connection goes to
	// (/run/systemd/journal/stdout).
	Peer string `json:"peer"`
	// Identifier is the SYSLOG_IDENTIFIER of the clone's journal lines.
	Identifier string `json:"identifier,omitempty"`
	// Unit is the original's systemd unit, when it runs in one.
	Unit string `json:"unit,omitempty"`
	// CloneInode is the clone's new socket on the same fds.
	CloneInode uint64 `json:"clone_inode,omitempty"`
}

// Clone is the record of one clone.
type Clone struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	SourcePID int    `json:"source_pid"`
	// PID is the host PID of the clone's root process.
	PID int `json:"pid"`
	// NSPID is the clone root's PID inside its PID namespace (the original's PID).
	NSPID int `json:"ns_pid"`
	// InitPID is the host PID of the namespace's init (PID 1 inside).
	InitPID int `json:"init_pid"`
	// Cgroup is the clone's cgroup v2 path relative to the hierarchy root:
	// "/clonebot.slice/<id>", or "/clonebot.slice/clonebot-<id>.scope" (a
	// transient systemd scope unit) where systemd manages the hierarchy.
	Cgroup   string `json:"cgroup"`
	NUMANode int    `json:"numa_node"`
	CPUs     string `json:"cpus"`
	Mems     string `json:"mems"`
	Pinning  string `json:"pinning"`
	// NUMALocalFraction is the share of the clone's resident pages on NUMANode.
	NUMALocalFraction float64 `json:"numa_local_fraction"`
	// Freeze is how the target was frozen: "cgroup" or "ptrace".
	Freeze    string     `json:"freeze"`
	State     string     `json:"state"`
	ExitCode  *int       `json:"exit_code"`
	CreatedAt time.Time  `json:"created_at"`
	ExitedAt  *time.Time `json:"exited_at,omitempty"`
	TimingsMS Timings    `json:"timings_ms"`
	// FrozenMS is how long the original was frozen.
	FrozenMS  float64    `json:"frozen_ms"`
	Listeners []Listener `json:"listeners,omitempty"`
	// LogPath receives the clone's stdout and stderr when the original's went
	// to a pipe, socket or terminal the clone cannot share.
	LogPath string `json:"log_path,omitempty"`
	// Streams are the original's connections to a process outside its
	// tree (journald's streams) that the clone got new ones for.
	Streams   []Stream `json:"streams,omitempty"`
	MemoryMax ByteSize `json:"memory_max,omitempty"`
	PidsMax   int64    `json:"pids_max,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	// Kind is "clone" (a checkpoint/restore copy) or "upgrade" (a new
	// process that inherited the original's listeners).
	Kind string `json:"kind"`
	// IsolatedNet is true when the clone has a network namespace of its
	// own (loopback only).
	IsolatedNet bool `json:"isolated_net,omitempty"`
	// LazyPages is true when the clone's memory was restored lazily.
	LazyPages bool `json:"lazy_pages,omitempty"`
	// DumpedBytes is the memory the checkpoint wrote (the final dump's,
	// with pre-copy).
	DumpedBytes int64 `json:"dumped_bytes,omitempty"`
	// Precopy says whether memory was copied while the original ran.
	Precopy *PrecopyInfo `json:"precopy,omitempty"`
	// Takeover is set when the clone replaced the original.
	Takeover *TakeoverInfo `json:"takeover,omitempty"`
	// Operation is the ID of the operation that made it (see events).
	Operation string `json:"operation,omitempty"`
}

// Kinds of Clone.
const (
	KindClone   = "clone"
	KindUpgrade = "upgrade"
)

// Feature says whether a capability of the host works, and why not.
type Feature struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// CRIUStatus describes the CRIU binary the daemon drives.
type CRIUStatus struct {
	Path    string `json:"path"`
	Version string `json:"version,omitempty"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Hint    string `json:"hint,omitempty"`
}

// CgroupStatus describes the cgroup v2 hierarchy the daemon uses.
type CgroupStatus struct {
	// Mode is "v2" (pure), "hybrid" (v2 beside v1 controllers) or "none".
	Mode        string   `json:"mode"`
	Mount       string   `json:"mount"`
	Controllers []string `json:"controllers"`
	// Pinning is what clones get: "cgroup" when cpuset is available in v2, else "affinity".
	Pinning string `json:"pinning"`
}

// NUMANode is one node of the host's topology.
type NUMANode struct {
	ID       int    `json:"id"`
	CPUs     string `json:"cpus"`
	MemTotal uint64 `json:"mem_total"`
	MemFree  uint64 `json:"mem_free"`
	Clones   int    `json:"clones"`
}

// Status is the body of GET /v1/status.
type Status struct {
	Version      string             `json:"version"`
	Kernel       string             `json:"kernel"`
	CRIU         CRIUStatus         `json:"criu"`
	Cgroup       CgroupStatus       `json:"cgroup"`
	NUMA         []NUMANode         `json:"numa"`
	Capabilities map[string]bool    `json:"capabilities"`
	Features     map[string]Feature `json:"features"`
	Clones       int                `json:"clones"`
}

// ErrorBody is the body of every failed request.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what failed and what to do about it.
type ErrorDetail struct {
	// Code is a stable machine-readable kind: "invalid_argument", "not_found",
	// "conflict", "refused", "forbidden", "unavailable", "timeout", "failed",
	// "payload_too_large", "internal".
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// Duration is a time span. On the wire it is a Go duration string ("10s",
// "1m30s") or a number of seconds.
type Duration time.Duration

// UnmarshalJSON accepts "10s" or 10.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			return fmt.Errorf("duration %q: want e.g. \"10s\" or a number of seconds", s)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil || f < 0 || f > 1e6 {
		return fmt.Errorf("duration %s: want e.g. \"10s\" or a number of seconds", string(b))
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Handover configures how traffic moves from the original to its
// replacement (takeover and upgrade).
type Handover struct {
	// Probe checks the replacement before the original is touched: an
	// http:// URL that must answer 2xx, or "tcp" (connect to each of the
	// original's listening addresses). "" means "tcp".
	Probe string `json:"probe,omitempty"`
	// ProbeTimeout bounds the probing; 0 means 10s.
	ProbeTimeout Duration `json:"probe_timeout,omitempty"`
	// DrainSignal is sent to the original once the replacement is healthy:
	// "TERM" (default), "QUIT" (nginx), "INT", "HUP", "USR1", "USR2", "WINCH".
	DrainSignal string `json:"drain_signal,omitempty"`
	// DrainTimeout is how long the original may take to exit after the
	// signal before it is killed; 0 means 30s.
	DrainTimeout Duration `json:"drain_timeout,omitempty"`
	// ShutdownListener stops the original's listeners from outside before
	// the signal (for servers that exit abruptly on it): no new connection
	// reaches the original, connections queued in it move to the
	// replacement, and the signal waits for its open connections to end.
	ShutdownListener bool `json:"shutdown_listener,omitempty"`
}

// TakeoverRequest is the body of POST /v1/takeovers: a clone, then a handover.
type TakeoverRequest struct {
	CloneRequest
	Handover
}

// UpgradeRequest is the body of POST /v1/upgrades: a new process inherits
// the original's listeners through socket activation, then a handover.
type UpgradeRequest struct {
	PID int `json:"pid"`
	// Exec is the absolute path of the new binary.
	Exec string `json:"exec"`
	// Args are its arguments (argv[1:]); null or absent means the
	// original's, [] means none.
	Args []string `json:"args"`
	// Env are "KEY=VALUE" overrides on top of the original's environment.
	Env       []string  `json:"env,omitempty"`
	NUMA      Placement `json:"numa,omitempty"`
	Name      string    `json:"name,omitempty"`
	MemoryMax ByteSize  `json:"memory_max,omitempty"`
	PidsMax   int64     `json:"pids_max,omitempty"`
	// Operation: see CloneRequest.Operation.
	Operation string `json:"operation,omitempty"`
	Handover
}

// PrecopyInfo is how the iterative pre-copy went.
type PrecopyInfo struct {
	// Used is true when the final dump wrote only pages dirtied since the
	// last round.
	Used bool `json:"used"`
	// Rounds are the pre-dumps made while the original ran.
	Rounds []PrecopyRound `json:"rounds,omitempty"`
	// Note says why pre-copy was not used or stopped ("the kernel has no
	// soft-dirty tracking", a pre-dump error and the fallback).
	Note string `json:"note,omitempty"`
}

// PrecopyRound is one pre-dump.
type PrecopyRound struct {
	Bytes int64 `json:"bytes"`
	// FrozenMS is how long the original was frozen for this round (only to
	// collect its page map: the pages are read after the thaw).
	FrozenMS float64 `json:"frozen_ms"`
	MS       float64 `json:"ms"`
}

// TakeoverInfo is how a handover went.
type TakeoverInfo struct {
	// ProbeMS is how long the replacement took to pass its probe.
	ProbeMS float64 `json:"probe_ms"`
	// DrainMS is from the drain signal to the original's exit.
	DrainMS float64 `json:"drain_ms"`
	// OriginalExit is "exited" (within the drain timeout) or "killed".
	OriginalExit string `json:"original_exit"`
	DrainSignal  string `json:"drain_signal"`
	// RequestsMigrated counts connections the kernel moved from the
	// original's accept queues to the replacement (TCPMigrateReqSuccess).
	RequestsMigrated int64 `json:"requests_migrated"`
	// ListenerShutdown is true when the original's listeners were stopped
	// from outside before the signal.
	ListenerShutdown bool `json:"listener_shutdown,omitempty"`
	// Steered is true when new connections were sent to the replacement
	// alone (a program on the SO_REUSEPORT group) before the signal;
	// SettleMS is how long the original then took to read every
	// connection it had accepted. A server told to drain while it holds a
	// connection whose request it has not read yet may close it unanswered
	// (Go's http.Server does): clonebot signals it once none is left, or
	// after at most a second.
	Steered  bool    `json:"steered,omitempty"`
	SettleMS float64 `json:"settle_ms,omitempty"`
	// SteerError says why new connections could not be steered (the
	// drain then works as without).
	SteerError string  `json:"steer_error,omitempty"`
	TotalMS    float64 `json:"total_ms"`
}

// Event is one step of a long operation, streamed as newline-delimited JSON
// by GET /v1/operations/{id}/events.
type Event struct {
	Time      time.Time `json:"time"`
	Operation string    `json:"operation"`
	// Kind is "clone", "takeover" or "upgrade".
	Kind string `json:"kind"`
	// Phase is e.g. "preflight", "prepare", "checkpoint", "restore",
	// "place", "probe", "drain"; "operation" for the whole.
	Phase string `json:"phase"`
	// State is "start", "done" or "failed".
	State     string  `json:"state"`
	ElapsedMS float64 `json:"elapsed_ms"`
	// Bytes is the memory dumped or restored, where known.
	Bytes   int64  `json:"bytes,omitempty"`
	Message string `json:"message,omitempty"`
	// CloneID is set once the clone has an ID.
	CloneID string `json:"clone_id,omitempty"`
}

// Event states.
const (
	EventStart  = "start"
	EventDone   = "done"
	EventFailed = "failed"
)
