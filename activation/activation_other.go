//go:build !linux

package activation

// IsShim reports whether this process was started as the exec shim.
func IsShim() bool { return false }

// ShimMain is never reached outside Linux.
func ShimMain() { panic(ErrUnsupported) }
