package worktree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// fileData is a regular file's content: the last flushed DAG (base) and the
// bytes written since, kept at their offsets in a sparse staging file.
// Byte i of the file, for i < size, is the staged byte if i is in a dirty
// span, else byte i of base if i < baseLen, else zero.
type fileData struct {
	mu sync.RWMutex // content; held for a whole flush
	// attrMu guards size, the times and gen for readers that must not wait
	// behind a flush (stat, the namespace under Tree.mu); writers of those
	// fields hold both locks.
	attrMu sync.Mutex

	base    *unixfs.File // nil for empty content or before first read
	baseCID cid.Cid      // cid.Undef for empty content
	baseTs  uint64       // Tsize of base
	baseSz  uint64       // content size of base
	baseLen uint64       // bytes of base still in the file
	size    uint64
	dirty   []span // sorted, disjoint, non-adjacent
	stage   stage
	stream  *stream // a sequential write in progress, imported as it comes

	atime, mtime, ctime int64
	gen                 uint64 // bumped by every change of content
	openGen             uint64 // gen at the last open
}

type span struct{ off, end uint64 }

func newFileData(r record) *fileData {
	f := &fileData{size: r.Size, baseLen: r.Size, baseSz: r.Size, baseTs: r.Tsize, atime: r.Atime, mtime: r.Mtime, ctime: r.Ctime, gen: 1}
	if r.Content != "" {
		f.baseCID, _ = cid.Decode(r.Content)
	}
	return f
}

func (f *fileData) currentSize() uint64 {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.size
}

func (f *fileData) times() (m, c, a int64) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.mtime, f.ctime, f.atime
}

func (f *fileData) touchCtime(now int64) {
	f.attrMu.Lock()
	f.ctime = now
	f.attrMu.Unlock()
}

// changed records a change of content to size at time now. Called with mu
// held.
func (f *fileData) changed(size uint64, now int64) {
	f.attrMu.Lock()
	f.size = size
	f.mtime, f.ctime = now, now
	f.gen++
	f.attrMu.Unlock()
}

func (f *fileData) setTimes(atime, mtime *time.Time, now int64) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	f.ctime = now
	if atime != nil {
		f.atime = atime.UnixNano()
	}
	if mtime != nil {
		f.mtime = mtime.UnixNano()
	}
}

// KeepCache reports whether the kernel may keep its cached pages of the file
// for a new open: true when the content has not changed since the last open.
func (f *fileData) keepCache() bool {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	keep := f.gen == f.openGen
	f.openGen = f.gen
	return keep
}

func (f *fileData) closeStage() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stream != nil {
		f.stream.finish()
		f.stream = nil
	}
	f.dropStage()
}

// dropStage closes and removes the staging file. Called with mu held.
func (f *fileData) dropStage() {
	if f.stage != nil {
		f.stage.Close()
		f.stage = nil
	}
}

// openBase opens the base DAG for reading, once. Called with mu held.
func (f *fileData) openBase(ctx context.Context, bs unixfs.BlockViewer) (*unixfs.File, error) {
	if f.base != nil || !f.baseCID.Defined() {
		return f.base, nil
	}
	b, err := unixfs.OpenFile(ctx, bs, f.baseCID)
	if err != nil {
		return nil, err
	}
	f.base = b
	return b, nil
}

// ReadAt reads the file at off into p.
func (t *Tree) ReadAt(ctx context.Context, ino uint64, p []byte, off int64) (int, error) {
	f, err := t.fileOf(ino)
	if err != nil {
		return 0, err
	}
	// Ending a stream or opening the base needs the write lock; reads then
	// share the read lock. Either can become necessary again between the
	// two (a write starts a stream, a flush replaces the base): check again.
	for {
		f.mu.RLock()
		if f.stream == nil && (f.base != nil || !f.baseCID.Defined()) {
			defer f.mu.RUnlock()
			return f.readLocked(ctx, p, uint64(off))
		}
		f.mu.RUnlock()
		f.mu.Lock()
		err := t.endStream(ino, f)
		if err == nil {
			_, err = f.openBase(ctx, t.s)
		}
		f.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
}

func (f *fileData) readLocked(ctx context.Context, p []byte, off uint64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	n := min(uint64(len(p)), f.size-off)
	p = p[:n]
	// Walk the dirty spans overlapping [off, off+n).
	i := sort.Search(len(f.dirty), func(i int) bool { return f.dirty[i].end > off })
	pos := off
	for pos < off+n {
		next := off + n
		if i < len(f.dirty) && f.dirty[i].off <= pos {
			end := min(f.dirty[i].end, off+n)
			if _, err := f.stage.ReadAt(p[pos-off:end-off], int64(pos)); err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("staging read: %w", err)
			}
			pos = end
			i++
			continue
		}
		if i < len(f.dirty) && f.dirty[i].off < next {
			next = f.dirty[i].off
		}
		// [pos, next) is clean: base bytes, then zeros.
		if pos < f.baseLen {
			if f.base == nil {
				return 0, fmt.Errorf("worktree: base of the file not open")
			}
			e := min(next, f.baseLen)
			k, err := f.base.ReadAt(ctx, p[pos-off:e-off], int64(pos))
			if err != nil && !(errors.Is(err, io.EOF) && uint64(k) == e-pos) {
				return 0, err
			}
			pos = e
		}
		if pos < next {
			clear(p[pos-off : next-off])
			pos = next
		}
	}
	return int(n), nil
}

