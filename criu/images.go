package criu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"google.golang.org/protobuf/proto"
)

// DetachTerminals rewrites the tty-info image in dir so that no terminal is
// tied to a session: the clone of a process started from a shell gets a new
// terminal of its own (passed with InheritFd), and CRIU would otherwise look
// for the shell's session leader, which is not part of the dump ("No task
// found with sid"). A dump without terminals has no tty-info image: no-op.
func DetachTerminals(dir string) error {
	return rewriteImage(filepath.Join(dir, "tty-info.img"), &tty.TtyInfoEntry{}, func(m proto.Message) error {
		t, ok := m.(*tty.TtyInfoEntry)
		if !ok {
			return fmt.Errorf("unexpected entry %T", m)
		}
		zero := uint32(0)
		t.Sid, t.Pgrp = &zero, &zero
		return nil
	})
}

// SkipSizeCheck rewrites files.img in dir so that CRIU does not check, at
// restore, the size and mode of the external files named by keys
// (file[mnt:inode]):
// they are replaced by files of the clone's own (InheritFd), whose size has
// nothing to do with the original's. A dump without them is left alone.
func SkipSizeCheck(dir string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	return rewriteImage(filepath.Join(dir, "files.img"), &fdinfo.FileEntry{}, func(m proto.Message) error {
		f, ok := m.(*fdinfo.FileEntry)
		if !ok {
			return fmt.Errorf("unexpected entry %T", m)
		}
		if r := f.GetReg(); r != nil && r.GetExt() && want[r.GetName()] {
			r.Size, r.Mode = nil, nil
		}
		return nil
	})
}

// rewriteImage decodes the image at p as entries of type entry, applies
// edit to each and writes it back atomically. A missing image is no error.
func rewriteImage(p string, entry proto.Message, edit func(proto.Message) error) error {
	in, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	img, err := crit.New(in, nil, "", false, false).Decode(entry)
	in.Close()
	if err != nil {
		return fmt.Errorf("decode %s: %w", p, err)
	}
	for _, e := range img.Entries {
		if err := edit(e.Message); err != nil {
			return fmt.Errorf("edit %s: %w", p, err)
		}
	}
	tmp := p + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := crit.New(nil, out, "", false, false).Encode(img); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("encode %s: %w", p, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
