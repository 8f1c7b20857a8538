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
// The new inodes are read from the DAG and written first, named by nothing;
// one transaction then names them and unnames what they replace, and only
// then does the tree in memory change. A failure before that leaves the
// tree as it was (what was written names nothing, and the next mount drops
// it). The records of what was replaced are deleted last.
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
	// Finish even if the caller goes away, so that memory and the repo
	// stay the same.
	ctx = context.WithoutCancel(ctx)
	parentPath, name := "", ""
	if p != "" {
		dir, nm := path.Split(p)
		if err := checkName(nm); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		parentPath, name = strings.Trim(dir, "/"), nm
	}
	t.mu.Lock()
	parent, err := t.walkLocked(parentPath)
	t.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	parentIno := parent.rec.Ino

	// The new inodes, detached, and their records and names written: DAG
	// reads and writes that no lock of the namespace waits for, since
	// nothing names them yet.
	b := &subtree{now: time.Now().UnixNano()}
	var tops []named
	if p == "" {
		info, err := unixfs.Stat(ctx, t.s, c)
		if err != nil {
			return nil, err
		}
		if info.Kind != unixfs.KindDirectory {
			return nil, fmt.Errorf("%s: %w", c, ErrNotDir)
		}
		ents, err := unixfs.ReadDir(ctx, t.s, c)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			in, err := t.materialize(ctx, b, RootIno, e.CID, 1)
			if err != nil {
				return nil, err
			}
			tops = append(tops, named{e.Name, in})
		}
	} else {
		in, err := t.materialize(ctx, b, parentIno, c, 1)
		if err != nil {
			return nil, err
		}
		tops = append(tops, named{name, in})
	}
	if err := t.inBatches(ctx, len(b.inodes), func(tx store.MetaTxn, i int) error {
		return putRecord(tx, b.inodes[i].rec)
	}); err != nil {
		return nil, err
	}
	if err := t.inBatches(ctx, len(b.names), func(tx store.MetaTxn, i int) error {
		d := b.names[i]
		return tx.Set(dentryKey(d.parent, d.name), []byte(strconv.FormatUint(d.ino, 16)))
	}); err != nil {
		return nil, err
	}

	rm, changed, err := t.replaceNames(ctx, p, parentPath, parentIno, name, b, tops)
	if err != nil {
		return nil, err
	}
	// What was replaced names nothing now; a failure here leaves records
	// the next mount drops.
	if err := t.inBatches(ctx, len(rm.dels), func(tx store.MetaTxn, i int) error { return tx.Delete(rm.dels[i]) }); err != nil {
		t.log.Warn("deleting the records of replaced files (the next mount drops them)", "err", err)
	}
	t.mu.Lock()
	hook := t.onReplace
	t.mu.Unlock()
	if hook != nil {
		// Before returning, so that a caller who reads the path next sees
		// the new content, not the kernel's cached entry; no lock is held
		// (the hook calls into the kernel, which may wait for requests in
		// flight in those directories, and they may need the tree's locks).
		hook(changed)
	}
	return changed, nil
}