// WriteAt writes p at off, growing the file as needed (a gap reads as zeros).
func (t *Tree) WriteAt(ctx context.Context, ino uint64, p []byte, off int64) (int, error) {
	f, err := t.fileOf(ino)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Marked under the lock, after the caller's write: a FlushAll that
	// cleared the set flushes after us.
	defer t.written(ino)
	if f.stream != nil && uint64(off) == f.stream.end {
		return f.streamWrite(p)
	}
	if err := t.endStream(ino, f); err != nil {
		return 0, err
	}
	// A file written from its start while it holds nothing but a hole (new,
	// truncated, or extended with ftruncate first as newer safetensors
	// writers do) is imported as it is written.
	if off == 0 && f.baseLen == 0 && len(f.dirty) == 0 && len(p) >= streamMin {
		f.stream = t.startStream(ctx)
		return f.streamWrite(p)
	}
	st, err := t.stageFor(ino, f.stage, uint64(off)+uint64(len(p)))
	if err != nil {
		return 0, err
	}
	f.stage = st
	n, err := f.stage.WriteAt(p, off)
	if n > 0 {
		f.markDirty(uint64(off), uint64(off)+uint64(n))
		f.changed(max(f.size, uint64(off)+uint64(n)), time.Now().UnixNano())
	}
	if err != nil {
		return n, fmt.Errorf("staging: %w", err)
	}
	return n, nil
}

// streamMin is the smallest first write that starts a streaming import;
// smaller files go through the staging file.
const streamMin = 64 << 10

func (f *fileData) streamWrite(p []byte) (int, error) {
	if err := f.stream.write(p); err != nil {
		return 0, err
	}
	f.changed(max(f.size, f.stream.end), time.Now().UnixNano())
	return len(p), nil
}

// markDirty adds [off, end) to the dirty spans, merging neighbours.
func (f *fileData) markDirty(off, end uint64) {
	i := sort.Search(len(f.dirty), func(i int) bool { return f.dirty[i].end >= off })
	j := i
	for j < len(f.dirty) && f.dirty[j].off <= end {
		off = min(off, f.dirty[j].off)
		end = max(end, f.dirty[j].end)
		j++
	}
	f.dirty = append(f.dirty[:i], append([]span{{off, end}}, f.dirty[j:]...)...)
}

// truncate sets the size; bytes beyond a shrink are forgotten, a grow reads
// as zeros.
func (f *fileData) truncate(t *Tree, ino, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer t.written(ino)
	if err := t.endStream(ino, f); err != nil {
		return err
	}
	if size < f.size {
		i := sort.Search(len(f.dirty), func(i int) bool { return f.dirty[i].end > size })
		if i < len(f.dirty) && f.dirty[i].off < size {
			f.dirty[i].end = size
			i++
		}
		f.dirty = f.dirty[:i]
		f.baseLen = min(f.baseLen, size)
		if f.stage != nil {
			if err := f.stage.Truncate(int64(size)); err != nil {
				return fmt.Errorf("staging: %w", err)
			}
		}
	}
	f.changed(size, time.Now().UnixNano())
	return nil
}

// Extend grows the file to end (fallocate); it never shrinks it, even when
// a write lands meanwhile.
func (t *Tree) Extend(ctx context.Context, ino, end uint64) error {
	f, err := t.fileOf(ino)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if end <= f.size {
		return nil
	}
	if err := t.endStream(ino, f); err != nil {
		return err
	}
	defer t.written(ino)
	f.changed(end, time.Now().UnixNano())
	return nil
}

