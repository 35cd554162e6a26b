//go:build !linux

package proc

import (
	"errors"
	"testing"
)

func TestStubsUnsupported(t *testing.T) {
	if _, err := Default.Status(1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Status: got %v; want ErrUnsupported", err)
	}
	if _, err := Default.Tree(1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Tree: got %v; want ErrUnsupported", err)
	}
	if Default.Exists(1) {
		t.Errorf("Exists: got true; want false")
	}
}
