package worktree

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Root flushes every file and returns the UnixFS DAG of the whole tree.
func (t *Tree) Root(ctx context.Context) (unixfs.Node, error) {
	return t.Node(ctx, RootIno)
}

// CID returns the CID of the file, directory or symlink ino as a UnixFS DAG.
func (t *Tree) CID(ctx context.Context, ino uint64) (cid.Cid, error) {
	n, err := t.Node(ctx, ino)
	return n.CID, err
}

// Node builds (or reads) the DAG of ino. Files are flushed first; directory
// nodes are rebuilt from their entries (blocks already stored are skipped by
// the store), so the cost follows the size of the subtree.
func (t *Tree) Node(ctx context.Context, ino uint64) (unixfs.Node, error) {
	if err := t.FlushAll(ctx); err != nil {
		return unixfs.Node{}, err
	}
	batch := t.s.NewBatch()
	n, err := t.node(ctx, batch, ino, 0)
	if err != nil {
		batch.Cancel()
		return unixfs.Node{}, err
	}
	return n, batch.Close()
}

// maxDepth bounds directory nesting (and so the recursion below).
const maxDepth = 4096

func (t *Tree) node(ctx context.Context, put *store.Batch, ino uint64, depth int) (unixfs.Node, error) {
	if depth > maxDepth {
		return unixfs.Node{}, fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	t.mu.Lock()
	in, err := t.get(ino)
	if err != nil {
		t.mu.Unlock()
		return unixfs.Node{}, err
	}
	r := in.rec
	type child struct {
		name string
		ino  uint64
	}
	var children []child
	for name, c := range in.children {
		children = append(children, child{name, c})
	}
	f := in.f
	t.mu.Unlock()
	switch {
	case f != nil:
		f.mu.RLock()
		defer f.mu.RUnlock()
		if f.baseCID.Defined() {
			return unixfs.Node{CID: f.baseCID, Size: f.baseSz, Tsize: f.baseTs}, nil
		}
		// Empty content: the empty raw block.
		return (&unixfs.Importer{Put: put, Layout: t.layout}).ImportReader(ctx, eofReader{})
	case r.isSymlink():
		return unixfs.BuildSymlink(ctx, put, r.Target)
	case r.isDir():
		sort.Slice(children, func(i, j int) bool { return children[i].name < children[j].name })
		entries := make([]unixfs.Entry, 0, len(children))
		for _, c := range children {
			n, err := t.node(ctx, put, c.ino, depth+1)
			if err != nil {
				return unixfs.Node{}, err
			}
			entries = append(entries, unixfs.Entry{Name: c.name, Node: n})
		}
		return t.layout.BuildDirectory(ctx, put, entries)
	default:
		return unixfs.Node{}, fmt.Errorf("inode %d: %w", ino, ErrNotSupported)
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
