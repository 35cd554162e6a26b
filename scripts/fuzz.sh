#!/usr/bin/env bash
# Runs every Fuzz target of the module with the given budget each: a count
# such as 200000x (the default), or a duration such as 30s.
set -euo pipefail
t=${1:-200000x}
go=${GO:-go}
n=0
for pkg in $($go list ./...); do
	dir=$($go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz: $pkg $f ($t)"
		$go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$pkg" >/tmp/clonebot-fuzz.log 2>&1 || { cat /tmp/clonebot-fuzz.log; exit 1; }
		n=$((n + 1))
	done
done
echo "fuzz: $n targets, $t each, no failure"
