package store

import "github.com/ipfs/go-cid"

// frame is the one byte stored with every block value (Badger's UserMeta, so
// framing costs no copy of the payload). The low nibble names the storage
// compression of the payload, the high nibble the IPLD codec the block was
// first stored under (the key is the bare multihash, so the codec would
// otherwise be lost; verify and iteration use it to print whole CIDs).
type frame byte

const compressionNone = 0

const (
	kindRaw = iota
	kindDagPB
	kindDagCBOR
	kindDagJSON
)

func newFrame(compression byte, codec uint64) frame {
	var k byte
	switch codec {
	case cid.DagProtobuf:
		k = kindDagPB
	case cid.DagCBOR:
		k = kindDagCBOR
	case cid.DagJSON:
		k = kindDagJSON
	default:
		k = kindRaw
	}
	return frame(k<<4 | compression&0x0f)
}

func (f frame) compression() byte { return byte(f) & 0x0f }

func (f frame) codec() uint64 {
	switch byte(f) >> 4 {
	case kindDagPB:
		return cid.DagProtobuf
	case kindDagCBOR:
		return cid.DagCBOR
	case kindDagJSON:
		return cid.DagJSON
	default:
		return cid.Raw
	}
}
