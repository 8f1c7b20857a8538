package safetensors

import "github.com/ipfrs/ipfrs-mount/unixfs"

// TensorChunk is the size of the chunks tensors are cut into, from each
// tensor's start: chunk k of a tensor holds the same elements in every file
// that has the tensor, so it dedups whole when unchanged and is coded as a
// delta against its predecessor when it changed a little.
const TensorChunk = 1 << 20

// FindSegments recognises a safetensors file by its first bytes (peek
// returns the first n bytes of the content, or an error when there are
// fewer) and returns its segments: the header, then each tensor (cut into
// TensorChunk-byte chunks from its start), with the
// element size of BF16 and F16 (2), F32 (4), F64 and I64 (8) tensors, whose bytes the
// store compresses byte-grouped. A chunker cutting at the segment ends
// stores an identical tensor once even when the header length and every
// offset before it change. Anything else gets nil. It is a
// unixfs.CutFinder.
func FindSegments(peek func(n int) ([]byte, error)) []unixfs.Segment {
	head, err := peek(9)
	if err != nil || head[8] != '{' {
		return nil
	}
	n, err := HeaderLen(head)
	if err != nil {
		return nil
	}
	if head, err = peek(8 + int(n)); err != nil {
		return nil
	}
	h, err := Parse(head, -1)
	if err != nil {
		return nil
	}
	segs := []unixfs.Segment{{End: uint64(h.DataStart())}}
	for _, t := range h.Tensors {
		if t.End == t.Begin {
			continue
		}
		s := unixfs.Segment{End: uint64(t.End), Fixed: TensorChunk}
		switch t.DType {
		case BF16, F16:
			s.Elem = 2
		case F32:
			s.Elem = 4
		case F64, I64:
			s.Elem = 8
		}
		segs = append(segs, s)
	}
	return segs
}
