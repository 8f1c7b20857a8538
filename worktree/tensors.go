package worktree

import (
	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// importer returns the importer of file contents: the tree's layout,
// tensor-aware cut points for safetensors files (recognised by their bytes,
// not their names: writers often use temporary names), and byte-grouped
// compression of their float tensors when the tree was opened with it.
func (t *Tree) importer(put unixfs.BlockPutter) *unixfs.Importer {
	return &unixfs.Importer{Put: put, Layout: t.layout, Cuts: safetensors.FindSegments, Encoder: t.encoder}
}
