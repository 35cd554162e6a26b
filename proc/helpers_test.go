package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// readTestdata returns testdata/name.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	return b
}

// seedFromTestdata adds every testdata file matching glob to the fuzz corpus.
func seedFromTestdata(f *testing.F, glob string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata matches %q (err %v)", glob, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// wantParseError checks that err is a *ParseError at line (0: any line).
func wantParseError(t *testing.T, err error, line int) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("got error %v (%T); want *ParseError", err, err)
	}
	if line != 0 && pe.Line != line {
		t.Errorf("got error at line %d; want line %d (%v)", pe.Line, line, err)
	}
}

// littleEndian reports whether captures of /proc/net/tcp taken on amd64 can be
// parsed on this host (the kernel prints addresses in host byte order).
func littleEndian() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return bytes.Equal(b[:], []byte{1, 0})
}
