package unixfs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
	_ "github.com/ipld/go-ipld-prime/codec/cbor"    // the IPLD codecs gateways serve:
	_ "github.com/ipld/go-ipld-prime/codec/dagjson" // registered so that their blocks
	_ "github.com/ipld/go-ipld-prime/codec/json"    // are known codecs, walked for links
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
)

// ErrInconsistent means a DAG's nodes contradict each other or
// themselves: a file whose size is not its data plus its blocks, a block
// size that is not the child's size, a name twice in one directory.
var ErrInconsistent = errors.New("inconsistent UnixFS DAG")

// ErrIncomplete means a block a DAG links to is in neither the DAG's
// source nor the store.
var ErrIncomplete = errors.New("incomplete DAG")

// BlockShape is what CheckBlock learns of one block that the checks
// across blocks need.
type BlockShape struct {
	Links []cid.Cid
	// File: the block is file content (a raw block, or a dag-pb File or
	// Raw node) of Size bytes.
	File bool
	Size uint64
	// ChildSizes are a file node's block sizes: what each link's content
	// must measure.
	ChildSizes []uint64
	// Shard: the block is a HAMT shard; Subshard[i] tells whether link i
	// leads to a sub-shard (rather than to an entry), whose entries then
	// belong to the same directory. Names are the entry names (basic
	// directory or shard, prefixes cut).
	Shard    bool
	Subshard []bool
	Names    []string
}

// CheckBlock checks one block on its own, without its children: its codec
// is one this repo decodes (raw, dag-pb as UnixFS, or a codec go-ipld-prime
// has registered such as dag-cbor), it decodes, and a UnixFS node agrees
// with itself (a file's size is its inline data plus its block sizes, one
// block size per link; a directory names no entry twice; a HAMT has a
// power-of-two fanout and well-formed link names). It does not hash b.
func CheckBlock(c cid.Cid, b []byte) (BlockShape, error) {
	switch c.Prefix().Codec {
	case cid.Raw:
		return BlockShape{File: true, Size: uint64(len(b))}, nil
	case cid.DagProtobuf:
	default:
		links, err := Links(c, b)
		return BlockShape{Links: links}, err
	}
	d, err := Decode(b)
	if err != nil {
		return BlockShape{}, fmt.Errorf("%s: %w", c, err)
	}
	s := BlockShape{Links: make([]cid.Cid, len(d.Links))}
	for i, l := range d.Links {
		s.Links[i] = l.CID
	}
	switch {
	case d.Kind == KindFile:
		sum := d.DataLen
		for _, bs := range d.BlockSizes {
			if sum+bs < sum {
				return s, fmt.Errorf("%s: %w: block sizes overflow", c, ErrInconsistent)
			}
			sum += bs
		}
		if d.Size != sum {
			return s, fmt.Errorf("%s: %w: file claims %d bytes but its data and blocks hold %d", c, ErrInconsistent, d.Size, sum)
		}
		s.File, s.Size, s.ChildSizes = true, d.Size, d.BlockSizes
	case d.Kind == KindSymlink:
		if len(d.Links) > 0 {
			return s, fmt.Errorf("%s: %w: symlink with %d links", c, ErrInconsistent, len(d.Links))
		}
	case d.HAMT:
		s.Shard = true
		s.Subshard = make([]bool, len(d.Links))
		for i, l := range d.Links {
			if len(l.Name) < d.Prefix || !isUpperHex(l.Name[:d.Prefix]) {
				return s, fmt.Errorf("%s: %w: HAMT link name %q", c, ErrMalformed, l.Name)
			}
			if len(l.Name) == d.Prefix {
				s.Subshard[i] = true
				continue
			}
			s.Names = append(s.Names, l.Name[d.Prefix:])
		}
	default:
		s.Names = make([]string, len(d.Links))
		for i, l := range d.Links {
			s.Names[i] = l.Name
		}
	}
	if name, ok := duplicate(s.Names); ok {
		return s, fmt.Errorf("%s: %w: directory names %q twice", c, ErrInconsistent, name)
	}
	return s, nil
}

func isUpperHex(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !('0' <= r && r <= '9' || 'A' <= r && r <= 'F') }) < 0
}

func duplicate(names []string) (string, bool) {
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		if _, ok := seen[n]; ok {
			return n, true
		}
		seen[n] = struct{}{}
	}
	return "", false
}

