package unixfs

import (
	"fmt"

	"github.com/ipfs/go-unixfsnode/data"
)

// Decoded is a dag-pb UnixFS node as a DAG walker sees it (a gateway
// choosing the blocks of a dag-scope or a byte range).
type Decoded struct {
	Kind Kind
	HAMT bool // a HAMT shard: links named by a Prefix-long hex prefix lead to sub-shards
	// Prefix is the length of the hex prefix of a HAMT shard's link names.
	Prefix int
	// Fanout and HashType of a HAMT shard.
	Fanout, HashType uint64
	Links            []DirEntry
	// For files: the inline data's length, each child's content size and
	// the whole file's length.
	DataLen    uint64
	BlockSizes []uint64
	Size       uint64
}

// Decode decodes a dag-pb block as a UnixFS node: the one dag-pb decoder
// of the module (the readers of this package, the gateway's DAG walks and
// versions.Diff use it). It does not check the hash: callers hash what
// they view.
func Decode(b []byte) (Decoded, error) {
	n, err := decodePB(b)
	if err != nil {
		return Decoded{}, err
	}
	k, err := n.kind()
	if err != nil {
		return Decoded{}, err
	}
	d := Decoded{Kind: k, DataLen: uint64(len(n.data)), BlockSizes: n.blockSizes}
	for _, l := range n.links {
		d.Links = append(d.Links, DirEntry{Name: l.Name, CID: l.CID, Tsize: l.Tsize})
	}
	if k == KindFile {
		if len(n.blockSizes) != len(n.links) {
			return Decoded{}, fmt.Errorf("%w: %d links but %d block sizes", ErrMalformed, len(n.links), len(n.blockSizes))
		}
		d.Size = n.contentSize()
	}
	if n.typ == data.Data_HAMTShard {
		if n.fanout < 2 || n.fanout&(n.fanout-1) != 0 || n.fanout > 1<<16 {
			return Decoded{}, fmt.Errorf("%w: HAMT fanout %d", ErrMalformed, n.fanout)
		}
		d.HAMT, d.Fanout, d.HashType = true, n.fanout, n.hashType
		d.Prefix = len(fmt.Sprintf("%X", n.fanout-1))
	}
	return d, nil
}
