package worktree

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipfrs/ipfrs-mount/deltabase"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Options configures a Tree.
type Options struct {
	// Layout shapes file and directory DAGs.
	Layout unixfs.Layout
	// StagingDir holds the sparse staging files of files being written.
	StagingDir string
	// PublishInterval is how often new file contents are made durable and
	// published; fsync publishes at once.
	PublishInterval time.Duration
	Logger          *slog.Logger
	// Compress stores the float tensors of safetensors files byte-grouped
	// and Huffman-coded (about 0.7 of their size for bf16 weights; reads
	// then decode them).
	Compress bool
}

// Tree is the working tree. All methods are safe for concurrent use.
type Tree struct {
	s      *store.Badger
	layout unixfs.Layout
	stage  string
	log    *slog.Logger

	// mu guards the namespace: inodes, their records and children. Lock
	// order: mu before any fileData.mu; never take mu while holding a
	// fileData.mu.
	mu      sync.Mutex
	inodes  map[uint64]*inode
	nextIno uint64
	// files maps inode numbers of regular files to their data, so that
	// reads and writes find it without taking mu (which a commit or a
	// publication holds for a while).
	files sync.Map

	pub       publisher
	onReplace func(names []string)
	encoder   unixfs.Encoder   // nil: no compression
	bases     *deltabase.Index // delta bases of tensors; nil without compression

	tables     tableCache    // tensor tables of safetensors files
	tableSlots chan struct{} // bounds header reads in flight

	// changed tracks files whose content changed (their directories' DAG
	// nodes must be rebuilt) and files with unflushed writes, so that
	// computing the root costs the number of changes, not the tree size.
	changedMu sync.Mutex
	changed   map[uint64]struct{}
	unflushed map[uint64]struct{}
}

type inode struct {
	rec      record
	children map[string]uint64 // directories
	parent   uint64            // directories: the one parent
	parents  map[uint64]int    // non-directories: names per parent directory
	dirNode  *unixfs.Node      // directories: cached DAG node, nil when changed
	opens    int
	f        *fileData // regular files
}

// Attr is what stat shows of an inode.
type Attr struct {
	Ino          uint64
	Mode         uint32
	Nlink        uint32
	UID, GID     uint32
	Size         uint64
	Atime, Mtime time.Time
	Ctime        time.Time
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32
}

