package unixfs

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-unixfsnode/data"
	dagpb "github.com/ipld/go-codec-dagpb"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/multiformats/go-multicodec"
)

// Kind is what a UnixFS node is.
type Kind int

// Node kinds.
const (
	KindFile Kind = iota
	KindDirectory
	KindSymlink
)

func (k Kind) String() string {
	switch k {
	case KindDirectory:
		return "directory"
	case KindSymlink:
		return "symlink"
	default:
		return "file"
	}
}

// Errors about the shape of DAGs.
var (
	ErrNotDir      = errors.New("not a directory")
	ErrNoEntry     = errors.New("no such file or directory")
	ErrNotFile     = errors.New("not a file")
	ErrMalformed   = errors.New("malformed UnixFS node")
	ErrUnsupported = errors.New("unsupported codec")
)

// link is one dag-pb link.
type link struct {
	Name  string
	CID   cid.Cid
	Tsize uint64
}

// pbNode is a decoded dag-pb UnixFS node.
type pbNode struct {
	blockLen   uint64 // size of the encoded block
	typ        int64  // data.Data_*
	data       []byte
	fileSize   uint64
	blockSizes []uint64
	fanout     uint64
	hashType   uint64
	links      []link
}

// loadPB reads, verifies and decodes a dag-pb node.
func loadPB(ctx context.Context, bs BlockViewer, c cid.Cid) (*pbNode, error) {
	if c.Prefix().Codec != cid.DagProtobuf {
		return nil, fmt.Errorf("%s: %w", c, ErrUnsupported)
	}
	var n *pbNode
	err := bs.View(ctx, c, func(b []byte) error {
		if err := CheckHash(c, b); err != nil {
			return err
		}
		var err error
		n, err = decodePB(b)
		if n != nil {
			n.blockLen = uint64(len(b))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

func decodePB(b []byte) (*pbNode, error) {
	nb := dagpb.Type.PBNode.NewBuilder()
	if err := dagpb.DecodeBytes(nb, b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	pb := nb.Build().(dagpb.PBNode)
	n := &pbNode{}
	it := pb.Links.Iterator()
	for !it.Done() {
		_, l := it.Next()
		cl, ok := l.Hash.Link().(cidlink.Link)
		if !ok {
			return nil, fmt.Errorf("%w: link is not a CID", ErrMalformed)
		}
		lk := link{CID: cl.Cid}
		if l.Name.Exists() {
			lk.Name = l.Name.Must().String()
		}
		if l.Tsize.Exists() {
			if t := l.Tsize.Must().Int(); t > 0 {
				lk.Tsize = uint64(t)
			}
		}
		n.links = append(n.links, lk)
	}
	if !pb.Data.Exists() {
		return nil, fmt.Errorf("%w: dag-pb node has no UnixFS data", ErrMalformed)
	}
	ufs, err := data.DecodeUnixFSData(pb.Data.Must().Bytes())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	n.typ = ufs.FieldDataType().Int()
	if d := ufs.FieldData(); d.Exists() {
		n.data = d.Must().Bytes()
	}
	if fs := ufs.FieldFileSize(); fs.Exists() {
		n.fileSize = uint64(fs.Must().Int())
	}
	if fo := ufs.FieldFanout(); fo.Exists() {
		n.fanout = uint64(fo.Must().Int())
	}
	if h := ufs.FieldHashType(); h.Exists() {
		n.hashType = uint64(h.Must().Int())
	}
	bsi := ufs.FieldBlockSizes().Iterator()
	for !bsi.Done() {
		_, v := bsi.Next()
		s, err := v.AsInt()
		if err != nil || s < 0 {
			return nil, fmt.Errorf("%w: bad block size", ErrMalformed)
		}
		n.blockSizes = append(n.blockSizes, uint64(s))
	}
	return n, nil
}

// kind maps the node's UnixFS type to a Kind.
func (n *pbNode) kind() (Kind, error) {
	switch n.typ {
	case data.Data_File, data.Data_Raw:
		return KindFile, nil
	case data.Data_Directory, data.Data_HAMTShard:
		return KindDirectory, nil
	case data.Data_Symlink:
		return KindSymlink, nil
	default:
		return 0, fmt.Errorf("%w: UnixFS type %d", ErrUnsupported, n.typ)
	}
}

// Info describes a DAG root.
type Info struct {
	CID    cid.Cid
	Kind   Kind
	Size   uint64 // file bytes, symlink target length; 0 for directories
	Tsize  uint64 // bytes of every block of the DAG, as a link to it counts them
	Target string // symlink target
}

// Stat reads what the root c is.
func Stat(ctx context.Context, bs BlockViewer, c cid.Cid) (Info, error) {
	switch c.Prefix().Codec {
	case cid.Raw:
		var size int
		err := bs.View(ctx, c, func(b []byte) error { size = len(b); return nil })
		return Info{CID: c, Kind: KindFile, Size: uint64(size), Tsize: uint64(size)}, err
	case cid.DagProtobuf:
		n, err := loadPB(ctx, bs, c)
		if err != nil {
			return Info{}, err
		}
		k, err := n.kind()
		if err != nil {
			return Info{}, fmt.Errorf("%s: %w", c, err)
		}
		info := Info{CID: c, Kind: k, Tsize: n.blockLen}
		for _, l := range n.links {
			info.Tsize += l.Tsize
		}
		switch k {
		case KindFile:
			info.Size = n.contentSize()
		case KindSymlink:
			info.Target = string(n.data)
			info.Size = uint64(len(n.data))
		}
		return info, nil
	default:
		return Info{}, fmt.Errorf("%s: %w %s", c, ErrUnsupported, codecName(c))
	}
}

// contentSize is a file node's length: its filesize field, or inline data
// plus the children's sizes when the field is absent.
func (n *pbNode) contentSize() uint64 {
	if n.fileSize > 0 || len(n.links) == 0 && len(n.data) == 0 {
		return n.fileSize
	}
	s := uint64(len(n.data))
	for _, b := range n.blockSizes {
		s += b
	}
	return s
}

func codecName(c cid.Cid) string {
	return multicodec.Code(c.Prefix().Codec).String()
}
