package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ipfrs/ipfrs-mount/safetensors"
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
		md := &modelDir{m: d.m, ino: a.Ino, gen: gen}
		if _, err := md.header(ctx); err != nil {
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

// modelDir lists the tensors of one safetensors file of the working tree.
// The header is read again at every lookup, so the view follows the file.
type modelDir struct {
	readOnly
	m   *mountState
	ino uint64
	gen uint64 // the file's content generation this view shows
}

var (
	_ fs.NodeLookuper  = (*modelDir)(nil)
	_ fs.NodeReaddirer = (*modelDir)(nil)
	_ fs.NodeGetattrer = (*modelDir)(nil)
)

// fileReaderAt reads a working-tree file.
type fileReaderAt struct {
	ctx  context.Context
	tree *worktree.Tree
	ino  uint64
}

func (r fileReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.tree.ReadAt(r.ctx, r.ino, p, off)
}

// header returns the file's parsed header, from the mount's cache when the
// file has not changed. At most two headers are read at a time (one may be
// up to 100 MB).
func (d *modelDir) header(ctx context.Context) (*safetensors.Header, error) {
	if gen, err := d.m.tree.Gen(d.ino); err != nil {
		return nil, err
	} else if gen != d.gen {
		return nil, errStale
	}
	key := [2]uint64{d.ino, d.gen}
	if h := d.m.headers.get(key); h != nil {
		return h, nil
	}
	d.m.headerSlots <- struct{}{}
	defer func() { <-d.m.headerSlots }()
	a, err := d.m.tree.Getattr(d.ino)
	if err != nil {
		return nil, err
	}
	var prefix [9]byte
	if n, _ := d.m.tree.ReadAt(ctx, d.ino, prefix[:], 0); n < 9 || prefix[8] != '{' {
		return nil, errNotModel
	}
	h, err := safetensors.Read(fileReaderAt{ctx, d.m.tree, d.ino}, int64(a.Size))
	if err == nil {
		d.m.headers.put(key, h)
	}
	return h, err
}

// headerCache keeps the last parsed headers by (inode, generation).
type headerCache struct {
	mu    sync.Mutex
	order [][2]uint64
	m     map[[2]uint64]*safetensors.Header
}

const headerCacheSize = 16

func (c *headerCache) get(k [2]uint64) *safetensors.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *headerCache) put(k [2]uint64, h *safetensors.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[2]uint64]*safetensors.Header{}
	}
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) == headerCacheSize {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.m[k] = h
}

func (d *modelDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	out.SetTimeout(refTimeout)
	return 0
}

// tensorFileNames maps the names shown to the tensors; names that are not
// valid file names are left out.
func tensorFileNames(h *safetensors.Header) map[string]tensorView {
	out := map[string]tensorView{}
	for _, t := range h.Tensors {
		if t.Name == "" || strings.ContainsAny(t.Name, "/\x00") || t.Name == "." || t.Name == ".." || len(t.Name) > 240 {
			continue
		}
		out[t.Name+".safetensors"] = tensorView{t: t}
		if _, ok := safetensors.NpyHeader(t); ok {
			out[t.Name+".npy"] = tensorView{t: t, npy: true}
		}
	}
	return out
}

type tensorView struct {
	t   safetensors.Tensor
	npy bool
}

func (d *modelDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	h, err := d.header(ctx)
	if err != nil {
		return nil, d.headerErr(err)
	}
	names := []string{"header.json"}
	for n := range tensorFileNames(h) {
		names = append(names, n)
	}
	list := make([]fuse.DirEntry, 0, len(names))
	for _, n := range sortedNames(names) {
		list = append(list, fuse.DirEntry{Name: n, Mode: syscall.S_IFREG, Ino: pathIno(d.StableAttr().Ino, n)})
	}
	return fs.NewListDirStream(list), 0
}

func (d *modelDir) headerErr(err error) syscall.Errno {
	if errors.Is(err, errStale) {
		return syscall.ESTALE
	}
	d.m.log.Warn("malformed safetensors file", "ino", d.ino, "err", err)
	return syscall.EIO
}

func (d *modelDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	h, err := d.header(ctx)
	if err != nil {
		return nil, d.headerErr(err)
	}
	var node *tensorFile
	if name == "header.json" {
		b, err := safetensors.HeaderJSON(h)
		if err != nil {
			return nil, d.headerErr(err)
		}
		node = &tensorFile{m: d.m, ino: d.ino, gen: d.gen, head: b}
	} else {
		v, ok := tensorFileNames(h)[name]
		if !ok {
			return nil, syscall.ENOENT
		}
		var head []byte
		if v.npy {
			head, _ = safetensors.NpyHeader(v.t)
		} else if head, err = safetensors.SingleTensorHeader(v.t); err != nil {
			return nil, d.headerErr(err)
		}
		node = &tensorFile{m: d.m, ino: d.ino, gen: d.gen, head: head, t: v.t, data: true}
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
	ino  uint64
	gen  uint64 // the model file's generation the view was made from
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
		if gen, err := f.m.tree.Gen(f.ino); err != nil || gen != f.gen {
			return nil, syscall.ESTALE // the model changed: its tensors moved
		}
		at := f.t.Begin + off + int64(n) - int64(len(f.head))
		k, err := f.m.tree.ReadAt(ctx, f.ino, dest[n:], at)
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
