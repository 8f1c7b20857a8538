// Command memfs mounts an in-memory go-fuse filesystem with exactly the
// mount options of ipfrs-mount: the baseline that benchmarks divide by.
// Usage: memfs MOUNTPOINT (SIGINT/SIGTERM unmount).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ipfrs/ipfrs-mount/fusefs"
)

// dir is a directory whose files are go-fuse MemRegularFiles.
type dir struct {
	fs.Inode
}

var (
	_ fs.NodeCreater  = (*dir)(nil)
	_ fs.NodeMkdirer  = (*dir)(nil)
	_ fs.NodeUnlinker = (*dir)(nil)
	_ fs.NodeRmdirer  = (*dir)(nil)
)

// file is an in-memory file that grows by doubling (go-fuse's
// MemRegularFile reallocates on every extending write, which makes a large
// sequential write quadratic and no baseline at all).
type file struct {
	fs.Inode
	mu   sync.RWMutex
	data []byte
	mode uint32
}

var (
	_ fs.NodeOpener    = (*file)(nil)
	_ fs.NodeReader    = (*file)(nil)
	_ fs.NodeWriter    = (*file)(nil)
	_ fs.NodeGetattrer = (*file)(nil)
	_ fs.NodeSetattrer = (*file)(nil)
	_ fs.NodeFlusher   = (*file)(nil)
)

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
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

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(len(f.data))
	out.Blksize = 1 << 20
	return 0
}

func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
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

func (f *file) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

func (d *dir) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := &file{mode: mode & 07777}
	ch := d.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG})
	d.AddChild(name, ch, true)
	return ch, nil, 0, 0
}

func (d *dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch := d.NewPersistentInode(ctx, &dir{}, fs.StableAttr{Mode: syscall.S_IFDIR})
	d.AddChild(name, ch, true)
	return ch, 0
}

func (d *dir) Unlink(ctx context.Context, name string) syscall.Errno { return 0 }
func (d *dir) Rmdir(ctx context.Context, name string) syscall.Errno  { return 0 }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: memfs MOUNTPOINT")
		os.Exit(2)
	}
	server, err := fusefs.MountNode(os.Args[1], &dir{}, fusefs.MountOptions{ReadAheadKB: 16384})
	if err != nil {
		fmt.Fprintln(os.Stderr, "memfs:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; server.Unmount() }()
	server.Wait()
}
