package unixfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-unixfsnode"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/linking"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	mh "github.com/multiformats/go-multihash"
)

// BlockViewer reads blocks. The slice handed to fn is valid only during fn.
type BlockViewer interface {
	View(ctx context.Context, c cid.Cid, fn func([]byte) error) error
}

// BlockPutter stores blocks. Put must not retain data after it returns.
type BlockPutter interface {
	Put(ctx context.Context, c cid.Cid, data []byte) error
}

// sha256CID returns the CIDv1 of data under codec, hashed with sha2-256.
func sha256CID(codec uint64, data []byte) cid.Cid {
	sum := sha256.Sum256(data)
	h, _ := mh.Encode(sum[:], mh.SHA2_256) // cannot fail for a known code and length
	return cid.NewCidV1(codec, h)
}

// CheckHash reports whether data hashes to c, for any hash function
// go-multihash knows.
func CheckHash(c cid.Cid, data []byte) error {
	pref := c.Prefix()
	if pref.MhType == mh.SHA2_256 {
		sum := sha256.Sum256(data)
		dec, err := mh.Decode(c.Hash())
		if err != nil {
			return err
		}
		if !bytes.Equal(dec.Digest, sum[:]) {
			return fmt.Errorf("block %s: %w", c, ErrHashMismatch)
		}
		return nil
	}
	got, err := pref.Sum(data)
	if err != nil {
		return fmt.Errorf("block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("block %s: %w", c, ErrHashMismatch)
	}
	return nil
}

// ErrHashMismatch means stored or received bytes do not hash to their CID.
var ErrHashMismatch = fmt.Errorf("content does not match its hash")

// linkSystem returns an ipld-prime LinkSystem over the block store, used for
// directories and path resolution through go-unixfsnode. Loads are verified
// against their CID (TrustedStorage stays false).
func linkSystem(ctx context.Context, v BlockViewer, p BlockPutter) *ipld.LinkSystem {
	ls := cidlink.DefaultLinkSystem()
	ls.StorageReadOpener = func(lc linking.LinkContext, l ipld.Link) (io.Reader, error) {
		c := l.(cidlink.Link).Cid
		var buf []byte
		err := v.View(ctx, c, func(b []byte) error {
			buf = append(make([]byte, 0, len(b)), b...)
			return nil
		})
		if err != nil {
			return nil, err
		}
		// *bytes.Buffer lets the raw and dag-pb decoders take the bytes without io.ReadAll.
		return bytes.NewBuffer(buf), nil
	}
	if p != nil {
		ls.StorageWriteOpener = func(lc linking.LinkContext) (io.Writer, linking.BlockWriteCommitter, error) {
			buf := bytes.NewBuffer(make([]byte, 0, 4096))
			return buf, func(l ipld.Link) error {
				return p.Put(ctx, l.(cidlink.Link).Cid, buf.Bytes())
			}, nil
		}
	}
	unixfsnode.AddUnixFSReificationToLinkSystem(&ls)
	return &ls
}
