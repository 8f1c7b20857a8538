package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// TensorsDir is the name of the read-only tensor view at the root of the
// mount: .tensors/<path of a safetensors file>/ holds each tensor as a
// single-tensor .safetensors file, as .npy where numpy has the dtype, and
// the file's header.json. Tensor files are views of the model's bytes, not
// copies. Hidden from listings like .versions.
const TensorsDir = ".tensors"

// tensorsDir mirrors a directory of the working tree.
type tensorsDir struct {
	readOnly
	m   *mountState
	ino uint64 // the working-tree directory
}

var (
	_ fs.NodeLookuper  = (*tensorsDir)(nil)
	_ fs.NodeReaddirer = (*tensorsDir)(nil)
	_ fs.NodeGetattrer = (*tensorsDir)(nil)
)

func (d *tensorsDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	out.SetTimeout(refTimeout)
	return 0
}

// Readdir lists subdirectories and the files named *.safetensors (looking
// inside every file would read them all); any other safetensors file can
// still be entered by name.
func (d *tensorsDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := d.m.tree.Readdir(d.ino)
	if err != nil {
		return nil, toErrno(d.m.log, "readdir", err)
	}
	var list []fuse.DirEntry
	for _, e := range ents {
		isDir := e.Mode&syscall.S_IFMT == syscall.S_IFDIR
		if isDir || e.Mode&syscall.S_IFMT == syscall.S_IFREG && strings.HasSuffix(e.Name, ".safetensors") {
			list = append(list, fuse.DirEntry{Name: e.Name, Mode: syscall.S_IFDIR, Ino: pathIno(d.StableAttr().Ino, e.Name)})
		}
	}
	return fs.NewListDirStream(list), 0
}

func (d *tensorsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == VersionsDir && d.ino == worktree.RootIno && d.m.history != nil {
		dirAttr(&out.Attr)
		out.SetEntryTimeout(refTimeout)
		return d.NewInode(ctx, &tensorsVersions{m: d.m}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(d.StableAttr().Ino, name)}), 0
	}
	if name == IPFSDir && d.ino == worktree.RootIno && d.m.blocks != nil {
		dirAttr(&out.Attr)
		return d.NewInode(ctx, &tensorsIPFS{m: d.m}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(d.StableAttr().Ino, name)}), 0
	}
	a, err := d.m.tree.Lookup(d.ino, name)
	if err != nil {
		return nil, toErrno(d.m.log, "lookup", err)
	}
	var node fs.InodeEmbedder
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		node = &tensorsDir{m: d.m, ino: a.Ino}
	case syscall.S_IFREG:
		gen, err := d.m.tree.Gen(a.Ino)
		if err != nil {
			return nil, toErrno(d.m.log, "lookup", err)
		}
		md := &modelDir{m: d.m, src: &treeModel{m: d.m, ino: a.Ino, gen: gen}}
		if _, err := md.src.header(ctx); err != nil {
			if errors.Is(err, errNotModel) {
				return nil, syscall.ENOENT
			}
			d.m.log.Warn("malformed safetensors file", "name", name, "err", err)
			return nil, syscall.EIO
		}
		node = md
		// The view of one version of one file: a new inode when either changes.
		name = fmt.Sprintf("%s\x00%d\x00%d", name, a.Ino, gen)
	default:
		return nil, syscall.ENOENT
	}
	dirAttr(&out.Attr)
	out.SetEntryTimeout(refTimeout)
	out.SetAttrTimeout(refTimeout)
	return d.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(d.StableAttr().Ino, name)}), 0
}

// errStale: the file changed since its view was looked up; the kernel looks
// it up again.
var errStale = errors.New("stale .tensors view")

// errNotModel marks a file that does not even start like a safetensors
// file (its .tensors entry does not exist, rather than being broken).
var errNotModel = errors.New("not a safetensors file")

