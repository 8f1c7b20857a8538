package safetensors

// FindCuts recognises a safetensors file by its first bytes (peek returns
// the first n bytes of the content, or an error when there are fewer) and
// returns the offsets where a chunker should cut: the end of the header and
// every tensor boundary, so that an identical tensor dedups whole even when
// the header length and every offset before it change. Anything else gets
// nil.
func FindCuts(peek func(n int) ([]byte, error)) []uint64 {
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
	pts := CutPoints(h)
	cuts := make([]uint64, len(pts))
	for i, p := range pts {
		cuts[i] = uint64(p)
	}
	return cuts
}