func (t *Tree) fileOf(ino uint64) (*fileData, error) {
	if f, ok := t.files.Load(ino); ok {
		return f.(*fileData), nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	if in.f == nil {
		if in.rec.isDir() {
			return nil, ErrIsDir
		}
		return nil, ErrInvalid
	}
	return in.f, nil
}

// KeepCache reports whether an open of ino may keep the kernel's cached pages.
func (t *Tree) KeepCache(ino uint64) bool {
	f, err := t.fileOf(ino)
	return err == nil && f.keepCache()
}

// Flush turns the file's written bytes into a DAG in the store and queues
// the new content for publication.
func (t *Tree) Flush(ctx context.Context, ino uint64) error {
	f, err := t.fileOf(ino)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := t.endStream(ino, f); err != nil {
		return err
	}
	if len(f.dirty) == 0 && f.size == f.baseLen && f.baseLen == f.baseSz {
		return nil
	}
	if _, err := f.openBase(ctx, t.s); err != nil {
		return err
	}
	batch := t.s.NewBatch()
	n, err := t.importContent(ctx, f, t.importer(batch))
	if err != nil {
		batch.Cancel()
		return err
	}
	if err := batch.Close(); err != nil {
		return err
	}
	t.recordBases(ctx, n.CID)
	f.base, f.baseCID, f.baseTs, f.baseSz, f.baseLen = nil, n.CID, n.Tsize, n.Size, f.size
	f.dirty = f.dirty[:0]
	f.dropStage()
	if n.Size != f.size {
		return fmt.Errorf("worktree: flushed %d bytes of %d", n.Size, f.size)
	}
	t.pub.queue(ino, published{cid: n.CID, size: n.Size, tsize: n.Tsize})
	t.contentChanged(ino)
	return nil
}

// importContent builds the DAG of the file's current content. When the base
// lists its leaves, the leaves before the first change are kept as they are
// and chunking resumes at the leaf boundary before it; once a new cut lands
// on an old boundary after the last change (and the length is unchanged),
// the old leaves finish the file. A write into a large file thus re-reads
// and re-hashes about the edited region, not the whole file. Called with
// f.mu held.
func (t *Tree) importContent(ctx context.Context, f *fileData, im *unixfs.Importer) (unixfs.Node, error) {
	if t.layout.Chunker.OneChunk(f.size) {
		buf := make([]byte, f.size)
		if _, err := f.readLocked(ctx, buf, 0); err != nil && !errors.Is(err, io.EOF) {
			return unixfs.Node{}, err
		}
		return im.ImportChunk(ctx, buf)
	}
	if f.base == nil || f.baseLen == 0 {
		return im.ImportReader(ctx, &fileReader{ctx: ctx, f: f})
	}
	leaves, err := f.base.Leaves(ctx)
	if err != nil {
		return im.ImportReader(ctx, &fileReader{ctx: ctx, f: f})
	}
	first, last := f.baseLen, f.baseLen // unchanged before first, after last
	if len(f.dirty) > 0 {
		first, last = min(first, f.dirty[0].off), f.dirty[len(f.dirty)-1].end
	}
	var prefix []unixfs.Node
	var off uint64
	for _, l := range leaves {
		if off+l.Size > first {
			break
		}
		prefix = append(prefix, l)
		off += l.Size
	}
	var resync func(uint64) []unixfs.Node
	if f.size == f.baseLen && f.baseLen == f.baseSz {
		starts := make(map[uint64]int, len(leaves))
		var o uint64
		for i, l := range leaves {
			starts[o] = i
			o += l.Size
		}
		resync = func(end uint64) []unixfs.Node {
			if i, ok := starts[end]; ok && end >= last {
				return leaves[i:]
			}
			return nil
		}
	}
	var segs []unixfs.Segment
	if im.Cuts != nil {
		segs = im.Cuts(func(n int) ([]byte, error) {
			if uint64(n) > f.size {
				return nil, io.ErrUnexpectedEOF
			}
			b := make([]byte, n)
			_, err := f.readLocked(ctx, b, 0)
			return b, err
		})
	}
	return im.Resume(ctx, prefix, &fileReader{ctx: ctx, f: f, off: off}, segs, resync)
}

// fileReader reads a file's current content sequentially, for Flush (which
// holds the lock).
type fileReader struct {
	ctx context.Context
	f   *fileData
	off uint64
}

func (r *fileReader) Read(p []byte) (int, error) {
	n, err := r.f.readLocked(r.ctx, p, r.off)
	r.off += uint64(n)
	return n, err
}

// Gen returns a number that changes whenever ino's content changes (views
// derived from a file, like .tensors, use it to notice they are stale).
func (t *Tree) Gen(ino uint64) (uint64, error) {
	f, err := t.fileOf(ino)
	if err != nil {
		return 0, err
	}
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.gen, nil
}

// Warm makes [off, off+n) of the file's flushed content cheap to read soon
// (see unixfs.File.Warm); bytes written since the last flush need nothing.
// It holds no lock while it works.
func (t *Tree) Warm(ctx context.Context, ino uint64, off, n int64) error {
	f, err := t.fileOf(ino)
	if err != nil {
		return err
	}
	f.mu.RLock()
	base, baseLen := f.base, int64(f.baseLen)
	f.mu.RUnlock()
	if base == nil || off >= baseLen {
		return nil
	}
	return base.Warm(ctx, off, min(n, baseLen-off))
}

// Content reports the file's flushed content and whether the file is
// exactly that content: nothing written since, no import in progress.
// Empty files have no content CID.
func (t *Tree) Content(ino uint64) (c cid.Cid, size uint64, clean bool, err error) {
	f, err := t.fileOf(ino)
	if err != nil {
		return cid.Undef, 0, false, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	clean = f.stream == nil && len(f.dirty) == 0 && f.baseLen == f.baseSz && f.currentSize() == f.baseSz
	return f.baseCID, f.baseSz, clean && f.baseCID.Defined(), nil
}
