package fusefs

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ipfrs/ipfrs-mount/worktree"
)

// Node is a file, directory or symlink of the working tree.
type Node struct {
	fs.Inode
	tree *worktree.Tree
	log  *slog.Logger
	m    *mountState
}

var (
	_ fs.NodeLookuper      = (*Node)(nil)
	_ fs.NodeGetattrer     = (*Node)(nil)
	_ fs.NodeSetattrer     = (*Node)(nil)
	_ fs.NodeCreater       = (*Node)(nil)
	_ fs.NodeMkdirer       = (*Node)(nil)
	_ fs.NodeSymlinker     = (*Node)(nil)
	_ fs.NodeReadlinker    = (*Node)(nil)
	_ fs.NodeLinker        = (*Node)(nil)
	_ fs.NodeUnlinker      = (*Node)(nil)
	_ fs.NodeRmdirer       = (*Node)(nil)
	_ fs.NodeRenamer       = (*Node)(nil)
	_ fs.NodeOpener        = (*Node)(nil)
	_ fs.NodeReaddirer     = (*Node)(nil)
	_ fs.NodeFsyncer       = (*Node)(nil)
	_ fs.NodeStatfser      = (*Node)(nil)
	_ fs.NodeGetxattrer    = (*Node)(nil)
	_ fs.NodeSetxattrer    = (*Node)(nil)
	_ fs.NodeListxattrer   = (*Node)(nil)
	_ fs.NodeRemovexattrer = (*Node)(nil)
)

func (n *Node) ino() uint64 { return n.StableAttr().Ino }

func (n *Node) errno(op string, err error) syscall.Errno { return toErrno(n.log, op, err) }

func fillAttr(a worktree.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.UID, a.GID
	out.Size = a.Size
	out.Rdev = a.Rdev
	out.Blocks = (a.Size + 511) / 512
	out.Blksize = 1 << 20
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

// child returns the kernel-facing inode for a, reusing a live one.
func (n *Node) child(ctx context.Context, a worktree.Attr, out *fuse.EntryOut) *fs.Inode {
	fillAttr(a, &out.Attr)
	return n.NewInode(ctx, &Node{tree: n.tree, log: n.log, m: n.m}, fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: a.Ino})
}

// reserved reports whether name in this directory is one of the mount's
// own views (.versions, .tensors), which the working tree may not hold.
func (n *Node) reserved(name string) bool {
	if n.ino() != worktree.RootIno || n.m == nil {
		return false
	}
	return name == TensorsDir || name == VersionsDir && n.m.history != nil ||
		(name == IPFSDir || name == BlocksDir) && n.m.blocks != nil
}

// maxName is the longest name a directory entry may have (NAME_MAX).
const maxName = 255

func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	if n.reserved(name) {
		dirAttr(&out.Attr)
		var view fs.InodeEmbedder
		switch name {
		case TensorsDir:
			view = &tensorsDir{m: n.m, ino: worktree.RootIno}
		case IPFSDir:
			view = &ipfsRoot{m: n.m}
		case BlocksDir:
			view = &blocksRoot{m: n.m}
		default:
			view = &versionsRoot{m: n.m}
		}
		return n.NewInode(ctx, view, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: pathIno(0, name)}), 0
	}
	a, err := n.tree.Lookup(n.ino(), name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	return n.child(ctx, a, out), 0
}

func (n *Node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, err := n.tree.Getattr(n.ino())
	if err != nil {
		return n.errno("getattr", err)
	}
	fillAttr(a, &out.Attr)
	return 0
}

func (n *Node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var sa worktree.SetAttr
	if m, ok := in.GetMode(); ok {
		sa.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		sa.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		sa.GID = &g
	}
	if s, ok := in.GetSize(); ok {
		sa.Size = &s
	}
	if t, ok := in.GetATime(); ok {
		sa.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		sa.Mtime = &t
	}
	a, err := n.tree.Setattr(ctx, n.ino(), sa)
	if err != nil {
		return n.errno("setattr", err)
	}
	fillAttr(a, &out.Attr)
	return 0
}

func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

func (n *Node) create(ctx context.Context, name string, mode uint32, target string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.createNode(ctx, name, worktree.NewNode{Mode: mode, Target: target}, out)
}

func (n *Node) createNode(ctx context.Context, name string, nn worktree.NewNode, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.reserved(name) {
		return nil, syscall.EEXIST
	}
	nn.UID, nn.GID = caller(ctx)
	a, err := n.tree.Create(ctx, n.ino(), name, nn)
	if err != nil {
		return nil, n.errno("create", err)
	}
	return n.child(ctx, a, out), 0
}

