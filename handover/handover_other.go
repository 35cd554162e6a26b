//go:build !linux

package handover

import "github.com/clonebot/clonebot/proc"

// FindSockets is not supported outside Linux.
func FindSockets(fs proc.FS, pids []int) ([]Socket, error) { return nil, ErrUnsupported }

// SetReusePort is not supported outside Linux.
func SetReusePort(s Socket, on bool) error { return ErrUnsupported }

// Shutdown is not supported outside Linux.
func Shutdown(s Socket) error { return ErrUnsupported }
