package unixfs

import (
	"bytes"
	"fmt"

	"github.com/ipfs/go-cid"
	dagpb "github.com/ipld/go-codec-dagpb"
	_ "github.com/ipld/go-ipld-prime/codec/dagcbor" // commits are dag-cbor
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/multicodec"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	mh "github.com/multiformats/go-multihash"
)

// Links returns the CIDs a block links to. Raw blocks have none; dag-pb is
// decoded directly; other codecs go through go-ipld-prime's registry (so
// dag-cbor commits are walked too). data is not retained.
func Links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Prefix().Codec {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		nb := dagpb.Type.PBNode.NewBuilder()
		if err := dagpb.DecodeBytes(nb, data); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", c, ErrMalformed, err)
		}
		pb := nb.Build().(dagpb.PBNode)
		out := make([]cid.Cid, 0, pb.Links.Length())
		it := pb.Links.Iterator()
		for !it.Done() {
			_, l := it.Next()
			cl, ok := l.Hash.Link().(cidlink.Link)
			if !ok {
				return nil, fmt.Errorf("%s: %w: link is not a CID", c, ErrMalformed)
			}
			out = append(out, cl.Cid)
		}
		return out, nil
	}
	dec, err := multicodec.LookupDecoder(c.Prefix().Codec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w %s", c, ErrUnsupported, codecName(c))
	}
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dec(nb, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", c, ErrMalformed, err)
	}
	links, err := traversal.SelectLinks(nb.Build())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	out := make([]cid.Cid, 0, len(links))
	for _, l := range links {
		if cl, ok := l.(cidlink.Link); ok {
			out = append(out, cl.Cid)
		}
	}
	return out, nil
}

// IsIdentity reports whether c carries its data inline (identity multihash):
// such blocks are never stored.
func IsIdentity(c cid.Cid) bool { return c.Prefix().MhType == mh.IDENTITY }