// replaceNames is the commit point of Replace: in one transaction, the top
// names of the new subtree replace what was there; then memory follows.
func (t *Tree) replaceNames(ctx context.Context, p, parentPath string, parentIno uint64, name string, b *subtree, tops []named) (*removal, []string, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	parent, err := t.walkLocked(parentPath)
	if err == nil && parent.rec.Ino != parentIno {
		err = ErrNotExist // the directory was replaced meanwhile
	}
	if err != nil {
		t.mu.Unlock()
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	var old []string
	if p == "" {
		for n := range parent.children {
			old = append(old, n)
		}
	} else if _, ok := parent.children[name]; ok {
		old = append(old, name)
	}
	var ch change
	pr := ch.rec(parent)
	pr.Mtime, pr.Ctime = b.now, b.now
	rm := removal{links: map[uint64]uint32{}}
	for _, n := range old {
		cin := t.inodes[parent.children[n]]
		if cin.rec.isDir() {
			pr.Nlink--
		}
		t.planRemovalLocked(&rm, cin)
	}
	for _, tp := range tops {
		if tp.in.rec.isDir() {
			pr.Nlink++
		}
	}
	for ino, n := range rm.links {
		if in := t.inodes[ino]; !in.rec.isDir() && n < in.rec.Nlink {
			r := ch.rec(in) // another hard link keeps it
			r.Nlink -= n
			r.Ctime = b.now
		} else {
			rm.dels = append(rm.dels, inodeKey(ino))
		}
	}
	next := t.nextIno
	t.mu.Unlock()
	err = t.write(ctx, &ch, func(tx store.MetaTxn) error {
		for _, n := range old {
			if err := tx.Delete(dentryKey(parentIno, n)); err != nil {
				return err
			}
		}
		for _, tp := range tops {
			if err := tx.Set(dentryKey(parentIno, tp.name), []byte(strconv.FormatUint(tp.in.rec.Ino, 16))); err != nil {
				return err
			}
		}
		return tx.Set(nextInoKey, []byte(strconv.FormatUint(next, 10)))
	})
	if err != nil {
		return nil, nil, err
	}

	t.mu.Lock()
	ch.apply() // the inodes another hard link keeps have their new counts
	for ino := range rm.links {
		if _, kept := ch.recs[ino]; !kept {
			t.inodes[ino].rec.Nlink = 0
		}
	}
	for _, n := range old {
		t.dropSubtreeLocked(parent, n)
	}
	for _, in := range b.inodes {
		t.inodes[in.rec.Ino] = in
		if in.f != nil {
			t.files.Store(in.rec.Ino, in.f)
		}
	}
	var changed []string
	for _, tp := range tops {
		t.setChildLocked(parent, tp.name, tp.in.rec.Ino)
		top, _, _ := strings.Cut(p, "/")
		if p == "" {
			top = tp.name
		}
		changed = append(changed, top)
	}
	if p == "" {
		changed = append(changed, old...)
	}
	t.mu.Unlock()
	return &rm, changed, nil
}

// OnReplace sets a function told which names of the root directory a
// Replace changed (the mount uses it to drop the kernel's cached entries).
// Replace calls it before it returns, holding no lock of the tree: it must
// not be called from inside a request on the mount's root directory.
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

// metaBatch bounds the keys one metadata transaction writes (Badger
// refuses very large transactions).
const metaBatch = 1000

// inBatches calls fn for 0..n-1 in transactions of at most metaBatch calls.
func (t *Tree) inBatches(ctx context.Context, n int, fn func(store.MetaTxn, int) error) error {
	for lo := 0; lo < n; lo += metaBatch {
		hi := min(n, lo+metaBatch)
		err := t.update(ctx, func(tx store.MetaTxn) error {
			for i := lo; i < hi; i++ {
				if err := fn(tx, i); err != nil {
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

// subtree is a DAG turned into inodes not yet in the tree.
type subtree struct {
	now    int64
	inodes []*inode
	names  []dentry // below the tops
}

type dentry struct {
	parent uint64
	name   string
	ino    uint64
}

type named struct {
	name string
	in   *inode
}

// removal is what unnaming subtrees takes: the names below their tops to
// delete, and how many names each inode loses.
type removal struct {
	dels  []string
	links map[uint64]uint32
}

// planRemovalLocked notes the removal of in (named once more in the
// subtree) and of everything below it, changing nothing.
func (t *Tree) planRemovalLocked(rm *removal, in *inode) {
	rm.links[in.rec.Ino]++
	if !in.rec.isDir() {
		return
	}
	for n, c := range in.children {
		rm.dels = append(rm.dels, dentryKey(in.rec.Ino, n))
		t.planRemovalLocked(rm, t.inodes[c])
	}
}

// dropSubtreeLocked unnames name in parent and everything below it in
// memory, once the removal is written (and the link counts set).
func (t *Tree) dropSubtreeLocked(parent *inode, name string) {
	in := t.inodes[parent.children[name]]
	if in.rec.isDir() {
		for n := range in.children {
			t.dropSubtreeLocked(in, n)
		}
	}
	t.deleteChildLocked(parent, name)
	if in.rec.Nlink == 0 && (in.opens == 0 || in.rec.isDir()) {
		t.forgetLocked(in)
	}
}

// materialize makes detached inodes for the DAG c, to be named in the
// directory parent.
func (t *Tree) materialize(ctx context.Context, b *subtree, parent uint64, c cid.Cid, depth int) (*inode, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("worktree: directories nested deeper than %d", maxDepth)
	}
	info, err := unixfs.Stat(ctx, t.s, c)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	ino := t.allocLocked()
	t.mu.Unlock()
	in := &inode{rec: record{Ino: ino, Nlink: 1, Atime: b.now, Mtime: b.now, Ctime: b.now}}
	switch info.Kind {
	case unixfs.KindFile:
		in.rec.Mode = syscall.S_IFREG | 0o644
		in.rec.Size, in.rec.Tsize = info.Size, info.Tsize
		if info.Size > 0 {
			in.rec.Content = c.String()
		}
		in.f = newFileData(in.rec)
	case unixfs.KindSymlink:
		in.rec.Mode, in.rec.Target = syscall.S_IFLNK|0o777, info.Target
	case unixfs.KindDirectory:
		in.rec.Mode, in.rec.Nlink = syscall.S_IFDIR|0o755, 2
		in.children, in.parent = map[string]uint64{}, parent
	default:
		return nil, fmt.Errorf("%s: %w", c, ErrNotSupported)
	}
	b.inodes = append(b.inodes, in)
	if info.Kind != unixfs.KindDirectory {
		return in, nil
	}
	ents, err := unixfs.ReadDir(ctx, t.s, c)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		k, err := t.materialize(ctx, b, in.rec.Ino, e.CID, depth+1)
		if err != nil {
			return nil, err
		}
		in.children[e.Name] = k.rec.Ino
		if k.rec.isDir() {
			in.rec.Nlink++
		} else {
			k.parents = map[uint64]int{in.rec.Ino: 1}
		}
		b.names = append(b.names, dentry{in.rec.Ino, e.Name, k.rec.Ino})
	}
	return in, nil
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
