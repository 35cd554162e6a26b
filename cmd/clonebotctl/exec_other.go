//go:build !linux

package main

import (
	"errors"
	"fmt"
)

// sysExec is not supported: clones and nsenter exist only on Linux.
func sysExec(argv0 string, _, _ []string) error {
	return fmt.Errorf("entering a clone's namespaces needs Linux: %w", errors.ErrUnsupported)
}
