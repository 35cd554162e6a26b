package criu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
)

// DetachTerminals rewrites the tty-info image in dir so that no terminal is
// tied to a session: the clone of a process started from a shell gets a new
// terminal of its own (passed with InheritFd), and CRIU would otherwise look
// for the shell's session leader, which is not part of the dump ("No task
// found with sid"). A dump without terminals has no tty-info image: no-op.
func DetachTerminals(dir string) error {
	p := filepath.Join(dir, "tty-info.img")
	in, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	img, err := crit.New(in, nil, "", false, false).Decode(&tty.TtyInfoEntry{})
	in.Close()
	if err != nil {
		return fmt.Errorf("decode %s: %w", p, err)
	}
	for _, e := range img.Entries {
		t, ok := e.Message.(*tty.TtyInfoEntry)
		if !ok {
			return fmt.Errorf("decode %s: unexpected entry %T", p, e.Message)
		}
		zero := uint32(0)
		t.Sid, t.Pgrp = &zero, &zero
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
