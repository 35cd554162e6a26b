//go:build !linux

package criu

import "context"

// Runner runs CRIU operations; only Linux has CRIU.
type Runner struct{ Path string }

// Info is what Probe learns about the CRIU binary.
type Info struct {
	Path        string
	Version     int
	CheckOK     bool
	CheckOutput string
	Features    map[string]bool
}

// VersionString is Version as "4.2.1".
func (i *Info) VersionString() string { return FormatVersion(i.Version) }

// Probe reports ErrUnsupported.
func (r Runner) Probe(ctx context.Context) (*Info, error) { return &Info{}, ErrUnsupported }
