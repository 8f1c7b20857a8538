package worktree

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Replace puts the UnixFS DAG c at path p of the working tree (p "" or "/"
// means the whole tree: c must then be a directory, and it becomes the
// root's content). Whatever was at p goes; files still open stay readable
// through their handles. Parent directories must exist. Files come back
// with mode 0644, directories 0755 and symlinks as they were: UnixFS keeps
// no modes, owners or xattrs.
//
// It returns the names of the root directory that changed, for the caller
// to invalidate kernel caches.
func (t *Tree) Replace(ctx context.Context, p string, c cid.Cid) ([]string, error) {
	if err := t.FlushAll(ctx); err != nil {
		return nil, err
	}
	p = strings.Trim(path.Clean("/"+p), "/")
	// Read the whole DAG once before changing anything, so that a missing
	// or damaged block fails the call with the tree untouched.
	if err := checkDAG(ctx, t.s, c, 0); err != nil {
		return nil, err
	}
	// From here on the tree changes in memory: finish even if the caller
	// goes away, so that memory and the repo stay the same.
	ctx = context.WithoutCancel(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	ops := &metaOps{}
	var changed []string
	if p == "" {
		info, err := unixfs.Stat(ctx, t.s, c)
		if err != nil {
			return nil, err
		}
		if info.Kind != unixfs.KindDirectory {
			return nil, fmt.Errorf("%s: %w", c, ErrNotDir)
		}
		root := t.inodes[RootIno]
		for name := range root.children {
			changed = append(changed, name)
			t.removeSubtreeLocked(ops, root, name)
		}
		ents, err := unixfs.ReadDir(ctx, t.s, c)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if err := t.materializeLocked(ctx, ops, root, e.Name, e.CID, 1); err != nil {
				return nil, err
			}
			changed = append(changed, e.Name)
		}
		ops.put(root)
	} else {
		dir, name := path.Split(p)
		parent, err := t.walkLocked(strings.Trim(dir, "/"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		if err := checkName(name); err != nil {
			return nil, err
		}
		if _, ok := parent.children[name]; ok {
			t.removeSubtreeLocked(ops, parent, name)
		}
		if err := t.materializeLocked(ctx, ops, parent, name, c, 1); err != nil {
			return nil, err
		}
		ops.put(parent)
		top, _, _ := strings.Cut(p, "/")
		changed = append(changed, top)
	}
	ops.set(nextInoKey, []byte(strconv.FormatUint(t.nextIno, 10)))
	if err := t.applyLocked(ctx, ops); err != nil {
		return nil, err
	}
	if t.onReplace != nil {
		go t.onReplace(changed) // not under mu: the hook calls into the kernel
	}
	return changed, nil
}

// OnReplace sets a function told which names of the root directory a
// Replace changed (the mount uses it to drop the kernel's cached entries).
func (t *Tree) OnReplace(fn func(names []string)) {
	t.mu.Lock()
	t.onReplace = fn
	t.mu.Unlock()
}

// walkLocked finds the directory at slash-separated path p.
func (t *Tree) walkLocked(p string) (*inode, error) {
	d := t.inodes[RootIno]
	for _, name := range strings.Split(p, "/") {
		if name == "" {
			continue
		}
		c, ok := d.children[name]
		if !ok {
			return nil, ErrNotExist
		}
		d = t.inodes[c]
		if !d.rec.isDir() {
			return nil, ErrNotDir
		}
	}
	return d, nil
}

// metaOps collects the metadata changes of one Replace.
type metaOps struct {
	ins  []*inode
	sets map[string][]byte
	dels []string
}

func (o *metaOps) put(in *inode) { o.ins = append(o.ins, in) }
func (o *metaOps) set(k string, v []byte) {
	if o.sets == nil {
		o.sets = map[string][]byte{}
	}
	o.sets[k] = v
}
func (o *metaOps) del(k string) { o.dels = append(o.dels, k) }

// applyLocked writes the changes in transactions of bounded size: the new
// inodes, then the new names, then the deletions of what no longer exists.
// A crash between two transactions leaves old names beside new ones, each
// pointing at an inode that exists.
func (t *Tree) applyLocked(ctx context.Context, o *metaOps) error {
	for len(o.ins) > 0 {
		n := min(len(o.ins), metaBatch)
		if err := t.persist(ctx, nil, o.ins[:n]...); err != nil {
			return err
		}
		o.ins = o.ins[n:]
	}
	keys := make([]string, 0, len(o.sets))
	for k := range o.sets {
		keys = append(keys, k)
	}
	if err := t.inBatches(ctx, keys, func(tx store.MetaTxn, k string) error { return tx.Set(k, o.sets[k]) }); err != nil {
		return err
	}
	dels := o.dels[:0]
	for _, k := range o.dels {
		if _, reset := o.sets[k]; !reset {
			dels = append(dels, k)
		}
	}
	return t.inBatches(ctx, dels, func(tx store.MetaTxn, k string) error { return tx.Delete(k) })
}

// metaBatch bounds the keys one metadata transaction writes (Badger
// refuses very large transactions).
const metaBatch = 1000

func (t *Tree) inBatches(ctx context.Context, keys []string, fn func(store.MetaTxn, string) error) error {
	for len(keys) > 0 {
		n := min(len(keys), metaBatch)
		batch := keys[:n]
		keys = keys[n:]
		err := t.s.UpdateMeta(ctx, func(tx store.MetaTxn) error {
			for _, k := range batch {
				if err := fn(tx, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// removeSubtreeLocked drops name from parent and everything below it.
func (t *Tree) removeSubtreeLocked(o *metaOps, parent *inode, name string) {
	c := parent.children[name]
	in := t.inodes[c]
	o.del(dentryKey(parent.rec.Ino, name))
	if in.rec.isDir() {
		for n := range in.children {
			t.removeSubtreeLocked(o, in, n)
		}
		parent.rec.Nlink--
		in.rec.Nlink = 0
	} else {
		in.rec.Nlink--
	}
	t.deleteChildLocked(parent, name)
	if in.rec.Nlink == 0 {
		o.del(inodeKey(c))
		if in.opens == 0 || in.rec.isDir() {
			t.forgetLocked(in)
		}
	} else {
		o.put(in) // another hard link keeps it
	}
}

// materializeLocked creates inodes for the DAG c as name in parent.
func (t *Tree) materializeLocked(ctx context.Context, o *metaOps, parent *inode, name string, c cid.Cid, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := unixfs.Stat(ctx, t.s, c)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	in := &inode{rec: record{Ino: t.nextIno, Nlink: 1, Atime: now, Mtime: now, Ctime: now}}
	t.nextIno++
	switch info.Kind {
	case unixfs.KindFile:
		in.rec.Mode = syscall.S_IFREG | 0o644
		in.rec.Size, in.rec.Tsize = info.Size, info.Tsize
		if info.Size > 0 {
			in.rec.Content = c.String()
		}
		in.f = newFileData(in.rec)
		t.files.Store(in.rec.Ino, in.f)
	case unixfs.KindSymlink:
		in.rec.Mode, in.rec.Target = syscall.S_IFLNK|0o777, info.Target
	case unixfs.KindDirectory:
		in.rec.Mode, in.rec.Nlink = syscall.S_IFDIR|0o755, 2
		in.children, in.parent = map[string]uint64{}, parent.rec.Ino
		parent.rec.Nlink++
	default:
		return fmt.Errorf("%s: %w", c, ErrNotSupported)
	}
	t.inodes[in.rec.Ino] = in
	t.setChildLocked(parent, name, in.rec.Ino)
	o.set(dentryKey(parent.rec.Ino, name), []byte(strconv.FormatUint(in.rec.Ino, 16)))
	if info.Kind == unixfs.KindDirectory {
		ents, err := unixfs.ReadDir(ctx, t.s, c)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := t.materializeLocked(ctx, o, in, e.Name, e.CID, depth+1); err != nil {
				return err
			}
		}
	}
	o.put(in)
	return nil
}

// checkDAG loads every directory and the root of every entry of the DAG c.
func checkDAG(ctx context.Context, bs unixfs.BlockViewer, c cid.Cid, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	info, err := unixfs.Stat(ctx, bs, c)
	if err != nil || info.Kind != unixfs.KindDirectory {
		return err
	}
	ents, err := unixfs.ReadDir(ctx, bs, c)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := checkName(e.Name); err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
		if err := checkDAG(ctx, bs, e.CID, depth+1); err != nil {
			return err
		}
	}
	return nil
}
