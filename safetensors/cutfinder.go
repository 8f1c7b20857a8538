package safetensors

import "github.com/ipfrs/ipfrs-mount/unixfs"

// FindSegments recognises a safetensors file by its first bytes (peek
// returns the first n bytes of the content, or an error when there are
// fewer) and returns its segments: the header, then each tensor, with the
// element size of BF16 and F16 (2) and F32 (4) tensors, whose bytes the
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
		s := unixfs.Segment{End: uint64(t.End)}
		switch t.DType {
		case BF16, F16:
			s.Elem = 2
		case F32:
			s.Elem = 4
		}
		segs = append(segs, s)
	}
	return segs
}
