#!/usr/bin/env bash
# Passes `go test -v` output through and ends with "N passed, N failed,
# N skipped"; exits non-zero when a test failed or the run did not finish.
set -uo pipefail
pass=0 fail=0 skip=0 ok=0
while IFS= read -r line; do
	printf '%s\n' "$line"
	case "$line" in
	"--- PASS:"*) pass=$((pass + 1)) ;;
	"--- FAIL:"*) fail=$((fail + 1)) ;;
	"--- SKIP:"*) skip=$((skip + 1)) ;;
	"ok "*) ok=1 ;;
	"FAIL"*) fail=$((fail > 0 ? fail : 1)) ;;
	esac
done
echo "integration: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$ok" -eq 1 ]
