#!/usr/bin/env bash
# make bench-vm: the benchmarks that need what only the test VM has
# (soft-dirty tracking: iterative pre-copy), run in the two-node guest with
# 2 GiB per node so that a 1 GiB heap, its images and its clone fit. The
# report goes to docs/BENCHMARKS-VM.md. Under TCG only the ratios mean
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
trap 'rm -rf "$share"' EXIT
mkdir -p "$share/bin"
"$GO" test -c -o "$share/integration.test" ./integration/
"$GO" build -o "$share/goserver" ./integration/testdata/goserver
cp bin/clonebotd bin/clonebotctl "$share/bin/"

CLONEBOT_VM_MEM_PER_NODE=${CLONEBOT_VM_MEM_PER_NODE:-2G} "$VM_DIR/run" --share "$share" --timeout 3000 -- \
	env CLONEBOT_BIN=/mnt/share/bin CLONEBOT_GOSERVER=/mnt/share/goserver CLONEBOT_BENCH_REPORT=/mnt/share/BENCHMARKS-VM.md \
	./integration.test -test.run '^$' -test.bench "${CLONEBOT_VM_BENCH:-^BenchmarkPrecopy\$}" -test.benchtime 1x -test.timeout 45m -test.v
if [ -s "$share/BENCHMARKS-VM.md" ]; then
	cp "$share/BENCHMARKS-VM.md" docs/BENCHMARKS-VM.md
	vm_say "wrote docs/BENCHMARKS-VM.md"
else
	vm_say "the guest wrote no report"
	exit 1
fi
