package unixfs

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/ipfs/go-cid"
)

// File reads a UnixFS file DAG at any offset. Decoded internal nodes are
// cached with their cumulative child offsets, so a read costs a binary search
// per level and one copy out of the store. Every block is checked against its
// hash the first time this File reads it: corrupted bytes are never returned.
// A File is safe for concurrent use.
type File struct {
	bs   BlockViewer
	root cid.Cid
	size uint64

	mu       sync.RWMutex
	nodes    map[cid.Cid]*fileNode
	verified map[cid.Cid]struct{}
	checking map[cid.Cid]chan struct{} // hash checks in progress
}

// CheckedViewer is a BlockViewer that can vouch for what it hands out:
// checked true means the bytes are those stored under c (the store checked
// its own checksum on this read), so the reader need not hash them.
type CheckedViewer interface {
	ViewChecked(ctx context.Context, c cid.Cid, fn func(b []byte, checked bool) error) error
}

// WillNeeder is a BlockViewer that can start getting a block in the
// background, ahead of a View (a store that fetches from the network).
type WillNeeder interface {
	WillNeed(ctx context.Context, c cid.Cid) error
}

// Bounds on what one File caches.
const (
	maxCachedNodes = 4096
	maxVerified    = 1 << 16
)

// fileNode is a decoded internal node: inline data first, then the children,
// child i covering [ends[i-1], ends[i]) after the inline data.
type fileNode struct {
	data  []byte
	links []cid.Cid
	ends  []uint64
}

func (n *fileNode) size() uint64 {
	s := uint64(len(n.data))
	if len(n.ends) > 0 {
		s += n.ends[len(n.ends)-1]
	}
	return s
}

// OpenFile opens the file DAG rooted at c.
func OpenFile(ctx context.Context, bs BlockViewer, c cid.Cid) (*File, error) {
	f := &File{bs: bs, root: c, nodes: map[cid.Cid]*fileNode{},
		verified: map[cid.Cid]struct{}{}, checking: map[cid.Cid]chan struct{}{}}
	switch c.Prefix().Codec {
	case cid.Raw:
		n, err := f.rawSize(ctx, c)
		if err != nil {
			return nil, err
		}
		f.size = n
	case cid.DagProtobuf:
		n, err := f.node(ctx, c)
		if err != nil {
			return nil, err
		}
		f.size = n.size()
	default:
		return nil, fmt.Errorf("%s: %w %s", c, ErrUnsupported, codecName(c))
	}
	return f, nil
}

// Size is the file's length in bytes.
func (f *File) Size() uint64 { return f.size }

func (f *File) rawSize(ctx context.Context, c cid.Cid) (uint64, error) {
	var n int
	err := f.viewVerified(ctx, c, func(b []byte) error { n = len(b); return nil })
	return uint64(n), err
}

// node returns the decoded internal node c, from cache or store.
func (f *File) node(ctx context.Context, c cid.Cid) (*fileNode, error) {
	f.mu.RLock()
	n, ok := f.nodes[c]
	f.mu.RUnlock()
	if ok {
		return n, nil
	}
	pb, err := loadPB(ctx, f.bs, c)
	if err != nil {
		return nil, err
	}
	if k, err := pb.kind(); err != nil || k != KindFile {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFile)
	}
	if len(pb.blockSizes) != len(pb.links) {
		return nil, fmt.Errorf("%s: %w: %d links but %d block sizes", c, ErrMalformed, len(pb.links), len(pb.blockSizes))
	}
	n = &fileNode{data: append([]byte(nil), pb.data...), links: make([]cid.Cid, len(pb.links)), ends: make([]uint64, len(pb.links))}
	var end uint64
	for i, l := range pb.links {
		n.links[i] = l.CID
		end += pb.blockSizes[i]
		n.ends[i] = end
	}
	f.mu.Lock()
	if len(f.nodes) >= maxCachedNodes {
		clear(f.nodes)
	}
	f.nodes[c] = n
	f.mu.Unlock()
	return n, nil
}

