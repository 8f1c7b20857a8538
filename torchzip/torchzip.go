// Package torchzip recognises files written by torch.save (a zip archive of
// stored entries: the pickled object, then one entry per tensor storage,
// each 64-byte aligned) and tells the store how to compress them.
//
// torch.save writes its entries with data descriptors, so the local headers
// carry no sizes and the entry boundaries are known only from the central
// directory at the end. The importer sees the head of a file only, so the
// whole archive is one segment, chunked by content, whose elements are the
// floating-point type of its storages: the pickle at the start names them
// (FloatStorage, BFloat16Storage, ...). Since every storage starts 64-byte
// aligned, an element's phase is its file offset modulo the element size.
package torchzip

import (
	"bytes"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// headSize is how much of the head is searched for storage types.
const headSize = 64 << 10

// wholeFile ends the one segment beyond any file's end.
const wholeFile = 1 << 62

// storages maps the pickle's storage type names to their element sizes.
var storages = []struct {
	name []byte
	elem int
}{
	{[]byte("BFloat16Storage"), 2},
	{[]byte("HalfStorage"), 2},
	{[]byte("FloatStorage"), 4},
	{[]byte("DoubleStorage"), 8},
}

// FindSegments recognises a torch.save zip archive by its first bytes (peek
// returns the first n bytes, or an error when there are fewer) and returns
// one segment covering it, with the element size of the float storage type
// that its pickle names most often; nil for anything else, or for an
// archive of no float storages. It is a unixfs.CutFinder.
func FindSegments(peek func(n int) ([]byte, error)) []unixfs.Segment {
	var head []byte
	for _, n := range []int{headSize, 4 << 10, 512, 64} {
		if b, err := peek(n); err == nil {
			head = b
			break
		}
	}
	// A local file header, of an entry named .../data.pkl (torch.save
	// puts the pickle first).
	if len(head) < 30 || !bytes.HasPrefix(head, []byte("PK\x03\x04")) {
		return nil
	}
	nameLen := int(head[26]) | int(head[27])<<8
	if 30+nameLen > len(head) || !bytes.HasSuffix(head[30:30+nameLen], []byte("data.pkl")) {
		return nil
	}
	best, count := 0, 0
	for _, s := range storages {
		if k := bytes.Count(head, s.name); k > count {
			best, count = s.elem, k
		}
	}
	if best == 0 {
		return nil
	}
	return []unixfs.Segment{{End: wholeFile, Elem: best}}
}
