//go:build !linux

package main

import "io"

// isTerminal reports false: progress is shown only on Linux, where the
// daemon runs (or when CLONEBOT_PROGRESS=1).
func isTerminal(io.Writer) bool { return false }
