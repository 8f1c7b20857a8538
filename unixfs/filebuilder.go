package unixfs

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-unixfsnode/data"
	"github.com/ipfs/go-unixfsnode/data/builder"
	dagpb "github.com/ipld/go-codec-dagpb"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
)

// Node is the root of a stored DAG.
type Node struct {
	CID   cid.Cid
	Size  uint64 // content bytes (file size; for directories the sum of their files)
	Tsize uint64 // bytes of every block of the DAG, as dag-pb links count them
}

// fileBuilder lays leaves out in Kubo's balanced layout (boxo
// importer/balanced): every leaf at the same depth, full nodes on the left,
// and - unlike go-unixfsnode's builder - a trailing node with a single child
// is kept, not collapsed, so that CIDs equal Kubo's. Leaves are pushed one at
// a time; memory is one pending node per level.
type fileBuilder struct {
	ctx      context.Context
	put      BlockPutter
	maxLinks int
	levels   [][]Node
	leaves   int
}

func newFileBuilder(ctx context.Context, put BlockPutter, maxLinks int) *fileBuilder {
	return &fileBuilder{ctx: ctx, put: put, maxLinks: maxLinks}
}

// addLeaf appends a stored leaf.
func (b *fileBuilder) addLeaf(n Node) error {
	b.leaves++
	return b.push(0, n)
}

func (b *fileBuilder) push(level int, n Node) error {
	for len(b.levels) <= level {
		b.levels = append(b.levels, make([]Node, 0, b.maxLinks))
	}
	b.levels[level] = append(b.levels[level], n)
	if len(b.levels[level]) < b.maxLinks {
		return nil
	}
	parent, err := b.pack(b.levels[level])
	if err != nil {
		return err
	}
	b.levels[level] = b.levels[level][:0]
	return b.push(level+1, parent)
}

// finish closes every partial node and returns the root.
func (b *fileBuilder) finish() (Node, error) {
	if b.leaves == 0 {
		empty := sha256CID(cid.Raw, nil)
		return Node{CID: empty}, b.put.Put(b.ctx, empty, []byte{})
	}
	for k := 0; k < len(b.levels); k++ {
		higher := false
		for _, l := range b.levels[k+1:] {
			higher = higher || len(l) > 0
		}
		items := b.levels[k]
		if !higher && len(items) == 1 {
			return items[0], nil
		}
		if len(items) == 0 {
			continue
		}
		parent, err := b.pack(items)
		if err != nil {
			return Node{}, err
		}
		b.levels[k] = items[:0]
		if err := b.push(k+1, parent); err != nil {
			return Node{}, err
		}
	}
	return Node{}, fmt.Errorf("unixfs: balanced layout ended without a root")
}

// pack stores an internal file node over children.
func (b *fileBuilder) pack(children []Node) (Node, error) {
	enc, size, tsize, err := encodeFileNode(children)
	if err != nil {
		return Node{}, err
	}
	c := sha256CID(cid.DagProtobuf, enc)
	if err := b.put.Put(b.ctx, c, enc); err != nil {
		return Node{}, err
	}
	return Node{CID: c, Size: size, Tsize: tsize + uint64(len(enc))}, nil
}

// encodeFileNode encodes a dag-pb UnixFS File node linking children, and
// returns its content size and the sum of its children's Tsize.
func encodeFileNode(children []Node) (enc []byte, size, tsize uint64, err error) {
	sizes := make([]uint64, len(children))
	for i, c := range children {
		sizes[i] = c.Size
		size += c.Size
		tsize += c.Tsize
	}
	ufd, err := builder.BuildUnixFS(func(b *builder.Builder) {
		builder.DataType(b, data.Data_File)
		builder.FileSize(b, size)
		builder.BlockSizes(b, sizes)
	})
	if err != nil {
		return nil, 0, 0, err
	}
	nb := dagpb.Type.PBNode.NewBuilder()
	ma, err := nb.BeginMap(2)
	if err != nil {
		return nil, 0, 0, err
	}
	la, err := ma.AssembleEntry("Links")
	if err != nil {
		return nil, 0, 0, err
	}
	links, err := la.BeginList(int64(len(children)))
	if err != nil {
		return nil, 0, 0, err
	}
	for _, c := range children {
		l, err := builder.BuildUnixFSDirectoryEntry("", int64(c.Tsize), cidlink.Link{Cid: c.CID})
		if err != nil {
			return nil, 0, 0, err
		}
		if err := links.AssembleValue().AssignNode(l); err != nil {
			return nil, 0, 0, err
		}
	}
	if err := links.Finish(); err != nil {
		return nil, 0, 0, err
	}
	if err := ma.AssembleKey().AssignString("Data"); err != nil {
		return nil, 0, 0, err
	}
	if err := ma.AssembleValue().AssignBytes(data.EncodeUnixFSData(ufd)); err != nil {
		return nil, 0, 0, err
	}
	if err := ma.Finish(); err != nil {
		return nil, 0, 0, err
	}
	enc, err = dagpb.AppendEncode(make([]byte, 0, 64+48*len(children)), nb.Build())
	return enc, size, tsize, err
}
