//go:build !linux

package numa

// SetAffinity reports ErrUnsupported.
func SetAffinity(tid int, cpus []int) error { return ErrUnsupported }

// Affinity reports ErrUnsupported.
func Affinity(tid int) ([]int, error) { return nil, ErrUnsupported }

// BindMemory reports ErrUnsupported.
func BindMemory(nodes []int) error { return ErrUnsupported }

// MemoryPolicy reports ErrUnsupported.
func MemoryPolicy() (mode int, nodes []int, err error) { return 0, nil, ErrUnsupported }
