package fusefs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// IPFSDir and BlocksDir are the read-only views of stored content by CID
// at the root of the mount: any UnixFS DAG (like Kubo's /ipfs) and any
// block's raw bytes.
const (
	IPFSDir   = ".ipfs"
	BlocksDir = ".blocks"
)

// blocksListMax bounds a listing of .blocks: a store holds millions.
const blocksListMax = 1000

// ipfsRoot is .ipfs: empty when listed, any stored DAG when looked up.
type ipfsRoot struct {
	readOnly
	m *mountState
}

var (
	_ fs.NodeLookuper  = (*ipfsRoot)(nil)
	_ fs.NodeReaddirer = (*ipfsRoot)(nil)
	_ fs.NodeGetattrer = (*ipfsRoot)(nil)
)

func (d *ipfsRoot) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (d *ipfsRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(nil), 0
}

func (d *ipfsRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := cid.Decode(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	ch, _, err := newDAGInode(ctx, d.EmbeddedInode(), name, d.m, c, time.Unix(0, 0))
	if err != nil {
		return nil, dagLookupErr(d.m, err)
	}
	ch.Operations().(*dagNode).fill(&out.Attr)
	// Content by CID never changes, but GC can remove it: look it up anew.
	out.SetEntryTimeout(time.Nanosecond) // 0 would mean the mount's default
	return ch, 0
}

// dagLookupErr: a CID that is not stored, or not UnixFS, does not exist
// here.
func dagLookupErr(m *mountState, err error) syscall.Errno {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, unixfs.ErrUnsupported) || errors.Is(err, unixfs.ErrMalformed) {
		return syscall.ENOENT
	}
	return toErrno(m.log, "lookup", err)
}

// blocksRoot is .blocks: one file per stored block, named by its CID.
type blocksRoot struct {
	readOnly
	m *mountState
}

var (
	_ fs.NodeLookuper  = (*blocksRoot)(nil)
	_ fs.NodeReaddirer = (*blocksRoot)(nil)
	_ fs.NodeGetattrer = (*blocksRoot)(nil)
)

func (d *blocksRoot) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

var errListFull = errors.New("listing full")

// Readdir lists the first blocksListMax blocks in key order.
func (d *blocksRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	var list []fuse.DirEntry
	if d.m.store != nil {
		err := d.m.store.AllKeys(ctx, func(k store.KeyInfo) error {
			if len(list) == blocksListMax {
				return errListFull
			}
			name := k.CID.String()
			list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: pathIno(d.StableAttr().Ino, name)})
			return nil
		})
		if err != nil && !errors.Is(err, errListFull) {
			return nil, toErrno(d.m.log, "readdir", err)
		}
	}
	return fs.NewListDirStream(list), 0
}

func (d *blocksRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := cid.Decode(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	size := 0
	err = d.m.blocks.View(ctx, c, func(b []byte) error { size = len(b); return nil })
	if errors.Is(err, store.ErrNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, toErrno(d.m.log, "lookup", err)
	}
	n := &blockFile{m: d.m, c: c, size: uint64(size)}
	n.fill(&out.Attr)
	out.SetEntryTimeout(time.Nanosecond) // GC can remove it (0 would mean the default)
	// The same bytes under any CID of them: name the inode by the CID.
	return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: pathIno(d.StableAttr().Ino, name)}), 0
}

// blockFile is one block's raw bytes.
type blockFile struct {
	readOnly
	m    *mountState
	c    cid.Cid
	size uint64
}

var (
	_ fs.NodeGetattrer   = (*blockFile)(nil)
	_ fs.NodeOpener      = (*blockFile)(nil)
	_ fs.NodeReader      = (*blockFile)(nil)
	_ fs.NodeGetxattrer  = (*blockFile)(nil)
	_ fs.NodeListxattrer = (*blockFile)(nil)
)

func (n *blockFile) fill(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = n.size
	out.Blocks = (n.size + 511) / 512
	out.Nlink = 1
}

func (n *blockFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *blockFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *blockFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k := 0
	err := n.m.blocks.View(ctx, n.c, func(b []byte) error {
		if off < int64(len(b)) {
			k = copy(dest, b[off:])
		}
		return nil
	})
	if err != nil {
		return nil, toErrno(n.m.log, "read", err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *blockFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return (&dagNode{info: unixfs.Info{CID: n.c}}).Getxattr(ctx, attr, dest)
}

func (n *blockFile) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return (&dagNode{}).Listxattr(ctx, dest)
}

// tensorsIPFS is .tensors/.ipfs: the tensors of safetensors files of any
// stored DAG, by CID (a directory's or the file's own).
type tensorsIPFS struct {
	readOnly
	m *mountState
}

var (
	_ fs.NodeLookuper  = (*tensorsIPFS)(nil)
	_ fs.NodeReaddirer = (*tensorsIPFS)(nil)
	_ fs.NodeGetattrer = (*tensorsIPFS)(nil)
)

func (d *tensorsIPFS) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (d *tensorsIPFS) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(nil), 0
}

func (d *tensorsIPFS) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := cid.Decode(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	return tensorsDAGEntry(ctx, d.m, d.EmbeddedInode(), name, c, out)
}