// Open loads the working tree from the store, creating an empty root on
// first use, and drops what a crash left behind: staging files and inodes
// that no name refers to.
func Open(ctx context.Context, s *store.Badger, o Options) (*Tree, error) {
	if o.PublishInterval == 0 {
		o.PublishInterval = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.RemoveAll(o.StagingDir); err != nil {
		return nil, fmt.Errorf("worktree: clear staging: %w", err)
	}
	if err := os.MkdirAll(o.StagingDir, 0o700); err != nil {
		return nil, fmt.Errorf("worktree: %w", err)
	}
	t := &Tree{s: s, layout: o.Layout, stage: o.StagingDir, log: o.Logger, inodes: map[uint64]*inode{}, nextIno: RootIno + 1,
		changed: map[uint64]struct{}{}, unflushed: map[uint64]struct{}{}, tableSlots: make(chan struct{}, 2)}
	if o.Compress {
		t.encoder, t.bases = s, deltabase.New(s)
	}
	if err := t.load(ctx); err != nil {
		return nil, err
	}
	t.pub.start(t, o.PublishInterval)
	return t, nil
}

func (t *Tree) load(ctx context.Context) error {
	err := t.s.ScanMeta(ctx, inodePrefix, func(key string, val []byte) error {
		r, err := decodeRecord(val)
		if err != nil {
			return err
		}
		t.inodes[r.Ino] = &inode{rec: *r}
		if r.isDir() {
			t.inodes[r.Ino].children = map[string]uint64{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("worktree: load inodes: %w", err)
	}
	var stale []string
	err = t.s.ScanMeta(ctx, dentryPrefix, func(key string, val []byte) error {
		parent, name, err := parseDentryKey(key)
		if err != nil {
			return err
		}
		child, err := strconv.ParseUint(string(val), 16, 64)
		if err != nil {
			return fmt.Errorf("worktree: bad dentry %q: %w", key, err)
		}
		p, ok := t.inodes[parent]
		c, cok := t.inodes[child]
		if !ok || !cok || !p.rec.isDir() {
			stale = append(stale, key)
			return nil
		}
		t.setChildLocked(p, name, child)
		if c.rec.isDir() {
			c.parent = parent
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("worktree: load names: %w", err)
	}
	if b, err := t.s.GetMeta(ctx, nextInoKey); err == nil {
		if n, err := strconv.ParseUint(string(b), 10, 64); err == nil && n > t.nextIno {
			t.nextIno = n
		}
	}
	for ino := range t.inodes {
		if ino >= t.nextIno {
			t.nextIno = ino + 1
		}
	}
	// Count links from the names actually present; drop unreachable inodes
	// (unlinked while open when the daemon stopped).
	links := map[uint64]uint32{RootIno: 1}
	for _, in := range t.inodes {
		for _, c := range in.children {
			links[c]++
		}
	}
	var orphans []uint64
	for ino, in := range t.inodes {
		if links[ino] == 0 {
			orphans = append(orphans, ino)
			continue
		}
		if in.rec.isDir() {
			in.rec.Nlink = 2
			for _, c := range in.children {
				if t.inodes[c].rec.isDir() {
					in.rec.Nlink++
				}
			}
		} else {
			in.rec.Nlink = links[ino]
		}
		if in.rec.isRegular() {
			in.f = newFileData(in.rec)
			t.files.Store(ino, in.f)
		}
	}
	if _, ok := t.inodes[RootIno]; !ok {
		now := time.Now().UnixNano()
		root := &inode{rec: record{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now},
			children: map[string]uint64{}}
		t.inodes[RootIno] = root
		if err := t.s.UpdateMeta(ctx, func(tx store.MetaTxn) error { return t.putRecord(tx, root) }); err != nil {
			return err
		}
	}
	if len(orphans) == 0 && len(stale) == 0 {
		return nil
	}
	t.log.Info("dropping what no name refers to", "inodes", len(orphans), "names", len(stale))
	return t.s.UpdateMeta(ctx, func(tx store.MetaTxn) error {
		for _, ino := range orphans {
			delete(t.inodes, ino)
			if err := tx.Delete(inodeKey(ino)); err != nil {
				return err
			}
		}
		for _, k := range stale {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close publishes every file's content durably, records the tree's DAG
// root and stops the publisher. Files still open lose nothing: their data
// is flushed too.
func (t *Tree) Close(ctx context.Context) error {
	err := t.FlushAll(ctx)
	t.pub.stop()
	if err2 := t.pub.publishNow(ctx, t); err == nil {
		err = err2
	}
	if err == nil {
		var root unixfs.Node
		if root, err = t.Root(ctx); err == nil {
			err = t.s.SetMeta(ctx, rootCIDKey, []byte(root.CID.String()))
		}
	}
	t.mu.Lock()
	for _, in := range t.inodes {
		if in.f != nil {
			in.f.closeStage()
		}
	}
	t.mu.Unlock()
	if err2 := t.s.Sync(); err == nil {
		err = err2
	}
	return err
}

// putRecord writes an inode's record; for files the content fields are the
// published ones, and times and size come from the live file data.
func (t *Tree) putRecord(tx store.MetaTxn, in *inode) error {
	r := in.rec
	if in.f != nil {
		r.Mtime, r.Ctime, r.Atime = in.f.times()
	}
	b, err := encodeRecord(&r)
	if err != nil {
		return err
	}
	return tx.Set(inodeKey(r.Ino), b)
}

// persist writes records (and optionally more) in one transaction.
func (t *Tree) persist(ctx context.Context, fn func(tx store.MetaTxn) error, ins ...*inode) error {
	return t.s.UpdateMeta(ctx, func(tx store.MetaTxn) error {
		for _, in := range ins {
			if err := t.putRecord(tx, in); err != nil {
				return err
			}
		}
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
}

func (t *Tree) get(ino uint64) (*inode, error) {
	in, ok := t.inodes[ino]
	if !ok {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotExist)
	}
	return in, nil
}

func (t *Tree) dir(ino uint64) (*inode, error) {
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	if !in.rec.isDir() {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	return in, nil
}

func checkName(name string) error {
	if len(name) > 255 {
		return ErrNameTooLong
	}
	if err := unixfs.ValidName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func (t *Tree) attrLocked(in *inode) Attr {
	r := in.rec
	a := Attr{Ino: r.Ino, Mode: r.Mode, Nlink: r.Nlink, UID: r.UID, GID: r.GID, Size: r.Size,
		Atime: time.Unix(0, r.Atime), Mtime: time.Unix(0, r.Mtime), Ctime: time.Unix(0, r.Ctime)}
	switch {
	case in.f != nil:
		a.Size = in.f.currentSize()
		m, c, at := in.f.times()
		a.Mtime, a.Ctime, a.Atime = time.Unix(0, m), time.Unix(0, c), time.Unix(0, at)
	case r.isSymlink():
		a.Size = uint64(len(r.Target))
	case r.isDir():
		a.Size = 4096
	}
	return a
}

// Getattr returns the attributes of ino.
func (t *Tree) Getattr(ino uint64) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return Attr{}, err
	}
	return t.attrLocked(in), nil
}

// Lookup finds name in the directory parent.
func (t *Tree) Lookup(parent uint64, name string) (Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.dir(parent)
	if err != nil {
		return Attr{}, err
	}
	c, ok := p.children[name]
	if !ok {
		return Attr{}, ErrNotExist
	}
	return t.attrLocked(t.inodes[c]), nil
}

// Readdir lists a directory sorted by name, so that offsets stay stable.
func (t *Tree) Readdir(ino uint64) ([]DirEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.dir(ino)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(d.children))
	for name, c := range d.children {
		out = append(out, DirEntry{Name: name, Ino: c, Mode: t.inodes[c].rec.Mode})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// NewNode describes an inode to create.
type NewNode struct {
	Mode     uint32 // type bits and permissions
	UID, GID uint32
	Target   string // symlinks
}

// Create makes a new file, directory or symlink called name in parent.
func (t *Tree) Create(ctx context.Context, parent uint64, name string, n NewNode) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK:
	default:
		return Attr{}, fmt.Errorf("%w: only files, directories and symlinks", ErrNotSupported)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.dir(parent)
	if err != nil {
		return Attr{}, err
	}
	if _, ok := p.children[name]; ok {
		return Attr{}, ErrExist
	}
	now := time.Now().UnixNano()
	in := &inode{rec: record{Ino: t.nextIno, Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: 1,
		Atime: now, Mtime: now, Ctime: now, Target: n.Target}}
	t.nextIno++
	switch {
	case in.rec.isDir():
		in.rec.Nlink = 2
		in.children = map[string]uint64{}
		in.parent = parent
		p.rec.Nlink++
	case in.rec.isRegular():
		in.f = newFileData(in.rec)
		t.files.Store(in.rec.Ino, in.f)
	}
	p.rec.Mtime, p.rec.Ctime = now, now
	err = t.persist(ctx, func(tx store.MetaTxn) error {
		if err := tx.Set(dentryKey(parent, name), []byte(strconv.FormatUint(in.rec.Ino, 16))); err != nil {
			return err
		}
		return tx.Set(nextInoKey, []byte(strconv.FormatUint(t.nextIno, 10)))
	}, in, p)
	if err != nil {
		return Attr{}, err
	}
	t.inodes[in.rec.Ino] = in
	t.setChildLocked(p, name, in.rec.Ino)
	return t.attrLocked(in), nil
}

// Link adds the name newName in newParent for the existing non-directory ino.
func (t *Tree) Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error) {
	if err := checkName(newName); err != nil {
		return Attr{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return Attr{}, err
	}
	if in.rec.isDir() {
		return Attr{}, ErrPermission
	}
	p, err := t.dir(newParent)
	if err != nil {
		return Attr{}, err
	}
	if _, ok := p.children[newName]; ok {
		return Attr{}, ErrExist
	}
	now := time.Now().UnixNano()
	in.rec.Nlink++
	in.rec.Ctime = now
	if in.f != nil {
		in.f.touchCtime(now)
	}
	p.rec.Mtime, p.rec.Ctime = now, now
	err = t.persist(ctx, func(tx store.MetaTxn) error {
		return tx.Set(dentryKey(newParent, newName), []byte(strconv.FormatUint(ino, 16)))
	}, in, p)
	if err != nil {
		in.rec.Nlink--
		return Attr{}, err
	}
	t.setChildLocked(p, newName, ino)
	return t.attrLocked(in), nil
}

// Remove unlinks name from parent: a non-directory (dir false) or an empty
// directory (dir true). A file still open stays readable until released.
func (t *Tree) Remove(ctx context.Context, parent uint64, name string, dir bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.dir(parent)
	if err != nil {
		return err
	}
	c, ok := p.children[name]
	if !ok {
		return ErrNotExist
	}
	in := t.inodes[c]
	switch {
	case dir && !in.rec.isDir():
		return ErrNotDir
	case !dir && in.rec.isDir():
		return ErrIsDir
	case dir && len(in.children) > 0:
		return ErrNotEmpty
	}
	now := time.Now().UnixNano()
	p.rec.Mtime, p.rec.Ctime = now, now
	if dir {
		p.rec.Nlink--
		in.rec.Nlink = 0
	} else {
		in.rec.Nlink--
		in.rec.Ctime = now
		if in.f != nil {
			in.f.touchCtime(now)
		}
	}
	gone := in.rec.Nlink == 0 && (in.opens == 0 || dir)
	err = t.persist(ctx, func(tx store.MetaTxn) error {
		if err := tx.Delete(dentryKey(parent, name)); err != nil {
			return err
		}
		if gone {
			return tx.Delete(inodeKey(c))
		}
		if in.rec.Nlink > 0 || !dir {
			return t.putRecord(tx, in)
		}
		return nil
	}, p)
	if err != nil {
		return err
	}
	t.deleteChildLocked(p, name)
	if gone {
		t.forgetLocked(in)
	}
	return nil
}

// setChildLocked names c as name in p, replacing what was there.
func (t *Tree) setChildLocked(p *inode, name string, c uint64) {
	if old, ok := p.children[name]; ok {
		t.dropParentLocked(old, p.rec.Ino)
	}
	p.children[name] = c
	if ci := t.inodes[c]; ci != nil && !ci.rec.isDir() {
		if ci.parents == nil {
			ci.parents = map[uint64]int{}
		}
		ci.parents[p.rec.Ino]++
	}
	t.invalidateLocked(p.rec.Ino)
}

func (t *Tree) deleteChildLocked(p *inode, name string) {
	if c, ok := p.children[name]; ok {
		delete(p.children, name)
		t.dropParentLocked(c, p.rec.Ino)
	}
	t.invalidateLocked(p.rec.Ino)
}

func (t *Tree) dropParentLocked(c, parent uint64) {
	ci := t.inodes[c]
	if ci == nil || ci.parents == nil {
		return
	}
	if ci.parents[parent]--; ci.parents[parent] <= 0 {
		delete(ci.parents, parent)
	}
}

// invalidateLocked drops the cached DAG node of directory d and of its
// ancestors. A changed directory's ancestors are always changed too, so the
// walk stops at the first one already dropped.
func (t *Tree) invalidateLocked(d uint64) {
	for first := true; ; first = false {
		in := t.inodes[d]
		if in == nil || (!first && in.dirNode == nil) {
			return
		}
		in.dirNode = nil
		if d == RootIno {
			return
		}
		d = in.parent
	}
}

// contentChanged notes that ino's content DAG changed (called with the
// file's lock held, so it must not take mu).
func (t *Tree) contentChanged(ino uint64) {
	t.changedMu.Lock()
	t.changed[ino] = struct{}{}
	t.changedMu.Unlock()
}

// written notes that ino has writes not yet flushed.
func (t *Tree) written(ino uint64) {
	t.changedMu.Lock()
	t.unflushed[ino] = struct{}{}
	t.changedMu.Unlock()
}

// forgetLocked drops an inode nobody names or holds open.
func (t *Tree) forgetLocked(in *inode) {
	if in.f != nil {
		in.f.closeStage()
	}
	delete(t.inodes, in.rec.Ino)
	t.files.Delete(in.rec.Ino)
	t.pub.drop(in.rec.Ino)
}

// Rename flags (renameat2).
const (
	RenameNoReplace = 1
	RenameExchange  = 2
)

// Rename moves name in parent to newName in newParent, atomically replacing
// an existing target (or exchanging the two with RenameExchange).
func (t *Tree) Rename(ctx context.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) error {
	if err := checkName(newName); err != nil {
		return err
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return ErrInvalid
	}
	// Renaming a freshly written file over another is how programs replace
	// files: make the new content durable first (as ext4's auto_da_alloc
	// does), so that after a crash the name holds the old content or the
	// new one, never an empty file.
	t.mu.Lock()
	src, replace := t.renameSourceLocked(parent, name, newParent, newName)
	t.mu.Unlock()
	if replace {
		if err := t.Flush(ctx, src); err != nil {
			return err
		}
		if err := t.pub.publishNow(ctx, t); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.dir(parent)
	if err != nil {
		return err
	}
	np, err := t.dir(newParent)
	if err != nil {
		return err
	}
	src, ok := p.children[name]
	if !ok {
		return ErrNotExist
	}
	sin := t.inodes[src]
	dst, exists := np.children[newName]
	if exists && dst == src {
		return nil // two names of one inode: POSIX says do nothing
	}
	if flags&RenameNoReplace != 0 && exists {
		return ErrExist
	}
	if flags&RenameExchange != 0 && !exists {
		return ErrNotExist
	}
	// A directory may not move below itself.
	if sin.rec.isDir() && t.isAncestorLocked(src, newParent) {
		return ErrInvalid
	}
	var din *inode
	if exists {
		din = t.inodes[dst]
		if flags&RenameExchange != 0 && din.rec.isDir() && t.isAncestorLocked(dst, parent) {
			return ErrInvalid
		}
		if flags&RenameExchange == 0 {
			switch {
			case sin.rec.isDir() && !din.rec.isDir():
				return ErrNotDir
			case !sin.rec.isDir() && din.rec.isDir():
				return ErrIsDir
			case din.rec.isDir() && len(din.children) > 0:
				return ErrNotEmpty
			}
		}
	}
	now := time.Now().UnixNano()
	p.rec.Mtime, p.rec.Ctime, np.rec.Mtime, np.rec.Ctime = now, now, now, now
	sin.rec.Ctime = now
	if sin.f != nil {
		sin.f.touchCtime(now)
	}
	changed := []*inode{p, np, sin}
	var gone bool
	if flags&RenameExchange != 0 {
		din.rec.Ctime = now
		changed = append(changed, din)
		if sin.rec.isDir() != din.rec.isDir() && parent != newParent {
			if sin.rec.isDir() {
				p.rec.Nlink--
				np.rec.Nlink++
			} else {
				p.rec.Nlink++
				np.rec.Nlink--
			}
		}
	} else {
		if sin.rec.isDir() && parent != newParent {
			p.rec.Nlink--
			np.rec.Nlink++
		}
		if exists {
			if din.rec.isDir() {
				np.rec.Nlink--
				din.rec.Nlink = 0
			} else {
				din.rec.Nlink--
			}
			din.rec.Ctime = now
			gone = din.rec.Nlink == 0 && (din.opens == 0 || din.rec.isDir())
			if !gone {
				changed = append(changed, din)
			}
		}
	}
	err = t.persist(ctx, func(tx store.MetaTxn) error {
		if flags&RenameExchange != 0 {
			if err := tx.Set(dentryKey(parent, name), []byte(strconv.FormatUint(dst, 16))); err != nil {
				return err
			}
		} else if err := tx.Delete(dentryKey(parent, name)); err != nil {
			return err
		}
		if err := tx.Set(dentryKey(newParent, newName), []byte(strconv.FormatUint(src, 16))); err != nil {
			return err
		}
		if gone {
			return tx.Delete(inodeKey(dst))
		}
		return nil
	}, changed...)
	if err != nil {
		return err
	}
	if flags&RenameExchange != 0 {
		t.setChildLocked(p, name, dst)
		t.setChildLocked(np, newName, src)
		if din.rec.isDir() {
			din.parent = parent
		}
	} else {
		t.deleteChildLocked(p, name)
		t.setChildLocked(np, newName, src)
		if gone {
			t.forgetLocked(din)
		}
	}
	if sin.rec.isDir() {
		sin.parent = newParent
	}
	return nil
}

// renameSourceLocked returns the regular file a rename would put over an
// existing name.
func (t *Tree) renameSourceLocked(parent uint64, name string, newParent uint64, newName string) (uint64, bool) {
	p, np := t.inodes[parent], t.inodes[newParent]
	if p == nil || np == nil || p.children == nil || np.children == nil {
		return 0, false
	}
	src, ok := p.children[name]
	if !ok || t.inodes[src].f == nil {
		return 0, false
	}
	_, exists := np.children[newName]
	return src, exists
}

// isAncestorLocked reports whether directory a is d or one of its ancestors.
func (t *Tree) isAncestorLocked(a, d uint64) bool {
	for ; ; d = t.inodes[d].parent {
		if d == a {
			return true
		}
		if d == RootIno {
			return false
		}
	}
}

// SetAttr lists the attributes to change; nil fields stay.
type SetAttr struct {
	Mode         *uint32 // permission bits only
	UID, GID     *uint32
	Size         *uint64
	Atime, Mtime *time.Time
}

// Setattr changes attributes (chmod, chown, truncate, utimens).
func (t *Tree) Setattr(ctx context.Context, ino uint64, sa SetAttr) (Attr, error) {
	if sa.Size != nil {
		// Truncation works on the content, outside the namespace lock.
		t.mu.Lock()
		in, err := t.get(ino)
		t.mu.Unlock()
		if err != nil {
			return Attr{}, err
		}
		if in.f == nil {
			if in.rec.isDir() {
				return Attr{}, ErrIsDir
			}
			return Attr{}, ErrInvalid
		}
		if err := in.f.truncate(t, ino, *sa.Size); err != nil {
			return Attr{}, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return Attr{}, err
	}
	now := time.Now().UnixNano()
	if sa.Mode != nil {
		in.rec.Mode = in.rec.Mode&syscall.S_IFMT | *sa.Mode&07777
	}
	if sa.UID != nil {
		in.rec.UID = *sa.UID
	}
	if sa.GID != nil {
		in.rec.GID = *sa.GID
	}
	in.rec.Ctime = now
	if sa.Atime != nil {
		in.rec.Atime = sa.Atime.UnixNano()
	}
	if sa.Mtime != nil {
		in.rec.Mtime = sa.Mtime.UnixNano()
	}
	if in.f != nil {
		in.f.setTimes(sa.Atime, sa.Mtime, now)
	}
	if err := t.persist(ctx, nil, in); err != nil {
		return Attr{}, err
	}
	return t.attrLocked(in), nil
}

// Readlink returns a symlink's target.
func (t *Tree) Readlink(ino uint64) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return "", err
	}
	if !in.rec.isSymlink() {
		return "", ErrInvalid
	}
	return in.rec.Target, nil
}

// Opened notes an open file handle of ino; Released its release. An
// inode unlinked while open lives until its last release.
func (t *Tree) Opened(ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return err
	}
	in.opens++
	return nil
}

// Released ends a handle; the file's content is flushed by the caller first.
func (t *Tree) Released(ctx context.Context, ino uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return err
	}
	in.opens--
	if in.opens == 0 && in.rec.Nlink == 0 {
		t.forgetLocked(in)
		return t.s.UpdateMeta(ctx, func(tx store.MetaTxn) error { return tx.Delete(inodeKey(ino)) })
	}
	return nil
}

// Statfs reports the space of the filesystem holding the repo.
func (t *Tree) Statfs() (syscall.Statfs_t, error) {
	var st syscall.Statfs_t
	err := syscall.Statfs(filepath.Dir(t.stage), &st)
	return st, err
}

// LookupPath finds the inode at p, a slash-separated path from the root.
func (t *Tree) LookupPath(p string) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	dir, name := path.Split(strings.Trim(p, "/"))
	d, err := t.walkLocked(dir)
	if err != nil {
		return 0, err
	}
	if name == "" {
		return RootIno, nil
	}
	c, ok := d.children[name]
	if !ok {
		return 0, ErrNotExist
	}
	return c, nil
}
