//go:build !linux

// clonebotd needs Linux (CRIU, PID namespaces, cgroup v2).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "clonebotd: only Linux is supported")
	os.Exit(1)
}
