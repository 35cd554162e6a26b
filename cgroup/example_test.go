package cgroup_test

import (
	"fmt"
	"strings"

	"github.com/clonebot/clonebot/cgroup"
)

func ExampleParseMountinfo() {
	mountinfo := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	mounts, err := cgroup.ParseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range mounts {
		fmt.Println(m.FSType, m.MountPoint, m.SuperOptions)
	}
	// Output:
	// tmpfs /sys/fs/cgroup rw,mode=755
	// cgroup /sys/fs/cgroup/memory rw,memory
	// cgroup2 /sys/fs/cgroup/unified rw
}