// DAGChecker checks DAGs whose blocks arrive in any order (a CAR's), then
// checks what needs them all: every block reachable from the roots is
// there, each child of a file measures its block size, and a HAMT names
// no entry twice across its shards. It keeps each block's shape, not its
// bytes.
type DAGChecker struct {
	shapes map[string]BlockShape
}

// NewDAGChecker returns an empty checker.
func NewDAGChecker() *DAGChecker { return &DAGChecker{shapes: map[string]BlockShape{}} }

// Add checks one block (see CheckBlock) and keeps its shape. It does not
// hash b: the caller has. A block that fails still counts as present,
// without links.
func (v *DAGChecker) Add(c cid.Cid, b []byte) error {
	s, err := CheckBlock(c, b)
	if err != nil {
		s = BlockShape{}
	}
	v.shapes[c.KeyString()] = s
	return err
}

// Added reports whether c was added.
func (v *DAGChecker) Added(c cid.Cid) bool {
	_, ok := v.shapes[c.KeyString()]
	return ok
}

// Finish walks the DAGs under roots through the blocks added, falling back
// to bs (nil: none) for blocks not added, which it checks as Add would.
// It returns the first problem found in depth-first order.
func (v *DAGChecker) Finish(ctx context.Context, roots []cid.Cid, bs BlockViewer) error {
	type item struct {
		c     cid.Cid
		from  string // the parent and which link, for messages
		size  int64  // the content size a file parent expects; -1 if none
		names map[string]struct{}
	}
	var stack []item
	for i := len(roots) - 1; i >= 0; i-- {
		stack = append(stack, item{c: roots[i], from: "root", size: -1})
	}
	visited := map[string]struct{}{}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		s, err := v.shape(ctx, it.c, bs)
		if errors.Is(err, ErrIncomplete) {
			return fmt.Errorf("%w: block %s (%s) is missing", ErrIncomplete, it.c, it.from)
		}
		if err != nil {
			return err
		}
		if it.size >= 0 {
			if !s.File {
				return fmt.Errorf("%s: %w: a file's block (%s) is not file content", it.c, ErrInconsistent, it.from)
			}
			if s.Size != uint64(it.size) {
				return fmt.Errorf("%s: %w: block size %d in its parent (%s) but it holds %d bytes", it.c, ErrInconsistent, it.size, it.from, s.Size)
			}
		}
		if it.names != nil {
			if !s.Shard {
				return fmt.Errorf("%s: %w: a HAMT sub-shard (%s) is not a shard", it.c, ErrInconsistent, it.from)
			}
			for _, n := range s.Names {
				if _, ok := it.names[n]; ok {
					return fmt.Errorf("%s: %w: HAMT directory names %q twice", it.c, ErrInconsistent, n)
				}
				it.names[n] = struct{}{}
			}
		}
		// A block reached twice is checked once, except a file's block
		// (its expected size comes from each parent) and a sub-shard
		// (its names count in each directory holding it).
		key := it.c.KeyString()
		if _, ok := visited[key]; ok {
			continue
		}
		visited[key] = struct{}{}
		names := it.names
		if s.Shard && names == nil {
			names = make(map[string]struct{}, len(s.Names))
			for _, n := range s.Names {
				names[n] = struct{}{}
			}
		}
		for i := len(s.Links) - 1; i >= 0; i-- {
			child := item{c: s.Links[i], from: fmt.Sprintf("link %d of %s", i, it.c), size: -1}
			switch {
			case s.File:
				child.size = int64(s.ChildSizes[i])
			case s.Shard && s.Subshard[i]:
				child.names = names
			}
			stack = append(stack, child)
		}
	}
	return nil
}

// shape is c's shape: added, read from bs, or ErrIncomplete.
func (v *DAGChecker) shape(ctx context.Context, c cid.Cid, bs BlockViewer) (BlockShape, error) {
	if s, ok := v.shapes[c.KeyString()]; ok {
		return s, nil
	}
	if c.Prefix().MhType == mh.IDENTITY {
		dec, err := mh.Decode(c.Hash())
		if err != nil {
			return BlockShape{}, fmt.Errorf("%s: %w", c, err)
		}
		return CheckBlock(c, dec.Digest)
	}
	if bs == nil {
		return BlockShape{}, ErrIncomplete
	}
	var s BlockShape
	err := bs.View(ctx, c, func(b []byte) error {
		if err := CheckHash(c, b); err != nil {
			return err
		}
		var err error
		s, err = CheckBlock(c, b)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return BlockShape{}, ErrIncomplete
	}
	if err != nil {
		return BlockShape{}, err
	}
	v.shapes[c.KeyString()] = s
	return s, nil
}
