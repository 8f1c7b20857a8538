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

// Node returns the DAG of ino. The files below ino with unflushed writes
// are flushed first (the others are left alone). Directory nodes are cached
// and rebuilt only along the paths of what changed since the last call, so
// after one change the cost follows the depth of the tree, not its size.
// Named pipes, sockets and device nodes are left out: UnixFS has no way to
// say what they are.
//
// The namespace lock is held only to copy out the directories to rebuild;
// the DAG is built and written without it, and a rebuilt directory node is
// cached only if the directory did not change meanwhile.
func (t *Tree) Node(ctx context.Context, ino uint64) (unixfs.Node, error) {
	if err := t.flushUnder(ctx, ino); err != nil {
		return unixfs.Node{}, err
	}
	t.changedMu.Lock()
	changed := t.changed
	t.changed = map[uint64]struct{}{}
	t.changedMu.Unlock()
	t.mu.Lock()
	for c := range changed {
		if in := t.inodes[c]; in != nil {
			for p := range in.parents {
				t.invalidateLocked(p)
			}
		}
	}
	plan, err := t.planLocked(ino, 0)
	t.mu.Unlock()
	if err != nil {
		t.requeueChanged(changed)
		return unixfs.Node{}, err
	}
	batch := t.s.NewBatch()
	var built []builtDir
	n, err := t.build(ctx, batch, plan, &built)
	if err != nil {
		batch.Cancel()
		t.requeueChanged(changed)
		return unixfs.Node{}, err
	}
	// Cached before the batch closes, so that a garbage collection sees the
	// new blocks either pinned by the batch or as the roots of the cache.
	t.mu.Lock()
	for _, b := range built {
		if b.in.dirGen == b.gen {
			nn := b.node
			b.in.dirNode = &nn
		}
	}
	t.mu.Unlock()
	return n, batch.Close()
}

// requeueChanged puts back changes a failed Node call took.
func (t *Tree) requeueChanged(changed map[uint64]struct{}) {
	t.changedMu.Lock()
	for c := range changed {
		t.changed[c] = struct{}{}
	}
	t.changedMu.Unlock()
}

// maxDepth bounds directory nesting (and so the recursion below).
const maxDepth = 4096

// nodePlan is what building the DAG of one inode needs, copied out of the
// namespace.
type nodePlan struct {
	in     *inode
	gen    uint64       // directories: dirGen when copied
	node   *unixfs.Node // known already (a cached directory)
	f      *fileData
	target string // symlinks
	dir    bool
	names  []string
	kids   []*nodePlan
}

type builtDir struct {
	in   *inode
	gen  uint64
	node unixfs.Node
}

// planLocked copies out what the DAG of ino needs: cached directory nodes
// as they are, the entries of the others.
func (t *Tree) planLocked(ino uint64, depth int) (*nodePlan, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	p := &nodePlan{in: in}
	switch {
	case in.f != nil:
		p.f = in.f
	case in.rec.isSymlink():
		p.target = in.rec.Target
	case in.rec.isDir():
		if in.dirNode != nil {
			n := *in.dirNode
			p.node = &n
			return p, nil
		}
		p.dir, p.gen = true, in.dirGen
		p.names = make([]string, 0, len(in.children))
		for name, c := range in.children {
			if !t.inodes[c].rec.isSpecial() {
				p.names = append(p.names, name)
			}
		}
		sort.Strings(p.names)
		p.kids = make([]*nodePlan, len(p.names))
		for i, name := range p.names {
			if p.kids[i], err = t.planLocked(in.children[name], depth+1); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotSupported)
	}
	return p, nil
}

// build writes the DAG of a plan, holding no namespace lock.
func (t *Tree) build(ctx context.Context, put *store.Batch, p *nodePlan, built *[]builtDir) (unixfs.Node, error) {
	switch {
	case p.node != nil:
		return *p.node, nil
	case p.f != nil:
		p.f.mu.RLock()
		c, sz, ts := p.f.baseCID, p.f.baseSz, p.f.baseTs
		p.f.mu.RUnlock()
		if c.Defined() {
			return unixfs.Node{CID: c, Size: sz, Tsize: ts}, nil
		}
		// Empty content: the empty raw block.
		return (&unixfs.Importer{Put: put, Layout: t.layout}).ImportChunk(ctx, nil)
	case !p.dir:
		return unixfs.BuildSymlink(ctx, put, p.target)
	}
	entries := make([]unixfs.Entry, len(p.names))
	for i, k := range p.kids {
		n, err := t.build(ctx, put, k, built)
		if err != nil {
			return unixfs.Node{}, err
		}
		entries[i] = unixfs.Entry{Name: p.names[i], Node: n}
	}
	n, err := t.layout.BuildDirectory(ctx, put, entries)
	if err != nil {
		return unixfs.Node{}, err
	}
	*built = append(*built, builtDir{in: p.in, gen: p.gen, node: n})
	return n, nil
}

// flushUnder flushes the files with unflushed writes at or below ino.
func (t *Tree) flushUnder(ctx context.Context, ino uint64) error {
	if ino == RootIno {
		return t.FlushAll(ctx)
	}
	t.changedMu.Lock()
	inos := make([]uint64, 0, len(t.unflushed))
	for c := range t.unflushed {
		inos = append(inos, c)
	}
	t.changedMu.Unlock()
	t.mu.Lock()
	below := inos[:0]
	for _, c := range inos {
		if t.belowLocked(ino, c) {
			below = append(below, c)
		}
	}
	t.mu.Unlock()
	for _, c := range below {
		// It stays in the unflushed set; a later FlushAll finds it clean.
		if err := t.Flush(ctx, c); err != nil && !isNotExist(err) {
			return err
		}
	}
	return nil
}

// belowLocked reports whether c is a or has a name below directory a.
func (t *Tree) belowLocked(a, c uint64) bool {
	if c == a {
		return true
	}
	in := t.inodes[c]
	if in == nil {
		return false
	}
	if in.rec.isDir() {
		return t.isAncestorLocked(a, c)
	}
	for p := range in.parents {
		if t.isAncestorLocked(a, p) {
			return true
		}
	}
	return false
}
