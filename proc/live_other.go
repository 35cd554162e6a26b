//go:build !linux

package proc

// Status reads /proc/PID/status; it returns ErrUnsupported on this OS.
func (p FS) Status(pid int) (*Status, error) { return nil, ErrUnsupported }

// Stat reads /proc/PID/stat; it returns ErrUnsupported on this OS.
func (p FS) Stat(pid int) (*Stat, error) { return nil, ErrUnsupported }

// Maps reads /proc/PID/maps; it returns ErrUnsupported on this OS.
func (p FS) Maps(pid int) ([]Mapping, error) { return nil, ErrUnsupported }

// NUMAMaps reads /proc/PID/numa_maps; it returns ErrUnsupported on this OS.
func (p FS) NUMAMaps(pid int) ([]NUMAMap, error) { return nil, ErrUnsupported }

// FDs lists /proc/PID/fd; it returns ErrUnsupported on this OS.
func (p FS) FDs(pid int) ([]FD, error) { return nil, ErrUnsupported }

// FDInfo reads /proc/PID/fdinfo/FD; it returns ErrUnsupported on this OS.
func (p FS) FDInfo(pid, fd int) (*FDInfo, error) { return nil, ErrUnsupported }

// Threads lists /proc/PID/task; it returns ErrUnsupported on this OS.
func (p FS) Threads(pid int) ([]int, error) { return nil, ErrUnsupported }

// Children lists pid's children; it returns ErrUnsupported on this OS.
func (p FS) Children(pid int) ([]int, error) { return nil, ErrUnsupported }

// Tree lists pid and its descendants; it returns ErrUnsupported on this OS.
func (p FS) Tree(pid int) ([]int, error) { return nil, ErrUnsupported }

// Cgroup reads /proc/PID/cgroup; it returns ErrUnsupported on this OS.
func (p FS) Cgroup(pid int) ([]CgroupEntry, error) { return nil, ErrUnsupported }

// NetTCP reads /proc/PID/net/tcp{,6}; it returns ErrUnsupported on this OS.
func (p FS) NetTCP(pid int) ([]Socket, error) { return nil, ErrUnsupported }

// Exists reports whether /proc/PID exists; it is always false on this OS.
func (p FS) Exists(pid int) bool { return false }

// Alive reports whether PID is a live process; it is always false on this OS.
func (p FS) Alive(pid int) bool { return false }

// SocketHolders finds the holders of a socket; it returns ErrUnsupported on this OS.
func (p FS) SocketHolders(inode uint64, max int) ([]int, error) { return nil, ErrUnsupported }

// Cmdline reads /proc/PID/cmdline; it returns ErrUnsupported on this OS.
func (p FS) Cmdline(pid int) ([]string, error) { return nil, ErrUnsupported }
