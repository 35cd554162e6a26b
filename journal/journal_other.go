//go:build !linux

package journal

import "os"

// Connect is not supported outside Linux.
func Connect(path string, h StreamHeader) (*os.File, error) { return nil, ErrUnsupported }
