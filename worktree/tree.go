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
	// MetaFault, when set, is called before every metadata write; an error
	// it returns fails that write as if the store had. Tests use it to
	// inject failures; leave it nil otherwise.
	MetaFault func() error
}

// Tree is the working tree. All methods are safe for concurrent use.
type Tree struct {
	s      *store.Badger
	layout unixfs.Layout
	stage  string
	log    *slog.Logger

	// wmu serialises the changes of the namespace and of inode records:
	// a change is checked and prepared under mu, written to the store
	// holding wmu only, and applied to memory under mu once the write
	// succeeded. Readers (stat, lookup, readdir) take mu alone and so never
	// wait for a metadata write, and see a change only once it is durable
	// in the store; a change whose write fails is never seen.
	wmu sync.Mutex
	// mu guards the namespace in memory: inodes, their records and
	// children. It is never held across I/O. Lock order: wmu, mu, then
	// any fileData.mu; never take mu while holding a fileData.mu.
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
	// bg runs the header reads (see Tensors); Close cancels bgCtx and
	// waits for them.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc

	// changed tracks files whose content changed (their directories' DAG
	// nodes must be rebuilt) and files with unflushed writes, so that
	// computing the root costs the number of changes, not the tree size.
	changedMu sync.Mutex
	changed   map[uint64]struct{}
	unflushed map[uint64]struct{}

	metaFault func() error
}

