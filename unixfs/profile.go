package unixfs

import (
	"fmt"

	"github.com/ipfrs/ipfrs-mount/chunker"
)

// DirEstimate names how a directory's size is estimated against the HAMT
// threshold.
type DirEstimate int

// The two estimation rules of IPIP-499.
const (
	// EstimateLinks sums name length plus CID length (unixfs-v0-2015, Kubo's
	// default configuration).
	EstimateLinks DirEstimate = iota
	// EstimateBlock measures the serialized dag-pb block (unixfs-v1-2025).
	EstimateBlock
)

// Layout fixes how content becomes a DAG: the same bytes under the same
// Layout always give the same CID.
type Layout struct {
	Name          string
	Chunker       chunker.Spec
	MaxLinks      int // links per internal file node (balanced layout)
	HAMTThreshold int // shard directories whose estimate exceeds this
	HAMTFanout    int
	DirEstimate   DirEstimate
}

// LayoutFor returns the named layout: "default", "kubo" or "unixfs-v1-2025".
// All use CIDv1, sha2-256 and raw leaves.
func LayoutFor(name string) (Layout, error) {
	l := Layout{Name: name, HAMTThreshold: 256 << 10, HAMTFanout: 256}
	switch name {
	case "default":
		l.Chunker, l.MaxLinks, l.DirEstimate = chunker.DefaultSpec(), 174, EstimateBlock
	case "kubo": // Kubo 0.44 `ipfs add --cid-version=1 --raw-leaves`, default config
		l.Chunker, l.MaxLinks, l.DirEstimate = chunker.FixedSpec(256<<10), 174, EstimateLinks
	case "unixfs-v1-2025": // IPIP-499
		l.Chunker, l.MaxLinks, l.DirEstimate = chunker.FixedSpec(1<<20), 1024, EstimateBlock
	default:
		return Layout{}, fmt.Errorf("unknown profile %q (want default, kubo or unixfs-v1-2025)", name)
	}
	return l, nil
}

// DefaultLayout is FastCDC chunks in Kubo's balanced tree shape.
func DefaultLayout() Layout {
	l, _ := LayoutFor("default")
	return l
}