// viewVerified views a block, hashing it the first time. Concurrent first
// views of one block (a reader and the prefetcher) hash it once: the others
// wait for that check.
func (f *File) viewVerified(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	f.mu.RLock()
	_, ok := f.verified[c]
	f.mu.RUnlock()
	if ok {
		return f.bs.View(ctx, c, fn)
	}
	for {
		f.mu.Lock()
		_, ok := f.verified[c]
		wait := f.checking[c]
		if !ok && wait == nil {
			done := make(chan struct{})
			f.checking[c] = done
			f.mu.Unlock()
			return f.check(ctx, c, done, fn)
		}
		f.mu.Unlock()
		if ok {
			return f.bs.View(ctx, c, fn)
		}
		select {
		case <-wait: // verified now, or failed: then check again here
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// check views c, hashing it before fn sees it, and records the result.
func (f *File) check(ctx context.Context, c cid.Cid, done chan struct{}, fn func([]byte) error) error {
	hashed := false
	view := func(b []byte, checked bool) error {
		if !checked {
			if err := CheckHash(c, b); err != nil {
				return err
			}
		}
		hashed = true
		return fn(b)
	}
	var err error
	if cv, ok := f.bs.(CheckedViewer); ok {
		err = cv.ViewChecked(ctx, c, view)
	} else {
		err = f.bs.View(ctx, c, func(b []byte) error { return view(b, false) })
	}
	f.mu.Lock()
	if hashed {
		if len(f.verified) >= maxVerified {
			clear(f.verified)
		}
		f.verified[c] = struct{}{}
	}
	delete(f.checking, c)
	close(done)
	f.mu.Unlock()
	return err
}

// Warm makes [off, off+n) ready to read: it starts getting every leaf in
// the range at once (when the store can), then reads and checks each leaf,
// which brings its pages into memory. A ReadAt of the range afterwards
// costs one copy from memory.
func (f *File) Warm(ctx context.Context, off, n int64) error {
	if off < 0 || n <= 0 || uint64(off) >= f.size {
		return nil
	}
	end := min(uint64(off+n), f.size)
	var leaves []cid.Cid
	err := f.visit(ctx, f.root, uint64(off), end-uint64(off), func(c cid.Cid) error {
		f.mu.RLock()
		_, ok := f.verified[c]
		f.mu.RUnlock()
		if !ok {
			leaves = append(leaves, c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if wn, ok := f.bs.(WillNeeder); ok {
		for _, c := range leaves {
			if err := wn.WillNeed(ctx, c); err != nil {
				return err
			}
		}
	}
	for _, c := range leaves {
		if err := f.viewVerified(ctx, c, func([]byte) error { return nil }); err != nil {
			return err
		}
	}
	return nil
}

// visit calls fn for each raw leaf under node c overlapping [off, off+n)
// (relative to the node), in order.
func (f *File) visit(ctx context.Context, c cid.Cid, off, n uint64, fn func(cid.Cid) error) error {
	if c.Prefix().Codec == cid.Raw {
		return fn(c)
	}
	nd, err := f.node(ctx, c)
	if err != nil {
		return err
	}
	if k := uint64(len(nd.data)); off < k {
		d := min(n, k-off)
		off, n = 0, n-d
	} else {
		off -= k
	}
	i := sort.Search(len(nd.ends), func(i int) bool { return nd.ends[i] > off })
	for ; n > 0 && i < len(nd.links); i++ {
		start := uint64(0)
		if i > 0 {
			start = nd.ends[i-1]
		}
		k := min(n, nd.ends[i]-off)
		if err := f.visit(ctx, nd.links[i], off-start, k, fn); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// ReadAt reads len(p) bytes at off; it returns io.EOF when it reaches the end.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("unixfs: negative offset")
	}
	if uint64(off) >= f.size {
		return 0, io.EOF
	}
	want := p
	if rest := f.size - uint64(off); uint64(len(want)) > rest {
		want = want[:rest]
	}
	if err := f.readNode(ctx, f.root, uint64(off), want); err != nil {
		return 0, err
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(want), nil
}

// readNode fills p with the content of node c starting at off (relative to
// the node), recursing into the children that overlap.
func (f *File) readNode(ctx context.Context, c cid.Cid, off uint64, p []byte) error {
	if c.Prefix().Codec == cid.Raw {
		return f.viewVerified(ctx, c, func(b []byte) error {
			if off+uint64(len(p)) > uint64(len(b)) {
				return fmt.Errorf("%s: %w: leaf shorter than its parent says", c, ErrMalformed)
			}
			copy(p, b[off:])
			return nil
		})
	}
	n, err := f.node(ctx, c)
	if err != nil {
		return err
	}
	if off < uint64(len(n.data)) {
		k := copy(p, n.data[off:])
		p, off = p[k:], 0
	} else {
		off -= uint64(len(n.data))
	}
	i := sort.Search(len(n.ends), func(i int) bool { return n.ends[i] > off })
	for ; len(p) > 0 && i < len(n.links); i++ {
		start := uint64(0)
		if i > 0 {
			start = n.ends[i-1]
		}
		k := min(uint64(len(p)), n.ends[i]-off)
		if err := f.readNode(ctx, n.links[i], off-start, p[:k]); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		return fmt.Errorf("%s: %w: children shorter than the file size", c, ErrMalformed)
	}
	return nil
}

// WriteTo writes the whole file to w. A goroutine per core reads leaves
// ahead of the writer, checks their hashes and copies them into buffers
// (a compressed block is decoded once), which the writer writes in order.
func (f *File) WriteTo(ctx context.Context, w io.Writer, workers int) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type seg struct {
		c    cid.Cid // raw leaf, or undefined for inline data
		data []byte
		size uint64 // what the parent declares
		err  chan error
	}
	segs := make(chan *seg, 8*workers)
	jobs := make(chan *seg, 8*workers)
	var wg sync.WaitGroup
	bufs := make(chan []byte, 8*workers+max(workers, 1)+1)
	for range cap(bufs) {
		bufs <- nil
	}
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				buf := <-bufs
				err := f.viewVerified(ctx, s.c, func(b []byte) error {
					if uint64(len(b)) != s.size {
						return fmt.Errorf("%s: %w: leaf holds %d bytes, its parent says %d", s.c, ErrMalformed, len(b), s.size)
					}
					s.data = append(buf[:0], b...)
					return nil
				})
				if err != nil {
					bufs <- buf
				}
				s.err <- err
			}
		}()
	}
	var walkErr error
	go func() {
		defer close(segs)
		defer close(jobs)
		walkErr = f.walk(ctx, f.root, f.size, func(c cid.Cid, data []byte, size uint64) error {
			s := &seg{c: c, data: data, size: size, err: make(chan error, 1)}
			if c.Defined() {
				select {
				case jobs <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
			} else {
				s.err <- nil
			}
			select {
			case segs <- s:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	var total int64
	var err error
	for s := range segs {
		serr := <-s.err
		if err == nil && serr != nil {
			err = serr
			cancel()
		}
		if err == nil {
			var n int
			n, err = w.Write(s.data)
			total += int64(n)
			if err != nil {
				cancel()
			}
		}
		if s.c.Defined() && serr == nil {
			bufs <- s.data // back to the workers
		}
	}
	wg.Wait()
	if err == nil && walkErr != nil {
		err = walkErr
	}
	if err == nil && uint64(total) != f.size {
		err = fmt.Errorf("%s: %w: wrote %d of %d bytes", f.root, ErrMalformed, total, f.size)
	}
	return total, err
}

// walk calls fn for each piece of content in order: a raw leaf by CID with
// the size its parent declares, or a node's inline data. Sizes are checked
// against what the parents declare before anything is handed on, so a
// malformed DAG cannot make a reader write more than the file's size.
func (f *File) walk(ctx context.Context, c cid.Cid, want uint64, fn func(c cid.Cid, data []byte, size uint64) error) error {
	if c.Prefix().Codec == cid.Raw {
		return fn(c, nil, want)
	}
	n, err := f.node(ctx, c)
	if err != nil {
		return err
	}
	if n.size() != want {
		return fmt.Errorf("%s: %w: node holds %d bytes, its parent says %d", c, ErrMalformed, n.size(), want)
	}
	if len(n.data) > 0 {
		if err := fn(cid.Undef, n.data, uint64(len(n.data))); err != nil {
			return err
		}
	}
	var start uint64
	for i, l := range n.links {
		if err := f.walk(ctx, l, n.ends[i]-start, fn); err != nil {
			return err
		}
		start = n.ends[i]
	}
	return nil
}

// Leaves lists the file's raw leaves in order. It fails for DAGs that keep
// data inside dag-pb nodes (old CIDv0 imports); callers then fall back to
// reading the content.
func (f *File) Leaves(ctx context.Context) ([]Node, error) {
	var out []Node
	err := f.walk(ctx, f.root, f.size, func(c cid.Cid, data []byte, size uint64) error {
		if !c.Defined() {
			return fmt.Errorf("%s: %w: data inside a dag-pb node", f.root, ErrUnsupported)
		}
		out = append(out, Node{CID: c, Size: size, Tsize: size})
		return nil
	})
	return out, err
}
