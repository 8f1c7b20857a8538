package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// VersionsDir is the name of the read-only history directory at the root of
// the mount. Like ZFS's .zfs with snapdir=hidden it is not listed (so that
// cp -a and rsync of the mount do not copy all history) but can be entered.
const VersionsDir = ".versions"

// refTimeout is how long the kernel may cache names under .versions whose
// target moves (branches, tags, HEAD, log).
const refTimeout = time.Second

// versionsRoot is .versions: HEAD, log, commits/, branches/, tags/.
type versionsRoot struct {
	readOnly
	m *mountState
}

var (
	_ fs.NodeLookuper  = (*versionsRoot)(nil)
	_ fs.NodeReaddirer = (*versionsRoot)(nil)
	_ fs.NodeGetattrer = (*versionsRoot)(nil)
)

var versionsEntries = []fuse.DirEntry{
	{Name: "HEAD", Mode: syscall.S_IFREG},
	{Name: "branches", Mode: syscall.S_IFDIR},
	{Name: "commits", Mode: syscall.S_IFDIR},
	{Name: "log", Mode: syscall.S_IFREG},
	{Name: "tags", Mode: syscall.S_IFDIR},
}

func dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Size = 4096
}

func (v *versionsRoot) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (v *versionsRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(versionsEntries), 0
}

func (v *versionsRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var node fs.InodeEmbedder
	mode := uint32(syscall.S_IFDIR)
	switch name {
	case "HEAD":
		node, mode = &genFile{gen: v.m.headText}, syscall.S_IFREG
	case "log":
		node, mode = &genFile{gen: v.m.logText}, syscall.S_IFREG
	case "commits", "branches", "tags":
		node = &refDir{m: v.m, kind: name, view: v.m.commitTree, taggable: name == "tags"}
	default:
		return nil, syscall.ENOENT
	}
	ch := v.NewInode(ctx, node, fs.StableAttr{Mode: mode, Ino: pathIno(v.StableAttr().Ino, name)})
	if g, ok := node.(*genFile); ok {
		var a fuse.AttrOut
		if errno := g.Getattr(ctx, nil, &a); errno != 0 {
			return nil, errno
		}
		out.Attr = a.Attr
	} else {
		dirAttr(&out.Attr)
	}
	out.SetEntryTimeout(refTimeout)
	out.SetAttrTimeout(refTimeout)
	return ch, 0
}

// genFile is a small read-only file whose text is generated when opened.
type genFile struct {
	readOnly
	gen func(ctx context.Context) ([]byte, error)
}

var (
	_ fs.NodeGetattrer = (*genFile)(nil)
	_ fs.NodeOpener    = (*genFile)(nil)
)

func (g *genFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, err := g.gen(ctx)
	if err != nil {
		return toErrno(nil, "versions", err)
	}
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(len(b))
	out.Nlink = 1
	out.SetTimeout(refTimeout)
	return 0
}

func (g *genFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	b, err := g.gen(ctx)
	if err != nil {
		return nil, 0, toErrno(nil, "versions", err)
	}
	// The text changes with every commit: no page cache for it.
	return &snapshotHandle{b: b}, fuse.FOPEN_DIRECT_IO, 0
}

type snapshotHandle struct{ b []byte }

var _ fs.FileReader = (*snapshotHandle)(nil)

func (s *snapshotHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(s.b)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(s.b[off:min(int64(len(s.b)), off+int64(len(dest)))]), 0
}

func sortedNames(names []string) []string {
	sort.Strings(names)
	return names
}

func listDirs(parent uint64, names []string) fs.DirStream {
	sortedNames(names)
	list := make([]fuse.DirEntry, len(names))
	for i, n := range names {
		list[i] = fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: pathIno(parent, n)}
	}
	return fs.NewListDirStream(list)
}

// refDir lists commits, branches or tags; each entry is a view (the tree,
// or the tensors of the tree) of the commit it names. The same type serves
// .versions/{commits,branches,tags} and .tensors/.versions/....
type refDir struct {
	readOnly
	m        *mountState
	kind     string // "commits", "branches" or "tags"
	view     treeView
	taggable bool // mkdir NAME tags the current state (.versions/tags)
}

// treeView makes the inode showing commit c's tree, named key below parent.
type treeView func(ctx context.Context, parent *fs.Inode, key string, c cid.Cid, out *fuse.EntryOut) (*fs.Inode, syscall.Errno)