func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	child, errno := n.create(ctx, name, syscall.S_IFREG|mode&07777, "", out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, flags, errno := openHandle(ctx, n.m, child.StableAttr().Ino, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return child, h, flags, 0
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(ctx, name, syscall.S_IFDIR|mode&07777, "", out)
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(ctx, name, syscall.S_IFLNK|0o777, target, out)
}

func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.tree.Readlink(n.ino())
	if err != nil {
		return nil, n.errno("readlink", err)
	}
	return []byte(t), 0
}

func (n *Node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.reserved(name) {
		return nil, syscall.EEXIST
	}
	if _, ok := target.(*Node); !ok {
		return nil, syscall.EXDEV // a file of .versions or .tensors
	}
	a, err := n.tree.Link(ctx, target.EmbeddedInode().StableAttr().Ino, n.ino(), name)
	if err != nil {
		return nil, n.errno("link", err)
	}
	return n.child(ctx, a, out), 0
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.errno("unlink", n.tree.Remove(ctx, n.ino(), name, false))
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.errno("rmdir", n.tree.Remove(ctx, n.ino(), name, true))
}

func (n *Node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.reserved(name) {
		return syscall.EBUSY
	}
	if p, ok := newParent.(*Node); !ok {
		return syscall.EXDEV // into .versions
	} else if p.reserved(newName) {
		return syscall.EEXIST
	}
	np := newParent.EmbeddedInode().StableAttr().Ino
	return n.errno("rename", n.tree.Rename(ctx, n.ino(), name, np, newName, flags))
}

func (n *Node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return openHandle(ctx, n.m, n.ino(), flags)
}

func (n *Node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.tree.Readdir(n.ino())
	if err != nil {
		return nil, n.errno("readdir", err)
	}
	list := make([]fuse.DirEntry, len(ents))
	for i, e := range ents {
		list[i] = fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode}
	}
	return fs.NewListDirStream(list), 0
}

func (n *Node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	ctx = context.WithoutCancel(ctx) // see handle.Fsync
	if n.IsDir() {
		return n.errno("fsyncdir", n.tree.Sync(ctx))
	}
	return n.errno("fsync", n.tree.Fsync(ctx, n.ino()))
}

func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.tree.Statfs()
	if err != nil {
		return n.errno("statfs", err)
	}
	out.FromStatfsT(&st)
	return 0
}

func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, err := n.tree.Getxattr(ctx, n.ino(), attr)
	if err != nil {
		return 0, n.errno("getxattr", err)
	}
	return xattrReply(dest, []byte(v))
}

func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.errno("setxattr", n.tree.Setxattr(ctx, n.ino(), attr, data, flags))
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.errno("removexattr", n.tree.Removexattr(ctx, n.ino(), attr))
}

func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.tree.Listxattr(n.ino())
	if err != nil {
		return 0, n.errno("listxattr", err)
	}
	var b []byte
	for _, name := range names {
		b = append(append(b, name...), 0)
	}
	return xattrReply(dest, []byte(b))
}

// timeouts for the kernel's caches: every change goes through this mount,
// and the kernel updates its caches on the operations it sends, so they can
// be long.
const (
	entryTimeout    = 10 * time.Second
	attrTimeout     = 10 * time.Second
	negativeTimeout = time.Second
)

var _ fs.NodeAllocater = (*Node)(nil)

// Allocate supports plain fallocate (the file grows, new bytes read as
// zeros) and FALLOC_FL_KEEP_SIZE (nothing to do: the store has no
// preallocation); punching holes and other modes are not supported.
func (n *Node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const keepSize = 1
	switch mode {
	case 0:
		end := off + size
		if end < off || end > 1<<62 {
			return syscall.EFBIG
		}
		return n.errno("fallocate", n.tree.Extend(ctx, n.ino(), end))
	case keepSize:
		return 0
	default:
		return syscall.EOPNOTSUPP
	}
}

var _ fs.NodeMknoder = (*Node)(nil)

// Mknod makes named pipes, unix sockets, device nodes (and plain files).
// The tree keeps their names and attributes; the kernel does their I/O.
// UnixFS cannot represent them, so commits leave them out.
func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.createNode(ctx, name, worktree.NewNode{Mode: mode, Rdev: dev}, out)
}
