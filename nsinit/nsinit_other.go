//go:build !linux

package nsinit

// IsInit reports whether this process was started as a clone's init.
func IsInit() bool { return false }

// Main is never reached outside Linux.
func Main() { panic(ErrUnsupported) }