func (d *refDir) list(ctx context.Context) (map[string]cid.Cid, error) {
	switch d.kind {
	case "branches":
		return d.m.history.Branches(ctx)
	case "tags":
		return d.m.history.Tags(ctx)
	}
	out := map[string]cid.Cid{}
	err := d.m.history.Commits(ctx, func(c cid.Cid) error {
		out[c.String()] = c
		return nil
	})
	return out, err
}

// resolve finds the commit an entry names; a commit's name is its CID, so
// no listing is needed.
func (d *refDir) resolve(ctx context.Context, name string) (cid.Cid, error) {
	if d.kind == "commits" {
		c, err := cid.Decode(name)
		if err != nil || c.Prefix().Codec != cid.DagCBOR {
			return cid.Undef, syscall.ENOENT
		}
		return c, nil
	}
	refs, err := d.list(ctx)
	if err != nil {
		return cid.Undef, err
	}
	c, ok := refs[name]
	if !ok {
		return cid.Undef, syscall.ENOENT
	}
	return c, nil
}

var (
	_ fs.NodeLookuper  = (*refDir)(nil)
	_ fs.NodeReaddirer = (*refDir)(nil)
	_ fs.NodeGetattrer = (*refDir)(nil)
	_ fs.NodeMkdirer   = (*refDir)(nil)
)

func (d *refDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	if d.taggable {
		out.Mode |= 0o200
	}
	out.SetTimeout(refTimeout)
	return 0
}

func (d *refDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	refs, err := d.list(ctx)
	if err != nil {
		return nil, toErrno(d.m.log, "readdir", err)
	}
	names := make([]string, 0, len(refs))
	for n := range refs {
		names = append(names, n)
	}
	return listDirs(d.StableAttr().Ino, names), 0
}

func (d *refDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := d.resolve(ctx, name)
	if err != nil {
		return nil, toErrno(d.m.log, "lookup", err)
	}
	ch, errno := d.view(ctx, d.EmbeddedInode(), name+"@"+c.String(), c, out)
	out.SetEntryTimeout(refTimeout)
	return ch, errno
}

// Mkdir in tags/ tags the current state of the working tree, committing it
// first when it changed since the last commit: a training job snapshots with
// a plain mkdir.
func (d *refDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !d.taggable {
		return nil, syscall.EROFS
	}
	ctx = context.WithoutCancel(ctx)
	if err := versions.ValidName(name); err != nil {
		return nil, syscall.EINVAL
	}
	c, err := d.m.history.TagTree(ctx, name)
	if errors.Is(err, versions.ErrExists) {
		return nil, syscall.EEXIST
	}
	if err != nil {
		return nil, toErrno(d.m.log, "mkdir tag", err)
	}
	ch, errno := d.view(ctx, d.EmbeddedInode(), name+"@"+c.String(), c, out)
	out.SetEntryTimeout(refTimeout)
	return ch, errno
}

// getCommit loads commit c; a CID that is not a stored commit is ENOENT.
func (m *mountState) getCommit(ctx context.Context, c cid.Cid) (versions.Commit, syscall.Errno) {
	cm, err := m.history.Get(ctx, c)
	if errors.Is(err, versions.ErrUnknownRef) || errors.Is(err, store.ErrNotFound) || errors.Is(err, versions.ErrNotCommit) {
		return cm, syscall.ENOENT
	}
	return cm, toErrno(m.log, "commit", err)
}

// commitTree is the treeView of .versions: commit c's tree, read-only.
func (m *mountState) commitTree(ctx context.Context, parent *fs.Inode, key string, c cid.Cid, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	cm, errno := m.getCommit(ctx, c)
	if errno != 0 {
		return nil, errno
	}
	ch, _, err := newDAGInode(ctx, parent, key, m, cm.Tree, cm.Time)
	if err != nil {
		return nil, toErrno(m.log, "commit tree", err)
	}
	ch.Operations().(*dagNode).fill(&out.Attr)
	return ch, 0
}

func (m *mountState) headText(ctx context.Context) ([]byte, error) {
	branch, head, err := m.history.Head(ctx)
	if err != nil {
		return nil, err
	}
	h := "-"
	if head.Defined() {
		h = head.String()
	}
	return []byte(branch + " " + h + "\n"), nil
}

func (m *mountState) logText(ctx context.Context) ([]byte, error) {
	_, head, err := m.history.Head(ctx)
	if err != nil || !head.Defined() {
		return nil, err
	}
	var b strings.Builder
	err = m.history.Log(ctx, head, func(c versions.Commit) error {
		fmt.Fprintf(&b, "%s %s %s\n", c.CID, c.Time.UTC().Format(time.RFC3339), oneLineMsg(c.Message))
		return nil
	})
	return []byte(b.String()), err
}

func oneLineMsg(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
