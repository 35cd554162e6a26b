package proc_test

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/clonebot/clonebot/proc"
)

func ExampleParseStat() {
	st, err := proc.ParseStat(strings.NewReader(
		"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 10 0 0\n"))
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Comm, st.IsKernelThread())
	// Output: kthreadd true
}

func ExampleFD_Unsupported() {
	for _, target := range []string{"anon_inode:[eventfd]", "anon_inode:[io_uring]", "/dev/dri/card0"} {
		fd := proc.ClassifyFD(3, target)
		if reason, bad := fd.Unsupported(); bad {
			fmt.Printf("%s: refuse (%s)\n", fd.Kind, reason)
		} else {
			fmt.Printf("%s: ok\n", fd.Kind)
		}
	}
	// Output:
	// anon_inode: ok
	// anon_inode: refuse (io_uring instance)
	// file: refuse (GPU device /dev/dri/card0)
}

func ExampleNodeBytes() {
	maps, err := proc.ParseNUMAMaps(strings.NewReader(
		"7f0000000000 bind:0-1 anon=3 dirty=3 N0=1 N1=2 kernelpagesize_kB=4\n" +
			"7f0080000000 default file=/dev/hugepages/buf huge dirty=1 N1=1 kernelpagesize_kB=2048\n"))
	if err != nil {
		panic(err)
	}
	nb := proc.NodeBytes(maps)
	fmt.Println(nb[0], nb[1])
	// Output: 4096 2105344
}

func ExampleFS_Tree() {
	pids, err := proc.Default.Tree(1234)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Println("no process with PID 1234")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("would freeze", pids)
}
