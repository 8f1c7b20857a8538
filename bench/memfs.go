// Package bench holds what benchmarks compare against: an in-memory
// go-fuse file system mounted with the working tree's own options.
package bench

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// NewMemFS is an in-memory file system (files and directories only), the
// baseline benchmarks divide by: mounted through MountNode, it has exactly
// the working tree's mount options.
func NewMemFS() fs.InodeEmbedder { return &memDir{} }

// memDir is a directory whose files are go-fuse MemRegularFiles.
type memDir struct {
	fs.Inode
}

var (
	_ fs.NodeCreater  = (*memDir)(nil)
	_ fs.NodeMkdirer  = (*memDir)(nil)
	_ fs.NodeUnlinker = (*memDir)(nil)
	_ fs.NodeRmdirer  = (*memDir)(nil)
)

// memFile is an in-memory file that grows by doubling (go-fuse's
// MemRegularFile reallocates on every extending write, which makes a large
// sequential write quadratic and no baseline at all).
type memFile struct {
	fs.Inode
	mu   sync.RWMutex
	data []byte
	mode uint32
}

var (
	_ fs.NodeOpener    = (*memFile)(nil)
	_ fs.NodeReader    = (*memFile)(nil)
	_ fs.NodeWriter    = (*memFile)(nil)
	_ fs.NodeGetattrer = (*memFile)(nil)
	_ fs.NodeSetattrer = (*memFile)(nil)
	_ fs.NodeFlusher   = (*memFile)(nil)
)

func (f *memFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *memFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *memFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := int(off) + len(data)
	if end > cap(f.data) {
		grown := make([]byte, len(f.data), max(end, 2*cap(f.data)))
		copy(grown, f.data)
		f.data = grown
	}
	if end > len(f.data) {
		f.data = f.data[:end]
	}
	copy(f.data[off:], data)
	return uint32(len(data)), 0
}

func (f *memFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(len(f.data))
	out.Blksize = 1 << 20
	return 0
}

func (f *memFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		f.mu.Lock()
		if int(sz) <= cap(f.data) {
			clear(f.data[min(int(sz), len(f.data)):min(int(sz), cap(f.data))])
			f.data = f.data[:sz]
		} else {
			grown := make([]byte, sz)
			copy(grown, f.data)
			f.data = grown
		}
		f.mu.Unlock()
	}
	return f.Getattr(ctx, fh, out)
}

func (f *memFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

func (d *memDir) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := &memFile{mode: mode & 07777}
	ch := d.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG})
	d.AddChild(name, ch, true)
	return ch, nil, 0, 0
}

func (d *memDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch := d.NewPersistentInode(ctx, &memDir{}, fs.StableAttr{Mode: syscall.S_IFDIR})
	d.AddChild(name, ch, true)
	return ch, 0
}

func (d *memDir) Unlink(ctx context.Context, name string) syscall.Errno { return 0 }
func (d *memDir) Rmdir(ctx context.Context, name string) syscall.Errno  { return 0 }