// modelDir lists the tensors of one safetensors file: one version of a
// working-tree file (a changed file gets a new view), or a commit's file.
type modelDir struct {
	readOnly
	m   *mountState
	src modelSource

	idxMu sync.Mutex
	idxH  *safetensors.Header // the header idx was built from
	idx   *tensorIndex
}

// modelSource is the safetensors file a .tensors directory shows: one
// version of a working-tree file, or a file of a commit.
type modelSource interface {
	// header parses the file's header: errNotModel when the file does
	// not start like one, errStale when the file changed since the view
	// was made.
	header(ctx context.Context) (*safetensors.Header, error)
	// readAt reads the file; errStale when it changed.
	readAt(ctx context.Context, p []byte, off int64) (int, error)
}

// treeModel is a working-tree file at content generation gen.
type treeModel struct {
	m        *mountState
	ino, gen uint64
}

var (
	_ fs.NodeLookuper  = (*modelDir)(nil)
	_ fs.NodeReaddirer = (*modelDir)(nil)
	_ fs.NodeGetattrer = (*modelDir)(nil)
)

// header returns the file's tensor table (cached by the working tree per
// content generation).
func (s *treeModel) header(ctx context.Context) (*safetensors.Header, error) {
	h, gen, err := s.m.tree.Tensors(ctx, s.ino)
	switch {
	case errors.Is(err, worktree.ErrNotModel):
		return nil, errNotModel
	case err != nil:
		return nil, err
	case gen != s.gen:
		return nil, errStale
	}
	return h, nil
}

func (s *treeModel) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if gen, err := s.m.tree.Gen(s.ino); err != nil || gen != s.gen {
		return 0, errStale // the model changed: its tensors moved
	}
	return s.m.tree.ReadAt(ctx, s.ino, p, off)
}

// readHeader reads the safetensors header of a commit's file; at most two
// are read at a time (one may be up to 100 MB).
func readHeader(ctx context.Context, m *mountState, r io.ReaderAt, size int64) (*safetensors.Header, error) {
	m.headerSlots <- struct{}{}
	defer func() { <-m.headerSlots }()
	var prefix [9]byte
	if n, _ := r.ReadAt(prefix[:], 0); n < 9 || prefix[8] != '{' {
		return nil, errNotModel
	}
	return safetensors.Read(r, size)
}

// dagModel is a file of a commit: immutable, its header parsed once it
// parses. What the bytes say (a table, or not a safetensors file) is kept;
// a failure to read them (a block missing for now, a cancelled request) is
// not, and the next call tries again.
type dagModel struct {
	m    *mountState
	file *unixfs.File
	mu   sync.Mutex
	done bool
	h    *safetensors.Header
	err  error
}

func (s *dagModel) header(ctx context.Context) (*safetensors.Header, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.h, s.err
	}
	h, err := readHeader(ctx, s.m, dagReaderAt{ctx, s.file}, int64(s.file.Size()))
	if err == nil || errors.Is(err, errNotModel) || errors.Is(err, safetensors.ErrNotSafetensors) {
		s.done, s.h, s.err = true, h, err
	}
	return h, err
}

func (s *dagModel) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	return s.file.ReadAt(ctx, p, off)
}

type dagReaderAt struct {
	ctx  context.Context
	file *unixfs.File
}

func (r dagReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.file.ReadAt(r.ctx, p, off) }

func (d *modelDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	out.SetTimeout(refTimeout)
	return 0
}

// tensorIndex is the listing of a model's .tensors directory: every name
// sorted, found by binary search. It is built once per header, so a
// listing costs O(entries) and a lookup O(log entries), even with a
// million tensors.
type tensorIndex struct {
	h     *safetensors.Header
	names []string // sorted; header.json included
	views []tensorRef
}

// tensorRef is the tensor (index into the header, -1 for header.json) a
// name shows, as a single-tensor safetensors file or as .npy.
type tensorRef struct {
	i   int32
	npy bool
}

