package numa_test

import (
	"fmt"

	"github.com/clonebot/clonebot/api"
	"github.com/clonebot/clonebot/numa"
)

func ExampleParseCPUList() {
	cpus, _ := numa.ParseCPUList("0-3,8,10-11\n")
	fmt.Println(cpus, numa.FormatCPUList(cpus))
	// Output: [0 1 2 3 8 10 11] 0-3,8,10-11
}

func ExampleChoose() {
	topo := &numa.Topology{Nodes: []numa.Node{
		{ID: 0, CPUs: []int{0}, MemFree: 2 << 30},
		{ID: 1, CPUs: []int{1}, MemFree: 4 << 30},
	}}
	in := numa.Inputs{
		Topology:      topo,
		TargetBytes:   map[int]uint64{0: 900 << 20, 1: 100 << 20},
		ClonesPerNode: map[int]int{},
	}
	same, _ := numa.Choose(api.PlaceSame, in)
	first, _ := numa.Choose(api.PlaceSpread, in)
	in.ClonesPerNode[first]++
	second, _ := numa.Choose(api.PlaceSpread, in)
	_, err := numa.Choose("7", in)
	fmt.Println(same, first, second)
	fmt.Println(err)
	// Output:
	// 0 1 0
	// NUMA node 7 does not exist: this host has nodes 0, 1
}
