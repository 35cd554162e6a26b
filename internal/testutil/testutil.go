// Package testutil holds the one helper every clonebot test uses to skip when
// the machine lacks something (root, CRIU, cgroup v2, a kernel feature), and to
// fail instead where the machine is known to have all of it: under CI=true,
// CLONEBOT_STRICT=1, or inside the integration VM (CLONEBOT_VM=1).
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing prerequisites must fail tests instead of
// skipping them.
func Strict() bool {
	for _, v := range []string{"CI", "CLONEBOT_STRICT", "CLONEBOT_VM"} {
		switch os.Getenv(v) {
		case "1", "true", "TRUE", "yes":
			return true
		}
	}
	return false
}

// Require skips the test with reason when ok is false, or fails it when Strict.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if Strict() {
		t.Fatalf("prerequisite missing (strict mode: CI, CLONEBOT_STRICT or CLONEBOT_VM set): %s", reason)
	}
	t.Skipf("skipping: %s (set CLONEBOT_STRICT=1 to make this a failure)", reason)
}

// RequireRoot needs euid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// RequireBinary needs name on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" not found on PATH (make deps installs it)")
	return p
}

// InVM reports whether the test runs inside the integration VM.
func InVM() bool { return os.Getenv("CLONEBOT_VM") == "1" }

// RequireVMFeature is for what only the integration VM is built to have
// (cpuset in cgroup v2, two NUMA nodes, CAP_SYS_RESOURCE): on a host without
// it the test skips, naming `make test-vm`, which runs it; inside the VM its
// absence is a failure.
func RequireVMFeature(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if InVM() {
		t.Fatalf("the integration VM must provide this: %s", reason)
	}
	t.Skipf("skipping on this host: %s; 'make test-vm' runs it in the two-node VM", reason)
}
