// Command memfs mounts an in-memory go-fuse filesystem with exactly the
// mount options of ipfrs-mount: the baseline that benchmarks divide by.
// Usage: memfs MOUNTPOINT (SIGINT/SIGTERM unmount).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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

func (d *dir) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := &fs.MemRegularFile{Attr: fuse.Attr{Mode: mode}}
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
