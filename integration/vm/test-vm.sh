#!/usr/bin/env bash
# make test-vm: the integration suite in the two-NUMA-node guest.
#
# On a host (CI, a laptop), under TCG or KVM:
#   1. the guest image, built once and cached (build-image.sh);
#   2. static test binaries built here: integration.test, goserver, and the
#      clonebotd/clonebotctl of `make build` (the guest has no Go);
#   3. the runner's own failure cases (TestVMRunner: exit codes, a hung
#      guest, a killed runner; run here, on the host);
#   4. guest boot 1, fast init: the VM-only tests and the host-level tests
#      that the VM proves more of (CLONEBOT_VM=1, CI=true: nothing skips):
#      clone, takeover and upgrade, preflight refusals, access control (a
#      member's own clone needs CAP_SYS_RESOURCE), pre-copy (soft-dirty),
#      the CLI quickstart. The rest of the host suite (faults, hardening,
#      soak, lazy pages, load) says nothing new there, and under TCG in a
#      2 GiB guest it is too slow or does not fit (docs/VM.md);
#      CLONEBOT_VM_RUN=. runs all of it (with CLONEBOT_VM_MEM_PER_NODE=2G);
#   5. guest boot 2, systemd as PID 1: `make install`, clonebotd as a
#      service, cloning a systemd service (TestVMSystemd*, TestVMClone*Service).
# Inside the Vagrant box (it is the two-node machine; /etc/clonebot-vm says
# so), it runs the VM-only tests right there instead.
#
# Environment: GO (default go), CLONEBOT_VM_RUN (a -test.run pattern for
# boot 1, default $VM_SUITE below), CLONEBOT_VM_KEEP_SHARE=1 (keep the share
# directory with the logs), and those of integration/vm/run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
cd "$VM_DIR/../.."
GO=${GO:-go}
export CGO_ENABLED=0

secs() { echo $(($(date +%s) - $1)); }
summary() { # summary NAME LOG: one line of counts from go test -v output
	local p f s
	p=$(grep -c -- '--- PASS:' "$2" || true)
	f=$(grep -c -- '--- FAIL:' "$2" || true)
	s=$(grep -c -- '--- SKIP:' "$2" || true)
	printf '%s: %d passed, %d failed, %d skipped\n' "$1" "$p" "$f" "$s"
}

if [ "$(cat /etc/clonebot-vm 2>/dev/null || true)" = vagrant ]; then
	vm_say "inside the Vagrant box: running the VM-only tests here"
	systemd=0
	[ -d /run/systemd/system ] && systemd=1
	skip='^TestVMRunner$' # the runner boots a VM of its own: tested on a host
	[ "$systemd" = 1 ] || skip='^TestVM(Runner|Systemd.*|Clone.*Service)$'
	CLONEBOT_VM=1 CI=true CLONEBOT_VM_SYSTEMD=$systemd CLONEBOT_VM_SRC=$PWD CLONEBOT_BIN=$PWD/bin \
		"$GO" test -count=1 -timeout 40m -v -run '^TestVM' -skip "$skip" ./integration/
	exit
fi

# Boot 1's tests (a -test.run pattern). TestVM* holds the VM-only tests;
# the runner's (host only) and the systemd guest's are left out (-test.skip):
# with CI=true they fail where their environment is missing.
VM_SUITE='^(TestVM|TestClone|TestTakeover|TestUpgradeGoServer$|TestIsolatedDebugClone$|TestDaemonRestartReadoptsClones$|TestFailedCloneLeavesNothing$|TestPreflightRefusals$|TestAccessControl$|TestPrecopyIsExact$|TestCLIQuickstart$)'

t0=$(date +%s)
"$VM_DIR/build-image.sh" >/dev/null
t_image=$(secs "$t0")
vm_need_host_pkgs qemu-system-x86_64=qemu-system-x86

share=$(mktemp -d /tmp/clonebot-vm-share.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ "${CLONEBOT_VM_KEEP_SHARE:-0}" = 1 ]; then vm_say "kept $share"; else rm -rf "$share"; fi
}
trap cleanup EXIT
t1=$(date +%s)
mkdir -p "$share/bin" "$share/src/dist"
"$GO" test -c -o "$share/integration.test" ./integration/
"$GO" build -o "$share/goserver" ./integration/testdata/goserver
cp bin/clonebotd bin/clonebotctl "$share/bin/"
# For `make install` in the systemd guest.
cp Makefile "$share/src/"
cp dist/clonebotd.service "$share/src/dist/"
t_build=$(secs "$t1")

status=0
# Warm-up: the first CRIU run in a fresh guest loads the kernel's *_diag
# modules and CRIU's libraries, which under TCG takes long enough to push the
# first test's daemon past its start-up deadline.
guest_env=(sh -c 'criu check >/dev/null 2>&1; exec "$@"' sh
	env CI=true CLONEBOT_BIN=/mnt/share/bin CLONEBOT_GOSERVER=/mnt/share/goserver CLONEBOT_VM_SRC=/mnt/share/src)

vm_say "the runner's failure cases (on this host)"
t2=$(date +%s)
CLONEBOT_VM_RUNNER="$VM_DIR/run" CLONEBOT_BIN="$share/bin" CLONEBOT_GOSERVER="$share/goserver" \
	"$share/integration.test" -test.v -test.count=1 -test.run '^TestVMRunner$' -test.timeout 10m 2>&1 |
	tee "$share/runner.log" || status=1
t_runner=$(secs "$t2")

vm_say "guest boot 1 (fast init): the VM suite"
t3=$(date +%s)
"$VM_DIR/run" --share "$share" --timeout 2100 -- "${guest_env[@]}" \
	./integration.test -test.v -test.count=1 -test.timeout 30m -test.run "${CLONEBOT_VM_RUN:-$VM_SUITE}" \
	-test.skip '^TestVM(Runner|Systemd.*|Clone.*Service)$' 2>&1 |
	tee "$share/guest.log" || status=1
t_suite=$(secs "$t3")

vm_say "guest boot 2 (systemd): clonebotd as a service"
t4=$(date +%s)
"$VM_DIR/run" --systemd --share "$share" --timeout 1200 -- "${guest_env[@]}" CLONEBOT_VM_SYSTEMD=1 \
	./integration.test -test.v -test.count=1 -test.timeout 15m -test.run '^TestVM(Systemd|Clone.*Service)' 2>&1 |
	tee "$share/guest-systemd.log" || status=1
t_systemd=$(secs "$t4")

echo
echo "make test-vm: image ${t_image}s, build ${t_build}s, runner tests ${t_runner}s, guest suite ${t_suite}s, systemd guest ${t_systemd}s, total $(secs "$t0")s"
summary "runner (host)" "$share/runner.log"
summary "guest suite" "$share/guest.log"
summary "systemd guest" "$share/guest-systemd.log"
grep -h -- '--- FAIL:' "$share/runner.log" "$share/guest.log" "$share/guest-systemd.log" || true
exit "$status"
