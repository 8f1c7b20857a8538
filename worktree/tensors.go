package worktree

import (
	"context"
	"errors"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// importer returns the importer of file contents: the tree's layout,
// tensor-aware cut points for safetensors files (recognised by their bytes,
// not their names: writers often use temporary names), and byte-grouped
// compression of their float tensors when the tree was opened with it.
func (t *Tree) importer(put unixfs.BlockPutter) *unixfs.Importer {
	im := &unixfs.Importer{Put: put, Layout: t.layout, Cuts: safetensors.FindSegments, Encoder: t.encoder}
	if t.bases != nil {
		im.Cuts = t.bases.Cuts // tensors stored as deltas against their last version
	}
	return im
}

// recordBases makes the tensors of the file just stored as root the bases
// of the next file with the same tensors. A failure only costs later
// deltas, so it is logged, not returned.
func (t *Tree) recordBases(ctx context.Context, root cid.Cid) {
	if t.bases == nil {
		return
	}
	if err := t.bases.Record(ctx, root); err != nil {
		t.log.Warn("recording tensor delta bases", "cid", root, "err", err)
	}
}

// ErrNotModel: the file does not start like a safetensors file.
var ErrNotModel = errors.New("not a safetensors file")

// Tensors returns the tensor table of the safetensors file ino (which
// tensor lives at which byte range) and the content generation it belongs
// to, for views and for a read path that fetches whole tensors once the
// header has been read. Tables are cached per generation; at most two
// headers (up to 100 MB each) are read at a time. A file that does not
// start like a safetensors file gives ErrNotModel; a malformed one, an
// error wrapping safetensors.ErrNotSafetensors.
//
// The header is read and parsed by a goroutine of the tree (joined by
// Close), which callers wait for: one whose ctx ends returns at once (a
// listing interrupted by a signal must not wait for a 100 MB parse), and
// the read goes on for the next caller. Only tables that parsed are kept.
func (t *Tree) Tensors(ctx context.Context, ino uint64) (*safetensors.Header, uint64, error) {
	gen, err := t.Gen(ino)
	if err != nil {
		return nil, 0, err
	}
	key := [2]uint64{ino, gen}
	if h := t.tables.get(key); h != nil {
		return h, gen, nil
	}
	t.tables.mu.Lock()
	ld := t.tables.loads[key]
	if ld == nil {
		if t.tables.loads == nil {
			t.tables.loads = map[[2]uint64]*tableLoad{}
		}
		ld = &tableLoad{done: make(chan struct{})}
		t.tables.loads[key] = ld
		t.bg.Add(1)
		go func() {
			defer t.bg.Done()
			ld.h, ld.err = t.readTable(t.bgCtx, ino)
			if ld.err == nil {
				t.tables.put(key, ld.h)
			}
			t.tables.mu.Lock()
			delete(t.tables.loads, key)
			t.tables.mu.Unlock()
			close(ld.done)
		}()
	}
	t.tables.mu.Unlock()
	select {
	case <-ld.done:
		return ld.h, gen, ld.err
	case <-ctx.Done():
		return nil, gen, ctx.Err()
	}
}

// tableLoad is a header read in progress.
type tableLoad struct {
	done chan struct{}
	h    *safetensors.Header
	err  error
}

func (t *Tree) readTable(ctx context.Context, ino uint64) (*safetensors.Header, error) {
	select {
	case t.tableSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-t.tableSlots }()
	a, err := t.Getattr(ino)
	if err != nil {
		return nil, err
	}
	r := fileReaderAt{ctx: ctx, t: t, ino: ino}
	var prefix [9]byte
	if n, _ := r.ReadAt(prefix[:], 0); n < 9 || prefix[8] != '{' {
		return nil, ErrNotModel
	}
	return safetensors.Read(r, int64(a.Size))
}

type fileReaderAt struct {
	ctx context.Context
	t   *Tree
	ino uint64
}

func (r fileReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.t.ReadAt(r.ctx, r.ino, p, off)
}

// tableCache keeps the last parsed tensor tables by (inode, generation).
type tableCache struct {
	mu    sync.Mutex
	loads map[[2]uint64]*tableLoad // header reads in progress
	order [][2]uint64
	m     map[[2]uint64]*safetensors.Header
}

const tableCacheSize = 16

func (c *tableCache) get(k [2]uint64) *safetensors.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *tableCache) put(k [2]uint64, h *safetensors.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[2]uint64]*safetensors.Header{}
	}
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) == tableCacheSize {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.m[k] = h
}