// newTensorIndex lists the names shown for h; tensor names that are not
// valid file names are left out.
func newTensorIndex(h *safetensors.Header) *tensorIndex {
	x := &tensorIndex{h: h}
	type ent struct {
		name string
		ref  tensorRef
	}
	ents := []ent{{"header.json", tensorRef{i: -1}}}
	for i, t := range h.Tensors {
		if t.Name == "" || strings.ContainsAny(t.Name, "/\x00") || t.Name == "." || t.Name == ".." || len(t.Name) > 240 {
			continue
		}
		ents = append(ents, ent{t.Name + ".safetensors", tensorRef{i: int32(i)}})
		if _, ok := safetensors.NpyHeader(t); ok {
			ents = append(ents, ent{t.Name + ".npy", tensorRef{i: int32(i), npy: true}})
		}
	}
	sort.Slice(ents, func(a, b int) bool { return ents[a].name < ents[b].name })
	x.names = make([]string, 0, len(ents))
	x.views = make([]tensorRef, 0, len(ents))
	for k, e := range ents {
		if k > 0 && e.name == ents[k-1].name {
			continue // two tensors of one name: the first wins
		}
		x.names = append(x.names, e.name)
		x.views = append(x.views, e.ref)
	}
	return x
}

func (x *tensorIndex) find(name string) (tensorRef, bool) {
	k := sort.SearchStrings(x.names, name)
	if k == len(x.names) || x.names[k] != name {
		return tensorRef{}, false
	}
	return x.views[k], true
}

// index returns the listing of the model, built once per header.
func (d *modelDir) index(ctx context.Context) (*tensorIndex, error) {
	h, err := d.src.header(ctx)
	if err != nil {
		return nil, err
	}
	d.idxMu.Lock()
	defer d.idxMu.Unlock()
	if d.idx == nil || d.idxH != h {
		d.idx, d.idxH = newTensorIndex(h), h
	}
	return d.idx, nil
}

// indexStream lists an index without copying it.
type indexStream struct {
	x      *tensorIndex
	parent uint64
	k      int
}

func (s *indexStream) HasNext() bool { return s.k < len(s.x.names) }
func (s *indexStream) Close()        {}
func (s *indexStream) Next() (fuse.DirEntry, syscall.Errno) {
	n := s.x.names[s.k]
	s.k++
	return fuse.DirEntry{Name: n, Mode: syscall.S_IFREG, Ino: pathIno(s.parent, n), Off: uint64(s.k)}, 0
}

// Seekdir goes to the entry after offset off (the Off of an entry is its
// position plus one), for seekdir, rewinddir and a listing the kernel
// takes up again after an interruption.
func (s *indexStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	s.k = int(min(off, uint64(len(s.x.names))))
	return 0
}

var _ fs.FileSeekdirer = (*indexStream)(nil)

// indexDir is an open .tensors model directory. It answers READDIRPLUS
// with names only (no per-entry lookup, so no kernel inode per tensor): a
// listing of a million tensors then costs the index, not a million
// inodes. A program that stats an entry gets it looked up as usual.
type indexDir struct {
	indexStream
}

var (
	_ fs.FileReaddirenter = (*indexDir)(nil)
	_ fs.FileLookuper     = (*indexDir)(nil)
	_ fs.FileSeekdirer    = (*indexDir)(nil)
)

func (d *indexDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.HasNext() {
		return nil, 0
	}
	e, errno := d.Next()
	return &e, errno
}

// Lookup declines: an entry of READDIRPLUS without a node ID is a plain
// name to the kernel (fuse_direntplus_link).
func (d *indexDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.ENOENT
}

var _ fs.NodeOpendirHandler = (*modelDir)(nil)

func (d *modelDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	x, err := d.index(ctx)
	if err != nil {
		return nil, 0, d.headerErr(err)
	}
	return &indexDir{indexStream{x: x, parent: d.StableAttr().Ino}}, 0, 0
}

func (d *modelDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	x, err := d.index(ctx)
	if err != nil {
		return nil, d.headerErr(err)
	}
	return &indexStream{x: x, parent: d.StableAttr().Ino}, 0
}

