package fusefs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ipfrs/ipfrs-mount/hottier"
	"github.com/ipfrs/ipfrs-mount/prefetch"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// handle is an open regular file. Reads take no lock of their own, so
// concurrent reads on one handle run in parallel.
type handle struct {
	tree     *worktree.Tree
	log      *slog.Logger
	ino      uint64
	writable bool
	stream   *prefetch.Stream // read-ahead; nil for write-only handles

	// The hot tier's copy of the content, when the handle was opened on
	// one: passed through to the kernel (pt), or read from its mapping
	// while the content stays that of the open (gen).
	hot      *hottier.Hot
	copy     *hottier.File
	pt       bool
	gen      uint64
	size     int64
	readSize atomic.Int64 // bytes read through the daemon
}

var (
	_ fs.FileReader          = (*handle)(nil)
	_ fs.FileWriter          = (*handle)(nil)
	_ fs.FileFlusher         = (*handle)(nil)
	_ fs.FileFsyncer         = (*handle)(nil)
	_ fs.FileReleaser        = (*handle)(nil)
	_ fs.FilePassthroughFder = (*handle)(nil)
)

// openHandle opens ino. The kernel keeps its cached pages when the content
// has not changed since the last open. FOPEN_DIRECT_IO, which would break
// shared mmap of a file the daemon serves, comes only with passthrough
// (mmap then goes to the hot copy; see Hot).
func openHandle(ctx context.Context, m *mountState, ino uint64, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	t := m.tree
	if err := t.Opened(ino); err != nil {
		return nil, 0, toErrno(m.log, "open", err)
	}
	h := &handle{tree: t, log: m.log, ino: ino, writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	if a, err := t.Getattr(ino); err == nil {
		h.size = int64(a.Size)
	}
	var fuseFlags uint32
	if m.hot != nil {
		h.hot = m.hot
		var directIO bool
		h.copy, h.pt, directIO = m.hot.Open(ctx, ino, h.writable || flags&syscall.O_TRUNC != 0)
		if directIO {
			fuseFlags = fuse.FOPEN_DIRECT_IO
		}
		h.gen, _ = t.Gen(ino)
	}
	if h.pt && fuseFlags&fuse.FOPEN_DIRECT_IO == 0 {
		return h, fuseFlags, 0 // reads go to the copy without us
	}
	if flags&syscall.O_ACCMODE != syscall.O_WRONLY && flags&syscall.O_TRUNC == 0 && h.copy == nil {
		h.stream = m.openStream(treeSource{t, ino}, h.size, func() []prefetch.Range {
			return tensorRanges(context.Background(), t, ino)
		})
	}
	if fuseFlags&fuse.FOPEN_DIRECT_IO == 0 && t.KeepCache(ino) {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return h, fuseFlags, 0
}

// PassthroughFd hands the kernel the hot copy to read from; go-fuse asks
// only the first open of an inode, later ones share its backing file.
func (h *handle) PassthroughFd() (int, bool) {
	if h.copy == nil || !h.pt {
		return 0, false
	}
	return h.copy.Fd(), true
}

// treeSource is a working-tree file as the prefetcher sees it.
type treeSource struct {
	t   *worktree.Tree
	ino uint64
}

func (s treeSource) Warm(ctx context.Context, off, n int64) error {
	return s.t.Warm(ctx, s.ino, off, n)
}

// tensorRanges lists the tensors of a safetensors file in file order
// (safetensors.Header keeps them sorted); nil for any other file.
func tensorRanges(ctx context.Context, t *worktree.Tree, ino uint64) []prefetch.Range {
	h, _, err := t.Tensors(ctx, ino)
	if err != nil {
		return nil
	}
	r := make([]prefetch.Range, 0, len(h.Tensors))
	for _, x := range h.Tensors {
		if x.End > x.Begin {
			r = append(r, prefetch.Range{Off: x.Begin, End: x.End})
		}
	}
	return r
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.copy != nil {
		if gen, err := h.tree.Gen(h.ino); err == nil && gen == h.gen {
			b, err := h.copy.Bytes()
			if err != nil {
				return nil, toErrno(h.log, "read", err)
			}
			if off >= int64(len(b)) {
				return fuse.ReadResultData(nil), 0
			}
			return fuse.ReadResultData(b[off:min(off+int64(len(dest)), int64(len(b)))]), 0
		}
	}
	if h.stream != nil {
		h.stream.Access(off, int64(len(dest)))
	}
	n, err := h.tree.ReadAt(ctx, h.ino, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toErrno(h.log, "read", err)
	}
	h.readSize.Add(int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.tree.WriteAt(ctx, h.ino, data, off)
	if err != nil {
		return uint32(n), toErrno(h.log, "write", err)
	}
	return uint32(n), 0
}

// Flush runs at every close(2): the written bytes become a DAG here, where
// an error can still reach the program.
//
// Flush and fsync run to completion even when the kernel interrupts the
// request (Go programs are interrupted by runtime preemption signals): an
// interrupted fsync would otherwise report a false error.
//
// A read-only handle's close still flushes (other handles' writes), but
// reports nothing: its own reads succeeded.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	err := h.tree.Flush(context.WithoutCancel(ctx), h.ino)
	if !h.writable {
		if err != nil {
			h.log.Warn("flush at close of a read-only handle", "ino", h.ino, "err", err)
		}
		return 0
	}
	return toErrno(h.log, "flush", err)
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return toErrno(h.log, "fsync", h.tree.Fsync(context.WithoutCancel(ctx), h.ino))
}

// Release follows the last close or munmap; writes through a shared mapping
// may arrive after Flush, so flush again.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	ctx = context.WithoutCancel(ctx)
	err := h.tree.Flush(ctx, h.ino)
	if err != nil {
		h.log.Error("flush on release", "ino", h.ino, "err", err)
	}
	if h.stream != nil {
		h.stream.Close()
	}
	if h.hot != nil {
		if h.copy != nil {
			h.copy.Close()
		} else if h.size > 0 && h.readSize.Load() >= h.size {
			h.hot.ReadWhole(h.ino)
		}
		h.hot.Released(h.ino)
	}
	if err := h.tree.Released(ctx, h.ino); err != nil {
		h.log.Error("release", "ino", h.ino, "err", err)
	}
	return 0
}
