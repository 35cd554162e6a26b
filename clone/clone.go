// Package clone is clonebot's pipeline, the only package that knows the
// order of the steps: preflight (read /proc and refuse what cannot work),
// plan placement, prepare (cgroup, SO_REUSEPORT, the namespace init), freeze
// and checkpoint (CRIU dump, leave-running), restore (in new PID and mount
// namespaces, inside the clone's cgroup), place (affinity, NUMA residency),
// verify, report. It also tracks clones across daemon restarts.
package clone

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Version is clonebot's version, set at build time with -ldflags.
var Version = "dev"

// Caller is who asks for an operation, from SO_PEERCRED.
type Caller struct {
	UID, GID int
	PID      int
}

// Root reports whether the caller is root.
func (c Caller) Root() bool { return c.UID == 0 }

// RootCaller is the daemon itself (and tests).
var RootCaller = Caller{}

func newID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// ms is d in milliseconds with microsecond precision.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
