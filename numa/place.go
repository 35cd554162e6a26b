package numa

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/clonebot/clonebot/api"
)

// Inputs is what Choose decides from.
type Inputs struct {
	Topology *Topology
	// TargetBytes is the target's resident bytes per node (from numa_maps).
	TargetBytes map[int]uint64
	// ClonesPerNode counts the live clones already placed on each node.
	ClonesPerNode map[int]int
	// NeedBytes is the memory the clone will need (the target's RSS);
	// 0 means don't check free memory.
	NeedBytes uint64
}

// NoSuchNodeError reports a placement on a node the host does not have.
type NoSuchNodeError struct {
	Node int
	Have []int
}

func (e *NoSuchNodeError) Error() string {
	have := make([]string, len(e.Have))
	for i, id := range e.Have {
		have[i] = strconv.Itoa(id)
	}
	word := "nodes"
	if len(have) == 1 {
		word = "only node"
	}
	return fmt.Sprintf("NUMA node %d does not exist: this host has %s %s", e.Node, word, strings.Join(have, ", "))
}

// NoMemoryError reports that the chosen node has less free memory than the
// clone needs.
type NoMemoryError struct {
	Node       int
	Need, Free uint64
}

func (e *NoMemoryError) Error() string {
	return fmt.Sprintf("NUMA node %d has %d MiB free but the clone needs %d MiB: pick another node (numa) or free memory on it",
		e.Node, e.Free>>20, e.Need>>20)
}

// Choose picks the node for a clone.
//
//   - "" or "same": the node holding most of the target's bytes (ties: the
//     lowest id); without any data, the node with the most free memory.
//   - "spread": the node least crowded by clones: ranked by ClonesPerNode
//     ascending, then MemFree descending, then id ascending; so successive
//     clones on a two-node host alternate between the nodes as long as the
//     caller updates ClonesPerNode.
//   - "N": node N, which must exist (else *NoSuchNodeError).
//
// When NeedBytes > 0, a policy skips nodes whose MemFree is smaller, and when
// no node fits, or the explicit node does not, the error is a *NoMemoryError
// for the node that would have been chosen. Nodes without CPUs (memory-only
// nodes) are never chosen by a policy, and naming one is an error.
func Choose(p api.Placement, in Inputs) (int, error) {
	if err := p.Validate(); err != nil {
		return -1, err
	}
	t := in.Topology
	if t == nil || len(t.Nodes) == 0 {
		return -1, errors.New("numa: no topology to place on")
	}
	if id, ok := p.Node(); ok {
		n, ok := t.Node(id)
		if !ok {
			return -1, &NoSuchNodeError{Node: id, Have: t.IDs()}
		}
		if len(n.CPUs) == 0 {
			return -1, fmt.Errorf("NUMA node %d has no CPUs (memory-only node): pick a node with CPUs", id)
		}
		if in.NeedBytes > n.MemFree {
			return -1, &NoMemoryError{Node: id, Need: in.NeedBytes, Free: n.MemFree}
		}
		return id, nil
	}

	var cand []Node
	for _, n := range t.Nodes {
		if len(n.CPUs) > 0 {
			cand = append(cand, n)
		}
	}
	if len(cand) == 0 {
		return -1, errors.New("numa: no node has CPUs")
	}
	byFree := func(a, b Node) int {
		if a.MemFree != b.MemFree {
			if a.MemFree > b.MemFree {
				return -1
			}
			return 1
		}
		return a.ID - b.ID
	}
	switch p {
	case api.PlaceSpread:
		slices.SortStableFunc(cand, func(a, b Node) int {
			if ca, cb := in.ClonesPerNode[a.ID], in.ClonesPerNode[b.ID]; ca != cb {
				return ca - cb
			}
			return byFree(a, b)
		})
	default: // "", api.PlaceSame
		var sum uint64
		for _, n := range cand {
			sum += in.TargetBytes[n.ID]
		}
		if sum == 0 {
			slices.SortStableFunc(cand, byFree)
		} else {
			slices.SortStableFunc(cand, func(a, b Node) int {
				if ba, bb := in.TargetBytes[a.ID], in.TargetBytes[b.ID]; ba != bb {
					if ba > bb {
						return -1
					}
					return 1
				}
				return a.ID - b.ID
			})
		}
	}
	for _, n := range cand {
		if in.NeedBytes <= n.MemFree {
			return n.ID, nil
		}
	}
	return -1, &NoMemoryError{Node: cand[0].ID, Need: in.NeedBytes, Free: cand[0].MemFree}
}

// LocalFraction returns bytes[node] / the sum of bytes, or 0 when the sum is 0.
func LocalFraction(bytes map[int]uint64, node int) float64 {
	var sum float64
	for _, b := range bytes {
		sum += float64(b)
	}
	if sum == 0 {
		return 0
	}
	return float64(bytes[node]) / sum
}