type inode struct {
	rec      record
	children map[string]uint64 // directories
	parent   uint64            // directories: the one parent
	parents  map[uint64]int    // non-directories: names per parent directory
	dirNode  *unixfs.Node      // directories: cached DAG node, nil when changed
	dirGen   uint64            // directories: bumped whenever dirNode is dropped
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
	Rdev         uint32 // device nodes
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
		changed: map[uint64]struct{}{}, unflushed: map[uint64]struct{}{}, tableSlots: make(chan struct{}, 2),
		metaFault: o.MetaFault}
	if o.Compress {
		t.encoder, t.bases = s, deltabase.New(s)
	}
	t.bgCtx, t.bgCancel = context.WithCancel(context.Background())
	if err := t.load(ctx); err != nil {
		t.bgCancel()
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
	// Count links from the names reachable from the root; drop the inodes
	// no such name refers to (unlinked while open when the daemon stopped,
	// or written by a change whose last step failed) and the names held
	// by directories that are themselves unreachable.
	links := map[uint64]uint32{}
	if _, ok := t.inodes[RootIno]; ok {
		links[RootIno] = 1
		queue := []uint64{RootIno}
		for len(queue) > 0 {
			d := t.inodes[queue[0]]
			queue = queue[1:]
			for _, c := range d.children {
				if links[c]++; links[c] == 1 && t.inodes[c].rec.isDir() {
					queue = append(queue, c)
				}
			}
		}
	}
	var orphans []uint64
	for ino, in := range t.inodes {
		if links[ino] == 0 {
			orphans = append(orphans, ino)
			for name := range in.children {
				stale = append(stale, dentryKey(ino, name))
			}
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
	for _, ino := range orphans {
		delete(t.inodes, ino)
	}
	for _, in := range t.inodes {
		for name, c := range in.children {
			if _, ok := t.inodes[c]; !ok { // an orphan directory's child
				delete(in.children, name)
			}
		}
		for p := range in.parents {
			if _, ok := t.inodes[p]; !ok {
				delete(in.parents, p)
			}
		}
	}
	if _, ok := t.inodes[RootIno]; !ok {
		now := time.Now().UnixNano()
		root := &inode{rec: record{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now},
			children: map[string]uint64{}}
		t.inodes[RootIno] = root
		if err := t.update(ctx, func(tx store.MetaTxn) error { return putRecord(tx, root.rec) }); err != nil {
			return err
		}
	}
	if len(orphans) == 0 && len(stale) == 0 {
		return nil
	}
	t.log.Info("dropping what no name refers to", "inodes", len(orphans), "names", len(stale))
	keys := stale
	for _, ino := range orphans {
		keys = append(keys, inodeKey(ino))
	}
	return t.inBatches(ctx, len(keys), func(tx store.MetaTxn, i int) error { return tx.Delete(keys[i]) })
}

// Close publishes every file's content durably, records the tree's DAG
// root and stops the publisher. Files still open lose nothing: their data
// is flushed too.
func (t *Tree) Close(ctx context.Context) error {
	t.bgCancel()
	t.bg.Wait()
	err := t.FlushAll(ctx)
	t.pub.stop()
	if err2 := t.pub.publishNow(ctx, t); err == nil {
		err = err2
	}
	if err == nil {
		var root unixfs.Node
		if root, err = t.Root(ctx); err == nil {
			err = t.update(ctx, func(tx store.MetaTxn) error { return tx.Set(rootCIDKey, []byte(root.CID.String())) })
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

// update runs fn in one metadata transaction. Every metadata write of the
// tree goes through it (the test-only fault hook sits here).
func (t *Tree) update(ctx context.Context, fn func(tx store.MetaTxn) error) error {
	if t.metaFault != nil {
		if err := t.metaFault(); err != nil {
			return fmt.Errorf("worktree: metadata write: %w", err)
		}
	}
	return t.s.UpdateMeta(ctx, fn)
}

// recordOf returns the record to persist for in: for files the content
// fields are the published ones, and times come from the live file data.
// Called with mu held.
func recordOf(in *inode) record {
	r := in.rec
	if in.f != nil {
		r.Mtime, r.Ctime, r.Atime = in.f.times()
	}
	return r
}

func putRecord(tx store.MetaTxn, r record) error {
	b, err := encodeRecord(&r)
	if err != nil {
		return err
	}
	return tx.Set(inodeKey(r.Ino), b)
}

// change is a namespace change being prepared: the new records of the
// inodes it touches, copies until the write succeeded.
type change struct {
	recs  map[uint64]*record
	order []*inode
}

// rec returns the new record of in, a copy of its current one at first.
// Called with mu held.
func (c *change) rec(in *inode) *record {
	if c.recs == nil {
		c.recs = map[uint64]*record{}
	}
	r, ok := c.recs[in.rec.Ino]
	if !ok {
		cp := recordOf(in)
		r = &cp
		c.recs[in.rec.Ino] = r
		c.order = append(c.order, in)
	}
	return r
}

// drop forgets the new record of in (its inode is deleted instead).
func (c *change) drop(in *inode) {
	delete(c.recs, in.rec.Ino)
}

// write persists the new records and whatever more fn writes, in one
// transaction.
func (t *Tree) write(ctx context.Context, c *change, fn func(tx store.MetaTxn) error) error {
	return t.update(ctx, func(tx store.MetaTxn) error {
		for _, in := range c.order {
			if r, ok := c.recs[in.rec.Ino]; ok {
				if err := putRecord(tx, *r); err != nil {
					return err
				}
			}
		}
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
}

// apply installs the new records once written; files take their new ctime.
// Called with mu held.
func (c *change) apply() {
	for _, in := range c.order {
		r, ok := c.recs[in.rec.Ino]
		if !ok {
			continue
		}
		in.rec = *r
		if in.f != nil {
			in.f.touchCtime(r.Ctime)
		}
	}
}

// allocLocked hands out an inode number. A number handed out to a change
// that then fails is not used again in this run; after a restart, numbers
// start above the highest inode named (see load).
func (t *Tree) allocLocked() uint64 {
	ino := t.nextIno
	t.nextIno++
	return ino
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
	a := Attr{Ino: r.Ino, Mode: r.Mode, Nlink: r.Nlink, UID: r.UID, GID: r.GID, Size: r.Size, Rdev: r.Rdev,
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
	Rdev     uint32 // device nodes
}

// Create makes a new file, directory, symlink, named pipe, socket or
// device node called name in parent. The tree keeps pipes, sockets and
// device nodes as names with attributes; the kernel does their I/O.
func (t *Tree) Create(ctx context.Context, parent uint64, name string, n NewNode) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	default:
		return Attr{}, fmt.Errorf("%w: file type %o", ErrNotSupported, n.Mode&syscall.S_IFMT)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	p, err := t.dir(parent)
	if err == nil {
		if _, ok := p.children[name]; ok {
			err = ErrExist
		}
	}
	if err != nil {
		t.mu.Unlock()
		return Attr{}, err
	}
	var c change
	pr := c.rec(p)
	ino := t.allocLocked()
	next := t.nextIno
	t.mu.Unlock()

	now := time.Now().UnixNano()
	r := record{Ino: ino, Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: 1,
		Atime: now, Mtime: now, Ctime: now, Target: n.Target}
	switch r.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		r.Nlink = 2
		pr.Nlink++
	case syscall.S_IFCHR, syscall.S_IFBLK:
		r.Rdev = n.Rdev
	}
	pr.Mtime, pr.Ctime = now, now
	err = t.write(ctx, &c, func(tx store.MetaTxn) error {
		if err := putRecord(tx, r); err != nil {
			return err
		}
		if err := tx.Set(dentryKey(parent, name), []byte(strconv.FormatUint(ino, 16))); err != nil {
			return err
		}
		return tx.Set(nextInoKey, []byte(strconv.FormatUint(next, 10)))
	})
	if err != nil {
		return Attr{}, err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	c.apply()
	in := &inode{rec: r}
	switch {
	case r.isDir():
		in.children = map[string]uint64{}
		in.parent = parent
	case r.isRegular():
		in.f = newFileData(r)
		t.files.Store(ino, in.f)
	}
	t.inodes[ino] = in
	t.setChildLocked(p, name, ino)
	return t.attrLocked(in), nil
}

// Link adds the name newName in newParent for the existing non-directory ino.
func (t *Tree) Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error) {
	if err := checkName(newName); err != nil {
		return Attr{}, err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	in, p, err := t.linkTargetsLocked(ino, newParent, newName)
	if err != nil {
		t.mu.Unlock()
		return Attr{}, err
	}
	var c change
	now := time.Now().UnixNano()
	ir := c.rec(in)
	ir.Nlink++
	ir.Ctime = now
	pr := c.rec(p)
	pr.Mtime, pr.Ctime = now, now
	t.mu.Unlock()

	err = t.write(ctx, &c, func(tx store.MetaTxn) error {
		return tx.Set(dentryKey(newParent, newName), []byte(strconv.FormatUint(ino, 16)))
	})
	if err != nil {
		return Attr{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c.apply()
	t.setChildLocked(p, newName, ino)
	return t.attrLocked(in), nil
}

func (t *Tree) linkTargetsLocked(ino, newParent uint64, newName string) (in, p *inode, err error) {
	if in, err = t.get(ino); err != nil {
		return nil, nil, err
	}
	if in.rec.isDir() {
		return nil, nil, ErrPermission
	}
	if in.rec.Nlink == 0 {
		return nil, nil, ErrNotExist // unlinked while open: linkat gives ENOENT
	}
	if p, err = t.dir(newParent); err != nil {
		return nil, nil, err
	}
	if _, ok := p.children[newName]; ok {
		return nil, nil, ErrExist
	}
	return in, p, nil
}

// Remove unlinks name from parent: a non-directory (dir false) or an empty
// directory (dir true). A file still open stays readable until released.
func (t *Tree) Remove(ctx context.Context, parent uint64, name string, dir bool) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	p, in, err := t.removeTargetLocked(parent, name, dir)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	var c change
	now := time.Now().UnixNano()
	pr := c.rec(p)
	pr.Mtime, pr.Ctime = now, now
	ir := c.rec(in)
	if dir {
		pr.Nlink--
		ir.Nlink = 0
	} else {
		ir.Nlink--
		ir.Ctime = now
	}
	gone := ir.Nlink == 0 && (in.opens == 0 || dir)
	if gone {
		c.drop(in)
	}
	ino := in.rec.Ino
	t.mu.Unlock()

	err = t.write(ctx, &c, func(tx store.MetaTxn) error {
		if err := tx.Delete(dentryKey(parent, name)); err != nil {
			return err
		}
		if gone {
			return tx.Delete(inodeKey(ino))
		}
		return nil
	})
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c.apply()
	if gone {
		in.rec.Nlink = 0
	}
	t.deleteChildLocked(p, name)
	// Opened meanwhile: the handle keeps it until released.
	if in.rec.Nlink == 0 && (in.opens == 0 || dir) {
		t.forgetLocked(in)
	}
	return nil
}

func (t *Tree) removeTargetLocked(parent uint64, name string, dir bool) (p, in *inode, err error) {
	if p, err = t.dir(parent); err != nil {
		return nil, nil, err
	}
	c, ok := p.children[name]
	if !ok {
		return nil, nil, ErrNotExist
	}
	in = t.inodes[c]
	switch {
	case dir && !in.rec.isDir():
		return nil, nil, ErrNotDir
	case !dir && in.rec.isDir():
		return nil, nil, ErrIsDir
	case dir && len(in.children) > 0:
		return nil, nil, ErrNotEmpty
	}
	return p, in, nil
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
// ancestors, and bumps their generations so that a DAG build that read
// them before does not install a node now stale (see Node). The walk goes
// to the root: O(depth).
func (t *Tree) invalidateLocked(d uint64) {
	for {
		in := t.inodes[d]
		if in == nil {
			return
		}
		in.dirNode = nil
		in.dirGen++
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
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	p, np, sin, din, err := t.renameTargetsLocked(parent, name, newParent, newName, flags)
	if err != nil || sin == nil {
		t.mu.Unlock()
		return err
	}
	var c change
	now := time.Now().UnixNano()
	pr, npr := c.rec(p), c.rec(np) // one record when parent == newParent
	pr.Mtime, pr.Ctime, npr.Mtime, npr.Ctime = now, now, now, now
	sr := c.rec(sin)
	sr.Ctime = now
	src = sin.rec.Ino
	var dst uint64
	var gone bool
	if din != nil {
		dst = din.rec.Ino
		dr := c.rec(din)
		dr.Ctime = now
		if flags&RenameExchange != 0 {
			if sin.rec.isDir() != din.rec.isDir() && parent != newParent {
				if sin.rec.isDir() {
					pr.Nlink--
					npr.Nlink++
				} else {
					pr.Nlink++
					npr.Nlink--
				}
			}
		} else {
			if din.rec.isDir() {
				npr.Nlink--
				dr.Nlink = 0
			} else {
				dr.Nlink--
			}
			if gone = dr.Nlink == 0 && (din.opens == 0 || din.rec.isDir()); gone {
				c.drop(din)
			}
		}
	}
	if flags&RenameExchange == 0 && sin.rec.isDir() && parent != newParent {
		pr.Nlink--
		npr.Nlink++
	}
	t.mu.Unlock()

	err = t.write(ctx, &c, func(tx store.MetaTxn) error {
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
	})
	if err != nil {
		return err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	c.apply()
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
			din.rec.Nlink = 0
		}
		if din != nil && din.rec.Nlink == 0 && (din.opens == 0 || din.rec.isDir()) {
			t.forgetLocked(din)
		}
	}
	if sin.rec.isDir() {
		sin.parent = newParent
	}
	return nil
}

// renameTargetsLocked checks a rename and returns the inodes it touches;
// sin nil with no error means there is nothing to do.
func (t *Tree) renameTargetsLocked(parent uint64, name string, newParent uint64, newName string, flags uint32) (p, np, sin, din *inode, err error) {
	if p, err = t.dir(parent); err != nil {
		return
	}
	if np, err = t.dir(newParent); err != nil {
		return
	}
	src, ok := p.children[name]
	if !ok {
		return nil, nil, nil, nil, ErrNotExist
	}
	sin = t.inodes[src]
	dst, exists := np.children[newName]
	switch {
	case exists && dst == src:
		return nil, nil, nil, nil, nil // two names of one inode: POSIX says do nothing
	case flags&RenameNoReplace != 0 && exists:
		return nil, nil, nil, nil, ErrExist
	case flags&RenameExchange != 0 && !exists:
		return nil, nil, nil, nil, ErrNotExist
	case sin.rec.isDir() && t.isAncestorLocked(src, newParent):
		return nil, nil, nil, nil, ErrInvalid // a directory may not move below itself
	}
	if !exists {
		return p, np, sin, nil, nil
	}
	din = t.inodes[dst]
	if flags&RenameExchange != 0 {
		if din.rec.isDir() && t.isAncestorLocked(dst, parent) {
			return nil, nil, nil, nil, ErrInvalid
		}
		return p, np, sin, din, nil
	}
	switch {
	case sin.rec.isDir() && !din.rec.isDir():
		return nil, nil, nil, nil, ErrNotDir
	case !sin.rec.isDir() && din.rec.isDir():
		return nil, nil, nil, nil, ErrIsDir
	case din.rec.isDir() && len(din.children) > 0:
		return nil, nil, nil, nil, ErrNotEmpty
	}
	return p, np, sin, din, nil
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

// Setattr changes attributes (chmod, chown, truncate, utimens). The new
// attributes are written first; a truncation then changes the content
// (made durable by the next flush, like a write).
func (t *Tree) Setattr(ctx context.Context, ino uint64, sa SetAttr) (Attr, error) {
	t.wmu.Lock()
	t.mu.Lock()
	in, err := t.get(ino)
	if err == nil && sa.Size != nil && in.f == nil {
		err = ErrInvalid
		if in.rec.isDir() {
			err = ErrIsDir
		}
	}
	if err != nil {
		t.mu.Unlock()
		t.wmu.Unlock()
		return Attr{}, err
	}
	var c change
	now := time.Now().UnixNano()
	r := c.rec(in)
	if sa.Mode != nil {
		r.Mode = r.Mode&syscall.S_IFMT | *sa.Mode&07777
	}
	if sa.UID != nil {
		r.UID = *sa.UID
	}
	if sa.GID != nil {
		r.GID = *sa.GID
	}
	r.Ctime = now
	if sa.Atime != nil {
		r.Atime = sa.Atime.UnixNano()
	}
	if sa.Mtime != nil {
		r.Mtime = sa.Mtime.UnixNano()
	}
	if sa.Size != nil && sa.Mtime == nil {
		r.Mtime = now // truncate(2) changes mtime too
	}
	t.mu.Unlock()
	if err := t.write(ctx, &c, nil); err != nil {
		t.wmu.Unlock()
		return Attr{}, err
	}
	t.mu.Lock()
	c.apply()
	if in.f != nil {
		in.f.setTimes(sa.Atime, sa.Mtime, now)
	}
	t.mu.Unlock()
	t.wmu.Unlock()
	if sa.Size != nil {
		// Outside the locks: a flush of this file may hold its lock a while.
		if err := in.f.truncate(t, ino, *sa.Size); err != nil {
			return Attr{}, err
		}
	}
	return t.Getattr(ino)
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
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	in, err := t.get(ino)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	in.opens--
	if in.opens > 0 || in.rec.Nlink > 0 {
		t.mu.Unlock()
		return nil
	}
	// The last handle of an unlinked inode: it goes from memory whatever
	// the write does (a record left behind names nothing, and the next
	// mount drops it).
	t.forgetLocked(in)
	t.mu.Unlock()
	return t.update(ctx, func(tx store.MetaTxn) error { return tx.Delete(inodeKey(ino)) })
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
