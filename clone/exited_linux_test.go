//go:build linux

package clone

import (
	"testing"

	"github.com/clonebot/clonebot/nsinit"
)

func TestRanAndExited(t *testing.T) {
	for _, tc := range []struct {
		r    nsinit.Report
		want bool
	}{
		{nsinit.Report{Error: "criu restore failed", Lines: []string{
			"Error (criu/cr-restore.c:1924): Unable to detach 1194: No such process",
			"Error (criu/cr-restore.c:2304): Killing processes because of failure on restore.",
		}}, true},
		{nsinit.Report{Error: "Error (criu/cr-restore.c:1924): Unable to detach 1194: No such process"}, true},
		{nsinit.Report{Error: "criu restore failed", Lines: []string{
			"Error (criu/sk-inet.c:1059): inet: Can't bind inet socket (id 5): Address already in use",
		}}, false},
		{nsinit.Report{Error: "Error (criu/cr-restore.c:1924): Unable to detach 1194: Operation not permitted"}, false},
		{nsinit.Report{}, false},
	} {
		if got := ranAndExited(tc.r); got != tc.want {
			t.Errorf("ranAndExited(%+v): got %v; want %v", tc.r, got, tc.want)
		}
	}
}
