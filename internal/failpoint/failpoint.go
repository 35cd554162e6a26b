// Package failpoint injects faults at named points of the clone pipeline,
// for tests. It is off unless the daemon starts with CLONEBOT_FAILPOINTS set,
// e.g. "after-freeze=error" or "during-dump=kill-after(200ms),preflight=error":
//
//	error            the point returns an error (the pipeline must undo)
//	kill             the daemon SIGKILLs itself there (a crash)
//	kill-after(D)    the daemon SIGKILLs itself D after reaching the point
//	                 (a crash in the middle of the step that follows)
//	sleep(D)         the point waits D
//
// Production daemons never set the variable; Enabled tells the pipeline
// whether to pay for hooks that exist only to host failpoints.
package failpoint

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvVar names the variable that enables failpoints.
const EnvVar = "CLONEBOT_FAILPOINTS"

type action struct {
	kind string // error, kill, kill-after, sleep
	d    time.Duration
}

var (
	once   sync.Once
	points map[string]action
)

func load() {
	points = map[string]action{}
	spec := os.Getenv(EnvVar)
	for _, item := range strings.Split(spec, ",") {
		name, act, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || name == "" {
			continue
		}
		a := action{kind: act}
		if k, arg, ok := strings.Cut(act, "("); ok {
			d, err := time.ParseDuration(strings.TrimSuffix(arg, ")"))
			if err != nil {
				continue
			}
			a = action{kind: k, d: d}
		}
		points[name] = a
	}
}

// Enabled reports whether any failpoint is set.
func Enabled() bool {
	once.Do(load)
	return len(points) > 0
}

// Inject runs the failpoint name, if set; it returns an error for "error".
func Inject(name string) error {
	once.Do(load)
	a, ok := points[name]
	if !ok {
		return nil
	}
	switch a.kind {
	case "error":
		return fmt.Errorf("failpoint %s", name)
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "kill-after":
		time.AfterFunc(a.d, func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) })
	case "sleep":
		time.Sleep(a.d)
	}
	return nil
}
