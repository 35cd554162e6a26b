//go:build !linux

package unixdiag

// Dump is not supported outside Linux.
func Dump(pid int) (map[uint64]Socket, error) { return nil, ErrUnsupported }
