package fusefs

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/prefetch"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// dagNode is a read-only file, directory or symlink of a stored UnixFS DAG:
// the tree of a commit under .versions. Content is immutable, so the kernel
// may cache it for good; every change is refused with EROFS.
type dagNode struct {
	readOnly
	m     *mountState // blocks and log
	info  unixfs.Info
	mtime time.Time

	mu   sync.Mutex
	file *unixfs.File
}

var (
	_ fs.NodeLookuper    = (*dagNode)(nil)
	_ fs.NodeReaddirer   = (*dagNode)(nil)
	_ fs.NodeGetattrer   = (*dagNode)(nil)
	_ fs.NodeOpener      = (*dagNode)(nil)
	_ fs.NodeReader      = (*dagNode)(nil)
	_ fs.NodeReadlinker  = (*dagNode)(nil)
	_ fs.NodeGetxattrer  = (*dagNode)(nil)
	_ fs.NodeListxattrer = (*dagNode)(nil)
)

// newDAGInode makes the inode for the DAG c, found at name below the node
// with inode number parent. Inode numbers derive from that path, so they are
// stable while mounted and distinct from the working tree's (top bit set).
func newDAGInode(ctx context.Context, parent *fs.Inode, name string, m *mountState, c cid.Cid, mtime time.Time) (*fs.Inode, unixfs.Info, error) {
	info, err := unixfs.Stat(ctx, m.blocks, c)
	if err != nil {
		return nil, info, err
	}
	n := &dagNode{m: m, info: info, mtime: mtime}
	return parent.NewInode(ctx, n, fs.StableAttr{Mode: dagMode(info.Kind) & syscall.S_IFMT, Ino: pathIno(parent.StableAttr().Ino, name)}), info, nil
}

func pathIno(parent uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(parent >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64() | 1<<63
}

func dagMode(k unixfs.Kind) uint32 {
	switch k {
	case unixfs.KindDirectory:
		return syscall.S_IFDIR | 0o555
	case unixfs.KindSymlink:
		return syscall.S_IFLNK | 0o777
	default:
		return syscall.S_IFREG | 0o444
	}
}

func (n *dagNode) fill(out *fuse.Attr) {
	out.Mode = dagMode(n.info.Kind)
	out.Size = n.info.Size
	if n.info.Kind == unixfs.KindDirectory {
		out.Size = 4096
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 1 << 20
	out.Nlink = 1
	out.SetTimes(&n.mtime, &n.mtime, &n.mtime)
}

func (n *dagNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *dagNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.info.Kind != unixfs.KindDirectory {
		return nil, syscall.ENOTDIR
	}
	c, err := unixfs.Resolve(ctx, n.m.blocks, n.info.CID, name)
	if err != nil {
		return nil, toErrno(n.m.log, "lookup", err)
	}
	ch, _, err := newDAGInode(ctx, n.EmbeddedInode(), name, n.m, c, n.mtime)
	if err != nil {
		return nil, toErrno(n.m.log, "lookup", err)
	}
	ch.Operations().(*dagNode).fill(&out.Attr)
	return ch, 0
}

func (n *dagNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := unixfs.ReadDir(ctx, n.m.blocks, n.info.CID)
	if err != nil {
		return nil, toErrno(n.m.log, "readdir", err)
	}
	list := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if unixfs.ValidName(e.Name) != nil {
			continue // "..", "a/b", "": a hostile DAG's; no path can name them
		}
		info, err := unixfs.Stat(ctx, n.m.blocks, e.CID)
		if err != nil {
			return nil, toErrno(n.m.log, "readdir", err)
		}
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: dagMode(info.Kind), Ino: pathIno(n.StableAttr().Ino, e.Name)})
	}
	return fs.NewListDirStream(list), 0
}

func (n *dagNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.file == nil {
		f, err := unixfs.OpenFile(context.WithoutCancel(ctx), n.m.blocks, n.info.CID)
		if err != nil {
			return nil, 0, toErrno(n.m.log, "open", err)
		}
		n.file = f
	}
	h := &dagHandle{stream: n.m.openStream(n.file, int64(n.info.Size), nil)}
	// An open file's DAG is a GC root until it is closed.
	if p, ok := n.m.blocks.(tempPinner); ok {
		h.pin = p.TempPin()
		h.pin.Protect(n.info.CID)
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// tempPinner is the block store's side of temporary pins.
type tempPinner interface{ TempPin() *store.TempPin }

// dagHandle is an open file of a stored DAG: it holds a temporary pin on
// the file's DAG and its read-ahead. Reads go to the node.
type dagHandle struct {
	pin    *store.TempPin   // nil when the store has no GC
	stream *prefetch.Stream // nil without a prefetcher
}

var _ fs.FileReleaser = (*dagHandle)(nil)

func (h *dagHandle) Release(ctx context.Context) syscall.Errno {
	if h.pin != nil {
		h.pin.Release()
	}
	if h.stream != nil {
		h.stream.Close()
	}
	return 0
}

func (n *dagNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.Lock()
	file := n.file
	n.mu.Unlock()
	if file == nil {
		return nil, syscall.EBADF
	}
	if h, ok := fh.(*dagHandle); ok && h.stream != nil {
		h.stream.Access(off, int64(len(dest)))
	}
	if _, ok := n.m.blocks.(unixfs.WillNeeder); ok {
		// Start every leaf of the range at once (a remote store fetches
		// them in parallel, once: a failure is the read's).
		if err := file.Warm(ctx, off, int64(len(dest))); err != nil {
			return nil, toErrno(n.m.log, "read", err)
		}
	}
	k, err := file.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toErrno(n.m.log, "read", err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *dagNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.info.Kind != unixfs.KindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.info.Target), 0
}

func (n *dagNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr != worktree.CIDXattr {
		return 0, syscall.ENODATA
	}
	v := n.info.CID.String()
	return xattrReply(dest, []byte(v))
}

func (n *dagNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	v := worktree.CIDXattr + "\x00"
	return xattrReply(dest, []byte(v))
}

// readOnly refuses every change with EROFS; read-only node types embed it.
type readOnly struct{ fs.Inode }

var (
	_ fs.NodeCreater       = (*readOnly)(nil)
	_ fs.NodeMkdirer       = (*readOnly)(nil)
	_ fs.NodeMknoder       = (*readOnly)(nil)
	_ fs.NodeSymlinker     = (*readOnly)(nil)
	_ fs.NodeLinker        = (*readOnly)(nil)
	_ fs.NodeUnlinker      = (*readOnly)(nil)
	_ fs.NodeRmdirer       = (*readOnly)(nil)
	_ fs.NodeRenamer       = (*readOnly)(nil)
	_ fs.NodeSetattrer     = (*readOnly)(nil)
	_ fs.NodeSetxattrer    = (*readOnly)(nil)
	_ fs.NodeRemovexattrer = (*readOnly)(nil)
)

func (*readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (*readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*readOnly) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (*readOnly) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (*readOnly) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (*readOnly) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (*readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}
func (*readOnly) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }
