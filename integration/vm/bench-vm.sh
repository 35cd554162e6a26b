#!/usr/bin/env bash
# make bench-vm: the benchmarks that need what only the test VM has
# (soft-dirty tracking: iterative pre-copy), run in the two-node guest with
# 4 GiB per node (the benchmark picks the largest heap that fits four times
# in a node). `criu check` first: the first CRIU run in a fresh guest loads
# the *_diag modules, slow enough under TCG to miss the daemon's start-up
# deadline. The report goes to docs/BENCHMARKS-VM.md. Under TCG only the ratios mean
# anything; absolute times are several times the host's.
#
# Environment: GO (default go), CLONEBOT_VM_BENCH (a -test.bench pattern,
# default ^BenchmarkPrecopy$), and those of integration/vm/run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
cd "$VM_DIR/../.."
GO=${GO:-go}
export CGO_ENABLED=0

"$VM_DIR/build-image.sh" >/dev/null
vm_need_host_pkgs qemu-system-x86_64=qemu-system-x86
share=$(mktemp -d /tmp/clonebot-vm-bench.XXXXXX)
status=0
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ "$status" -ne 0 ]; then vm_say "kept $share (the guest's output and logs)"; else rm -rf "$share"; fi
}
trap cleanup EXIT
mkdir -p "$share/bin" "$share/tmp"
"$GO" test -c -o "$share/integration.test" ./integration/
"$GO" build -o "$share/goserver" ./integration/testdata/goserver
cp bin/clonebotd bin/clonebotctl "$share/bin/"

CLONEBOT_VM_MEM_PER_NODE=${CLONEBOT_VM_MEM_PER_NODE:-4G} "$VM_DIR/run" --share "$share" --timeout 3000 -- \
	env CLONEBOT_BIN=/mnt/share/bin CLONEBOT_GOSERVER=/mnt/share/goserver CLONEBOT_BENCH_REPORT=/mnt/share/BENCHMARKS-VM.md \
	sh -c 'criu check >/dev/null 2>&1; "$@"; s=$?; [ $s -eq 0 ] || cp -r /tmp/Benchmark* /mnt/share/tmp/ 2>/dev/null; exit $s' sh \
	./integration.test -test.run '^$' -test.bench "${CLONEBOT_VM_BENCH:-^BenchmarkPrecopy\$}" -test.benchtime 1x -test.timeout 45m -test.v || status=$?
[ "$status" -eq 0 ] || exit "$status"
if [ -s "$share/BENCHMARKS-VM.md" ]; then
	cp "$share/BENCHMARKS-VM.md" docs/BENCHMARKS-VM.md
	vm_say "wrote docs/BENCHMARKS-VM.md"
else
	vm_say "the guest wrote no report"
	exit 1
fi
