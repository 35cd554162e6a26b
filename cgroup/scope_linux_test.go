//go:build linux

package cgroup

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBitmask(t *testing.T) {
	require.Empty(t, bitmask(nil))
	require.Equal(t, []byte{0b10}, bitmask([]int{1}))
	require.Equal(t, []byte{0xff, 0x01}, bitmask([]int{0, 1, 2, 3, 4, 5, 6, 7, 8}))
	require.Equal(t, []byte{0x01, 0, 0x80}, bitmask([]int{23, 0}))
}

func TestScopeProperties(t *testing.T) {
	dir := t.TempDir()
	write := func(f, v string) { require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644)) }
	read := func(f string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, f))
		return string(b), err
	}
	props, err := scopeProperties(read)
	require.NoError(t, err)
	require.Empty(t, props, "no controller files: nothing to pass")

	write("cpuset.cpus", "1\n")
	write("cpuset.mems", "\n") // inherits: not passed
	write("memory.max", "max\n")
	write("pids.max", "64\n")
	props, err = scopeProperties(read)
	require.NoError(t, err)
	got := map[string]any{}
	for _, p := range props {
		got[p.Name] = p.Value.Value()
	}
	require.Equal(t, map[string]any{"AllowedCPUs": []byte{0b10}, "MemoryMax": uint64(math.MaxUint64), "TasksMax": uint64(64)}, got)

	write("pids.max", "lots\n")
	_, err = scopeProperties(read)
	require.Error(t, err)
}

func TestRegisterScopeWantsASliceAndAScope(t *testing.T) {
	c := &Cgroup{Rel: "/clonebot.slice/ab", Dir: t.TempDir()}
	require.ErrorContains(t, c.RegisterScope(t.Context(), 1, "x"), "want /<name>.slice/<name>.scope")
}