func (d *modelDir) headerErr(err error) syscall.Errno {
	switch {
	case errors.Is(err, errStale):
		return syscall.ESTALE
	case errors.Is(err, safetensors.ErrNotSafetensors):
		d.m.log.Warn("malformed safetensors file", "err", err)
		return syscall.EIO
	}
	return toErrno(d.m.log, "safetensors header", err) // I/O, or interrupted
}

func (d *modelDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	x, err := d.index(ctx)
	if err != nil {
		return nil, d.headerErr(err)
	}
	v, ok := x.find(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	var node *tensorFile
	if v.i < 0 {
		b, err := safetensors.HeaderJSON(x.h)
		if err != nil {
			return nil, d.headerErr(err)
		}
		node = &tensorFile{m: d.m, src: d.src, head: b}
	} else {
		t := x.h.Tensors[v.i]
		var head []byte
		if v.npy {
			head, _ = safetensors.NpyHeader(t)
		} else if head, err = safetensors.SingleTensorHeader(t); err != nil {
			return nil, d.headerErr(err)
		}
		node = &tensorFile{m: d.m, src: d.src, head: head, t: t, data: true}
	}
	node.fill(&out.Attr)
	out.SetEntryTimeout(refTimeout)
	out.SetAttrTimeout(refTimeout)
	return d.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: pathIno(d.StableAttr().Ino, name)}), 0
}

// tensorFile is head followed (when data) by the tensor's bytes, read from
// the model file itself: a view, not a copy.
type tensorFile struct {
	readOnly
	m    *mountState
	src  modelSource
	head []byte
	t    safetensors.Tensor
	data bool
}

var (
	_ fs.NodeGetattrer   = (*tensorFile)(nil)
	_ fs.NodeOpener      = (*tensorFile)(nil)
	_ fs.NodeReader      = (*tensorFile)(nil)
	_ fs.NodeGetxattrer  = (*tensorFile)(nil)
	_ fs.NodeListxattrer = (*tensorFile)(nil)
)

func (f *tensorFile) size() uint64 {
	n := uint64(len(f.head))
	if f.data {
		n += uint64(f.t.End - f.t.Begin)
	}
	return n
}

func (f *tensorFile) fill(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = f.size()
	out.Nlink = 1
	out.Blksize = 1 << 20
	out.Blocks = (out.Size + 511) / 512
}

func (f *tensorFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fill(&out.Attr)
	out.SetTimeout(refTimeout)
	return 0
}

func (f *tensorFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, 0
}

func (f *tensorFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := int64(f.size())
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	n := 0
	if off < int64(len(f.head)) {
		n = copy(dest, f.head[off:])
	}
	if n < len(dest) {
		at := f.t.Begin + off + int64(n) - int64(len(f.head))
		k, err := f.src.readAt(ctx, dest[n:], at)
		if errors.Is(err, errStale) {
			return nil, syscall.ESTALE
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, toErrno(f.m.log, "read tensor", err)
		}
		n += k
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *tensorFile) xattrs() map[string]string {
	if !f.data {
		return nil
	}
	dims := make([]string, len(f.t.Shape))
	for i, d := range f.t.Shape {
		dims[i] = fmt.Sprint(d)
	}
	return map[string]string{"user.ipfrs.dtype": string(f.t.DType), "user.ipfrs.shape": "[" + strings.Join(dims, ",") + "]"}
}

func (f *tensorFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := f.xattrs()[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	return xattrReply(dest, []byte(v))
}

func (f *tensorFile) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, k := range sortedNames(mapKeys(f.xattrs())) {
		b = append(append(b, k...), 0)
	}
	return xattrReply(dest, []byte(b))
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// tensorsVersions is .tensors/.versions: commits/, branches/ and tags/,
// each entry the tensor view of that commit's tree.
type tensorsVersions struct {
	readOnly
	m *mountState
}

var (
	_ fs.NodeLookuper  = (*tensorsVersions)(nil)
	_ fs.NodeReaddirer = (*tensorsVersions)(nil)
	_ fs.NodeGetattrer = (*tensorsVersions)(nil)
)

func (v *tensorsVersions) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (v *tensorsVersions) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listDirs(v.StableAttr().Ino, []string{"branches", "commits", "tags"}), 0
}

func (v *tensorsVersions) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch name {
	case "commits", "branches", "tags":
	default:
		return nil, syscall.ENOENT
	}
	dirAttr(&out.Attr)
	node := &refDir{m: v.m, kind: name, view: v.m.tensorsTree}
	return v.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(v.StableAttr().Ino, name)}), 0
}

