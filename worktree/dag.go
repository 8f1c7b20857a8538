package worktree

import (
	"context"
	"fmt"
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

// Node returns the DAG of ino. Files are flushed first. Directory nodes are
// cached and rebuilt only along the paths of what changed since the last
// call, so after one change the cost follows the depth of the tree, not its
// size.
func (t *Tree) Node(ctx context.Context, ino uint64) (unixfs.Node, error) {
	if err := t.FlushAll(ctx); err != nil {
		return unixfs.Node{}, err
	}
	t.changedMu.Lock()
	changed := t.changed
	t.changed = map[uint64]struct{}{}
	t.changedMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range changed {
		if in := t.inodes[c]; in != nil {
			for p := range in.parents {
				t.invalidateLocked(p)
			}
		}
	}
	batch := t.s.NewBatch()
	n, err := t.nodeLocked(ctx, batch, ino, 0)
	if err != nil {
		batch.Cancel()
		return unixfs.Node{}, err
	}
	return n, batch.Close()
}

// maxDepth bounds directory nesting (and so the recursion below).
const maxDepth = 4096

func (t *Tree) nodeLocked(ctx context.Context, put *store.Batch, ino uint64, depth int) (unixfs.Node, error) {
	if depth > maxDepth {
		return unixfs.Node{}, fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	in, err := t.get(ino)
	if err != nil {
		return unixfs.Node{}, err
	}
	switch {
	case in.f != nil:
		f := in.f
		f.mu.RLock()
		defer f.mu.RUnlock()
		if f.baseCID.Defined() {
			return unixfs.Node{CID: f.baseCID, Size: f.baseSz, Tsize: f.baseTs}, nil
		}
		// Empty content: the empty raw block.
		return (&unixfs.Importer{Put: put, Layout: t.layout}).ImportChunk(ctx, nil)
	case in.rec.isSymlink():
		return unixfs.BuildSymlink(ctx, put, in.rec.Target)
	case in.rec.isDir():
		if in.dirNode != nil {
			return *in.dirNode, nil
		}
		names := make([]string, 0, len(in.children))
		for name := range in.children {
			names = append(names, name)
		}
		sort.Strings(names)
		entries := make([]unixfs.Entry, 0, len(names))
		for _, name := range names {
			n, err := t.nodeLocked(ctx, put, in.children[name], depth+1)
			if err != nil {
				return unixfs.Node{}, err
			}
			entries = append(entries, unixfs.Entry{Name: name, Node: n})
		}
		n, err := t.layout.BuildDirectory(ctx, put, entries)
		if err != nil {
			return unixfs.Node{}, err
		}
		in.dirNode = &n
		return n, nil
	default:
		return unixfs.Node{}, fmt.Errorf("inode %d: %w", ino, ErrNotSupported)
	}
}
