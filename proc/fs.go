package proc

// FS reads a proc file system rooted at Root. The zero value reads "/proc".
// Tests point Root at a fake tree built in t.TempDir(). Its methods work on
// Linux only and return ErrUnsupported elsewhere.
type FS struct {
	// Root is the mount point of proc; "" means "/proc".
	Root string
}

// Default reads the host's /proc.
var Default = FS{Root: "/proc"}

func (p FS) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}
