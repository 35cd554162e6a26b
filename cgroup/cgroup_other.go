//go:build !linux

package cgroup

import (
	"context"
	"os"
	"time"
)

// DefaultTimeout bounds Freeze, Thaw, Kill and Destroy when their context
// has no deadline.
const DefaultTimeout = 5 * time.Second

// Detect reports ErrUnsupported.
func Detect() (*Hierarchy, error) { return nil, ErrUnsupported }

// Create reports ErrUnsupported.
func (h *Hierarchy) Create(parent, name string, cfg Config) (*Cgroup, error) {
	return nil, ErrUnsupported
}

// Load reports ErrUnsupported.
func (h *Hierarchy) Load(rel string) (*Cgroup, error) { return nil, ErrUnsupported }

// Of reports ErrUnsupported.
func (h *Hierarchy) Of(pid int) (string, error) { return "", ErrUnsupported }

// HoldsOnly reports ErrUnsupported.
func (h *Hierarchy) HoldsOnly(rel string, pids []int) (bool, error) { return false, ErrUnsupported }

// OpenFD reports ErrUnsupported.
func (c *Cgroup) OpenFD() (*os.File, error) { return nil, ErrUnsupported }

// Procs reports ErrUnsupported.
func (c *Cgroup) Procs() ([]int, error) { return nil, ErrUnsupported }

// AddProc reports ErrUnsupported.
func (c *Cgroup) AddProc(pid int) error { return ErrUnsupported }

// Freeze reports ErrUnsupported.
func (c *Cgroup) Freeze(ctx context.Context) error { return ErrUnsupported }

// Thaw reports ErrUnsupported.
func (c *Cgroup) Thaw(ctx context.Context) error { return ErrUnsupported }

// Frozen reports ErrUnsupported.
func (c *Cgroup) Frozen() (bool, error) { return false, ErrUnsupported }

// Kill reports ErrUnsupported.
func (c *Cgroup) Kill(ctx context.Context) error { return ErrUnsupported }

// Destroy reports ErrUnsupported.
func (c *Cgroup) Destroy(ctx context.Context) error { return ErrUnsupported }

// Stats reports ErrUnsupported.
func (c *Cgroup) Stats() (Stats, error) { return Stats{}, ErrUnsupported }
