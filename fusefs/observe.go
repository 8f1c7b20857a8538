package fusefs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Observer sees every FUSE request the mount answers, whatever node type
// serves it (working tree, .versions, .tensors): metrics hook in here
// instead of into each node's methods. Methods are called concurrently.
type Observer interface {
	// Op reports one finished request: its kind ("read", "lookup", ...),
	// how long it took and its errno (0 on success).
	Op(op string, d time.Duration, errno syscall.Errno)
	// Read and Written report bytes returned by reads and accepted by
	// writes.
	Read(n int)
	Written(n int)
	// OpenFiles reports file handles opened (+1) and released (-1).
	OpenFiles(delta int)
}

// observedFS wraps the node bridge's raw file system. Requests it does not
// override (forget, locks, ioctl, init) pass through unobserved.
type observedFS struct {
	fuse.RawFileSystem
	o Observer
}

var _ fuse.RawFileSystem = observedFS{}

func (f observedFS) done(op string, start time.Time, st fuse.Status) fuse.Status {
	f.o.Op(op, time.Since(start), syscall.Errno(st))
	return st
}

func (f observedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return f.done("lookup", time.Now(), f.RawFileSystem.Lookup(c, h, name, out))
}

func (f observedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	return f.done("getattr", time.Now(), f.RawFileSystem.GetAttr(c, in, out))
}

func (f observedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return f.done("setattr", time.Now(), f.RawFileSystem.SetAttr(c, in, out))
}

func (f observedFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.done("mknod", time.Now(), f.RawFileSystem.Mknod(c, in, name, out))
}

func (f observedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.done("mkdir", time.Now(), f.RawFileSystem.Mkdir(c, in, name, out))
}

func (f observedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.done("unlink", time.Now(), f.RawFileSystem.Unlink(c, h, name))
}

func (f observedFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.done("rmdir", time.Now(), f.RawFileSystem.Rmdir(c, h, name))
}

func (f observedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return f.done("rename", time.Now(), f.RawFileSystem.Rename(c, in, oldName, newName))
}

func (f observedFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.done("link", time.Now(), f.RawFileSystem.Link(c, in, name, out))
}

func (f observedFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.done("symlink", time.Now(), f.RawFileSystem.Symlink(c, h, target, name, out))
}

func (f observedFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	start := time.Now()
	b, st := f.RawFileSystem.Readlink(c, h)
	return b, f.done("readlink", start, st)
}

func (f observedFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return f.done("access", time.Now(), f.RawFileSystem.Access(c, in))
}

func (f observedFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := f.RawFileSystem.GetXAttr(c, h, attr, dest)
	return n, f.done("getxattr", start, st)
}

func (f observedFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := f.RawFileSystem.ListXAttr(c, h, dest)
	return n, f.done("listxattr", start, st)
}

func (f observedFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return f.done("setxattr", time.Now(), f.RawFileSystem.SetXAttr(c, in, attr, data))
}

func (f observedFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return f.done("removexattr", time.Now(), f.RawFileSystem.RemoveXAttr(c, h, attr))
}

func (f observedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := f.done("create", time.Now(), f.RawFileSystem.Create(c, in, name, out))
	if st.Ok() {
		f.o.OpenFiles(1)
	}
	return st
}

func (f observedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := f.done("open", time.Now(), f.RawFileSystem.Open(c, in, out))
	if st.Ok() {
		f.o.OpenFiles(1)
	}
	return st
}

func (f observedFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	start := time.Now()
	f.RawFileSystem.Release(c, in)
	f.done("release", start, fuse.OK)
	f.o.OpenFiles(-1)
}

func (f observedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	start := time.Now()
	res, st := f.RawFileSystem.Read(c, in, buf)
	if st.Ok() && res != nil {
		f.o.Read(res.Size())
	}
	return res, f.done("read", start, st)
}

func (f observedFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return f.done("lseek", time.Now(), f.RawFileSystem.Lseek(c, in, out))
}

func (f observedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := f.RawFileSystem.Write(c, in, data)
	f.o.Written(int(n))
	return n, f.done("write", start, st)
}

// Writev is tried before Write; ENOSYS means the server falls back to
// Write, which reports the request.
func (f observedFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := f.RawFileSystem.Writev(c, in, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	f.o.Written(int(n))
	return n, f.done("write", start, st)
}

func (f observedFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	start := time.Now()
	n, st := f.RawFileSystem.CopyFileRange(c, in)
	return n, f.done("copy_file_range", start, st)
}

func (f observedFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return f.done("flush", time.Now(), f.RawFileSystem.Flush(c, in))
}

func (f observedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return f.done("fsync", time.Now(), f.RawFileSystem.Fsync(c, in))
}

func (f observedFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return f.done("fallocate", time.Now(), f.RawFileSystem.Fallocate(c, in))
}

func (f observedFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return f.done("opendir", time.Now(), f.RawFileSystem.OpenDir(c, in, out))
}

func (f observedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.done("readdir", time.Now(), f.RawFileSystem.ReadDir(c, in, out))
}

func (f observedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.done("readdirplus", time.Now(), f.RawFileSystem.ReadDirPlus(c, in, out))
}

func (f observedFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return f.done("fsyncdir", time.Now(), f.RawFileSystem.FsyncDir(c, in))
}

func (f observedFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return f.done("statfs", time.Now(), f.RawFileSystem.StatFs(c, h, out))
}

func (f observedFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	return f.done("statx", time.Now(), f.RawFileSystem.Statx(c, in, out))
}
