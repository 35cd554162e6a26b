//go:build linux

package clone

import (
	"strings"
	"testing"
)

func TestRoomCheck(t *testing.T) {
	const M = 1 << 20
	for _, tc := range []struct {
		name string
		r    room
		want string // "" = fits; else a piece of the refusal
	}{
		{"fits", room{dump: 100 * M, largest: 100 * M, imgDir: "/img", imgFree: 200 * M, imgKnown: true, avail: 1000 * M}, ""},
		{"exactly fits", room{dump: 100 * M, largest: 50 * M, imgDir: "/img", imgFree: 100 * M, imgKnown: true, avail: 150 * M}, ""},
		{"image dir too small", room{dump: 33 * M, largest: 33 * M, imgDir: "/img", imgFree: 4 * M, imgKnown: true, avail: 1000 * M},
			"does not fit the image directory /img (4 MiB free)"},
		{"image dir unknown", room{dump: 33 * M, largest: 33 * M, imgDir: "/img", avail: 1000 * M}, ""},
		{"memory short", room{dump: 600 * M, largest: 400 * M, imgDir: "/img", imgFree: 5000 * M, imgKnown: true, avail: 900 * M},
			"need 1000 MiB while the clone is made, and the host has 900 MiB available"},
		{"forked workers share", room{dump: 800 * M, largest: 100 * M, imgDir: "/img", imgFree: 5000 * M, imgKnown: true, avail: 900 * M}, ""},
		{"memory unknown", room{dump: 600 * M, largest: 600 * M, imgDir: "/img", imgFree: 5000 * M, imgKnown: true}, ""},
		{"tiny need rounds up", room{dump: 10, largest: 10, imgDir: "/img", imgFree: 5, imgKnown: true, avail: 1000 * M}, "(1 MiB resident"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.check(42)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v; want it to fit", err)
			case tc.want != "" && err == nil:
				t.Fatalf("got nil; want a refusal containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("got %q; want it to contain %q", err, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), "PID 42"):
				t.Fatalf("got %q; want it to name PID 42", err)
			}
		})
	}
}
