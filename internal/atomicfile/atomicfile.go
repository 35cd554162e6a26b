// Package atomicfile writes a file so that readers, and a machine that
// crashes, see either the old content or the new one: write to a
// temporary file beside it, fsync, rename over it.
package atomicfile

import "os"

// Write replaces path with data (mode perm for a new file).
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
