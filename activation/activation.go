// Package activation starts a process that inherits listening sockets
// through the systemd socket-activation protocol (sd_listen_fds(3)):
// the sockets are fds 3.., LISTEN_FDS counts them, LISTEN_FDNAMES names them
// (colon-separated) and LISTEN_PID is the PID of the process meant to take
// them.
//
// LISTEN_PID must be the child's own PID, which only the child knows after
// fork. The daemon therefore starts its own binary as a shim (EnvMarker
// set): the shim applies the placement (CPU affinity, memory policy), sets
// LISTEN_PID to its PID and execs the real binary, which keeps the PID.
package activation

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EnvMarker is set in the environment of the shim.
const EnvMarker = "_CLONEBOT_EXECSHIM"

// FirstFD is the first inherited socket's fd number (SD_LISTEN_FDS_START).
const FirstFD = 3

// ErrUnsupported is returned on systems without the mechanisms.
var ErrUnsupported = errors.New("activation: not supported on this OS")

// shimConfig travels to the shim in its environment.
type shimConfig struct {
	Path     string   `json:"path"`
	Args     []string `json:"args"` // argv, argv[0] included
	Env      []string `json:"env"`
	NFDs     int      `json:"nfds"`
	CPUs     []int    `json:"cpus,omitempty"`
	MemNodes []int    `json:"mem_nodes,omitempty"`
}

// Env returns env without any LISTEN_* variable, plus LISTEN_FDS and
// LISTEN_FDNAMES for names; the shim adds LISTEN_PID.
func Env(env []string, names []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if strings.HasPrefix(kv, "LISTEN_PID=") || strings.HasPrefix(kv, "LISTEN_FDS=") || strings.HasPrefix(kv, "LISTEN_FDNAMES=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
}

// Name makes an fd name from a listening address: names may not contain
// ':' (the separator), so "127.0.0.1:8080" becomes "tcp-127.0.0.1-8080"
// and "[::]:80" "tcp-__-80".
func Name(addr string) string {
	r := strings.NewReplacer(":", "_", "[", "", "]", "")
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return "tcp-" + r.Replace(addr[:i]) + "-" + addr[i+1:]
	}
	return "tcp-" + r.Replace(addr)
}

// MergeEnv applies "KEY=VALUE" overrides to env (later wins), keeping order.
func MergeEnv(env, overrides []string) ([]string, error) {
	idx := map[string]int{}
	out := append([]string(nil), env...)
	for i, kv := range out {
		if k, _, ok := strings.Cut(kv, "="); ok {
			idx[k] = i
		}
	}
	for _, kv := range overrides {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, "\x00") || strings.ContainsRune(kv, 0) {
			return nil, fmt.Errorf("env %q: want KEY=VALUE", kv)
		}
		if i, ok := idx[k]; ok {
			out[i] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out, nil
}

func encodeConfig(c shimConfig) (string, error) {
	b, err := json.Marshal(c)
	return string(b), err
}