// tensorsTree is the treeView of .tensors/.versions: the tensors of the
// safetensors files of commit c's tree.
func (m *mountState) tensorsTree(ctx context.Context, parent *fs.Inode, key string, c cid.Cid, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	cm, errno := m.getCommit(ctx, c)
	if errno != 0 {
		return nil, errno
	}
	dirAttr(&out.Attr)
	return parent.NewInode(ctx, &tensorsDAGDir{m: m, c: cm.Tree}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(parent.StableAttr().Ino, key)}), 0
}

// tensorsDAGDir mirrors a directory of a commit's tree.
type tensorsDAGDir struct {
	readOnly
	m *mountState
	c cid.Cid
}

var (
	_ fs.NodeLookuper  = (*tensorsDAGDir)(nil)
	_ fs.NodeReaddirer = (*tensorsDAGDir)(nil)
	_ fs.NodeGetattrer = (*tensorsDAGDir)(nil)
)

func (d *tensorsDAGDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (d *tensorsDAGDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := unixfs.ReadDir(ctx, d.m.blocks, d.c)
	if err != nil {
		return nil, toErrno(d.m.log, "readdir", err)
	}
	var names []string
	for _, e := range ents {
		if unixfs.ValidName(e.Name) != nil {
			continue
		}
		info, err := unixfs.Stat(ctx, d.m.blocks, e.CID)
		if err != nil {
			return nil, toErrno(d.m.log, "readdir", err)
		}
		if info.Kind == unixfs.KindDirectory || info.Kind == unixfs.KindFile && strings.HasSuffix(e.Name, ".safetensors") {
			names = append(names, e.Name)
		}
	}
	return listDirs(d.StableAttr().Ino, names), 0
}

func (d *tensorsDAGDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := unixfs.Resolve(ctx, d.m.blocks, d.c, name)
	if err != nil {
		return nil, toErrno(d.m.log, "lookup", err)
	}
	return tensorsDAGEntry(ctx, d.m, d.EmbeddedInode(), name, c, out)
}

// tensorsDAGEntry is the .tensors view of the DAG c named name below
// parent: a directory mirrored, a safetensors file's tensors, else ENOENT.
func tensorsDAGEntry(ctx context.Context, m *mountState, parent *fs.Inode, name string, c cid.Cid, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	info, err := unixfs.Stat(ctx, m.blocks, c)
	if err != nil {
		return nil, dagLookupErr(m, err)
	}
	var node fs.InodeEmbedder
	switch info.Kind {
	case unixfs.KindDirectory:
		node = &tensorsDAGDir{m: m, c: c}
	case unixfs.KindFile:
		file, err := unixfs.OpenFile(context.WithoutCancel(ctx), m.blocks, c)
		if err != nil {
			return nil, toErrno(m.log, "lookup", err)
		}
		md := &modelDir{m: m, src: &dagModel{m: m, file: file}}
		if _, err := md.src.header(ctx); err != nil {
			if errors.Is(err, errNotModel) {
				return nil, syscall.ENOENT
			}
			return nil, md.headerErr(err)
		}
		node = md
	default:
		return nil, syscall.ENOENT
	}
	dirAttr(&out.Attr)
	return parent.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(parent.StableAttr().Ino, name+"@"+c.String())}), 0
}
