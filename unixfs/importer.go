package unixfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/chunker"
	mh "github.com/multiformats/go-multihash"
)

// Importer turns content into UnixFS file DAGs in a block store. Chunking,
// hashing and storing run as a pipeline: the splitter on one goroutine,
// the per-chunk work (sha2-256, the store's encoding) on a worker per core,
// and the puts (and the tree) in file order on the caller's goroutine, so
// the DAG and the order of puts are those of a sequential import.
type Importer struct {
	Put    BlockPutter
	Layout Layout
	// Workers hash chunks in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, if set, is called with the byte count of each chunk read.
	Progress func(n int)
	// Cuts, if set, looks at the start of the content (peek returns its
	// first n bytes, or an error when there are fewer) and returns the
	// segments chunks must not cross, or nil for content it does not
	// recognise. Chunking then runs inside each segment.
	Cuts CutFinder
	// Encoder, if set (and the putter takes encoded blocks), compresses
	// the leaves of typed segments in the hashing workers.
	Encoder Encoder
	// Stats, if set, receives the time each stage spent, to find the one
	// that bounds an import.
	Stats *ImportStats
}

// ImportStats adds up where an import's time went, per stage. The stages
// overlap: their sum exceeds the wall time when the pipeline is busy.
// Safe for concurrent use (several imports may share one).
type ImportStats struct {
	Chunks, Bytes atomic.Int64
	stages        [numStages]atomic.Int64 // nanoseconds
}

// Stage is a part of the import pipeline.
type Stage int

// The stages of an import.
const (
	StageSplit   Stage = iota // the splitter, reading included
	StagePrepare              // the workers' hash and encode, summed over workers
	StagePut                  // the putter and the tree, in file order
	StageWait                 // the in-order stage waiting for a chunk to be prepared
	StageStall                // the splitter waiting for a free buffer (later stages behind)
	numStages
)

var stageNames = [numStages]string{"split", "prepare", "put", "put waited", "split stalled"}

// Stage returns the time spent in k.
func (s *ImportStats) Stage(k Stage) time.Duration { return time.Duration(s.stages[k].Load()) }

// String shows the stages in seconds.
func (s *ImportStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d chunks, %d bytes:", s.Chunks.Load(), s.Bytes.Load())
	for k := range numStages {
		fmt.Fprintf(&b, " %s %.3fs", stageNames[k], s.Stage(k).Seconds())
	}
	return b.String()
}

func (s *ImportStats) add(k Stage, since time.Time) {
	if s != nil {
		s.stages[k].Add(int64(time.Since(since)))
	}
}

// Segment is a run of the content that ends at End; its bytes are
// elements of Elem bytes (float tensors: 2 or 4), or Elem is 0.
type Segment struct {
	End  uint64
	Elem int
	// Fixed, when above 0, cuts the segment into chunks of this size from
	// its start (a tensor: chunk k then meets chunk k of the same tensor
	// elsewhere), instead of by the layout's chunker.
	Fixed int
	// Bases, for a Fixed segment, are the leaves of the same tensor in an
	// earlier file: chunk k is stored as a delta against Bases[k] where
	// the encoder can (see DeltaEncoder).
	Bases []cid.Cid
}

// CutFinder finds the segments of a content from its head.
type CutFinder func(peek func(n int) ([]byte, error)) []Segment

// Encoder compresses blocks for storage (implemented by the store).
type Encoder interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Encode(data []byte, elem, phase int) (payload []byte, tag byte, ok bool)
}

// DeltaEncoder is an Encoder that can also code a block against a base
// block (the same chunk of the same tensor in an earlier file). Like
// Encode, it is a pure function of its arguments and the stored blocks,
// safe to call from many workers.
type DeltaEncoder interface {
	EncodeWithBase(data []byte, base cid.Cid, elem, phase int) (payload []byte, tag byte, ok bool)
}

// EncodedPutter stores blocks an Encoder compressed.
type EncodedPutter interface {
	PutEncoded(ctx context.Context, c cid.Cid, payload []byte, tag byte, rawSize int) error
}

// ImportReader imports a stream. Chunks are copied out of the splitter into
// a fixed set of buffers, which bounds the memory of the pipeline; the putter
// must not retain the data it is handed.
func (im *Importer) ImportReader(ctx context.Context, r io.Reader) (Node, error) {
	var segs []Segment
	if im.Cuts != nil {
		pr := &peekReader{r: r}
		segs, r = im.Cuts(pr.peek), pr
	}
	sp, err := im.splitter(r, segs, 0)
	if err != nil {
		return Node{}, err
	}
	return im.run(ctx, sp, nil, 0, segs, nil)
}

// splitter cuts at the segment ends after off (r starts at off).
func (im *Importer) splitter(r io.Reader, segs []Segment, off uint64) (chunker.Splitter, error) {
	var (
		cuts  []uint64
		fixed []int
	)
	for _, s := range segs {
		if s.End > off {
			cuts = append(cuts, s.End-off)
			fixed = append(fixed, s.Fixed)
		}
	}
	if len(cuts) > 0 {
		return im.Layout.Chunker.NewWithFixed(r, cuts, fixed)
	}
	return im.Layout.Chunker.New(r)
}

// layoutAt returns the element size and phase of content at off.
func layoutAt(segs []Segment, off uint64) (elem, phase int) {
	elem, phase, _ = hintAt(segs, off)
	return elem, phase
}

// hintAt returns the element size and phase of content at off, and the
// base of the chunk starting there, if its segment has one.
func hintAt(segs []Segment, off uint64) (elem, phase int, base cid.Cid) {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].End > off })
	if i == len(segs) {
		return 0, 0, cid.Undef
	}
	s := segs[i]
	var start uint64
	if i > 0 {
		start = segs[i-1].End
	}
	if s.Fixed > 0 && (off-start)%uint64(s.Fixed) == 0 {
		if k := (off - start) / uint64(s.Fixed); k < uint64(len(s.Bases)) {
			base = s.Bases[k]
		}
	}
	if s.Elem <= 0 {
		return 0, 0, base
	}
	return s.Elem, int((off - start) % uint64(s.Elem)), base
}

// peekReader lets a CutFinder look at the head of a stream and then
// replays it.
type peekReader struct {
	r    io.Reader
	head []byte
	err  error
}

func (p *peekReader) peek(n int) ([]byte, error) {
	if len(p.head) < n && p.err == nil {
		grown := make([]byte, n)
		copy(grown, p.head)
		k, err := io.ReadFull(p.r, grown[len(p.head):])
		p.head = grown[:len(p.head)+k]
		p.err = err
	}
	if len(p.head) < n {
		return nil, fmt.Errorf("content shorter than %d bytes", n)
	}
	return p.head[:n], nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	if p.err != nil {
		if errors.Is(p.err, io.ErrUnexpectedEOF) {
			return 0, io.EOF
		}
		return 0, p.err
	}
	return p.r.Read(b)
}

// ImportChunk stores content that fits one leaf (see chunker.Spec.OneChunk)
// without the pipeline: small files are common and the splitter's buffer
// alone would cost more than hashing them.
func (im *Importer) ImportChunk(ctx context.Context, data []byte) (Node, error) {
	if !im.Layout.Chunker.OneChunk(uint64(len(data))) {
		return Node{}, fmt.Errorf("unixfs: %d bytes do not fit one chunk of %s", len(data), im.Layout.Chunker)
	}
	c := sha256CID(cid.Raw, data)
	if err := im.Put.Put(ctx, c, data); err != nil {
		return Node{}, err
	}
	n := uint64(len(data))
	return Node{CID: c, Size: n, Tsize: n}, nil
}

// Resume builds a file whose first bytes are the leaves prefix (already
// stored) and whose remainder is read from r. After each new chunk, resync
// is asked whether the rest of the file is known already: given the byte
// offset where the chunk ends, it returns the stored leaves that make up
// everything from there, or nil. With content-defined chunking a cut at an
// old chunk boundary after the last change reproduces the old cuts, so an
// edit in a large file re-chunks and re-hashes only the region around it.
//
// segs are the segments of the whole content (as a CutFinder gives).
func (im *Importer) Resume(ctx context.Context, prefix []Node, r io.Reader, segs []Segment, resync func(end uint64) []Node) (Node, error) {
	var off uint64
	for _, l := range prefix {
		off += l.Size
	}
	sp, err := im.splitter(r, segs, off)
	if err != nil {
		return Node{}, err
	}
	return im.run(ctx, sp, prefix, off, segs, resync)
}

// leafJob is one chunk on its way through the pipeline.
type leafJob struct {
	data        []byte
	elem, phase int     // the chunk's layout: the encoder's hint
	base        cid.Cid // delta base, if any: the encoder's other hint
	cid         cid.Cid
	payload     []byte // compressed, when the encoder kept it
	tag         byte
	done        chan struct{}
}

// prepareLeaf is the per-chunk work the workers run in parallel: the
// leaf's CID and, when enc is set, its stored form. It touches nothing
// but j (and enc, which must be safe for concurrent use).
func prepareLeaf(ctx context.Context, enc Encoder, j *leafJob) {
	sum := sha256.Sum256(j.data)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	j.cid = cid.NewCidV1(cid.Raw, h)
	denc, _ := enc.(DeltaEncoder)
	delta := denc != nil && j.base.Defined()
	if enc == nil || (j.elem <= 0 && !delta) {
		return
	}
	// Compress only blocks not stored yet.
	if has, err := enc.Has(ctx, j.cid); err == nil && !has {
		var (
			p   []byte
			tag byte
			ok  bool
		)
		if delta {
			p, tag, ok = denc.EncodeWithBase(j.data, j.base, j.elem, j.phase)
		} else {
			p, tag, ok = enc.Encode(j.data, j.elem, j.phase)
		}
		if ok {
			j.payload, j.tag = p, tag
		}
	}
}

func (im *Importer) run(ctx context.Context, sp chunker.Splitter, prefix []Node, off uint64, segs []Segment, resync func(uint64) []Node) (Node, error) {
	if im.Layout.MaxLinks < 2 {
		return Node{}, fmt.Errorf("unixfs: layout needs at least 2 links per node")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	enc := im.Encoder
	encPut, canEncode := im.Put.(EncodedPutter)
	if !canEncode {
		enc = nil
	}
	st := im.Stats
	workers := im.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	depth := 4 * workers
	hashq := make(chan *leafJob, depth)
	orderq := make(chan *leafJob, depth)
	bufs := make(chan []byte, depth+2)
	for range cap(bufs) {
		bufs <- nil
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range hashq {
				t0 := time.Now()
				prepareLeaf(ctx, enc, j)
				st.add(StagePrepare, t0)
				close(j.done)
			}
		}()
	}
	var readErr error
	chunkOff := off
	go func() {
		defer close(orderq)
		defer close(hashq)
		for {
			t0 := time.Now()
			ch, err := sp.Next()
			st.add(StageSplit, t0)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr = err
				}
				return
			}
			if im.Progress != nil {
				im.Progress(len(ch))
			}
			var buf []byte
			t0 = time.Now()
			select {
			case buf = <-bufs:
			case <-ctx.Done():
				return
			}
			st.add(StageStall, t0)
			j := &leafJob{data: append(buf[:0], ch...), done: make(chan struct{})}
			j.elem, j.phase, j.base = hintAt(segs, chunkOff)
			chunkOff += uint64(len(ch))
			select {
			case hashq <- j:
			case <-ctx.Done():
				return
			}
			select {
			case orderq <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	fb := newFileBuilder(parent, im.Put, im.Layout.MaxLinks) // outlives the reading
	var putErr error
	for _, l := range prefix {
		if putErr == nil {
			putErr = fb.addLeaf(l)
		}
	}
	synced := false
	for j := range orderq {
		t0 := time.Now()
		<-j.done
		st.add(StageWait, t0)
		if putErr != nil || synced {
			continue
		}
		t0 = time.Now()
		n := uint64(len(j.data))
		if st != nil {
			st.Chunks.Add(1)
			st.Bytes.Add(int64(n))
		}
		var err error
		if j.payload != nil {
			err = encPut.PutEncoded(ctx, j.cid, j.payload, j.tag, len(j.data))
		} else {
			err = im.Put.Put(ctx, j.cid, j.data)
		}
		bufs <- j.data
		if err != nil {
			putErr = err
			cancel()
			continue
		}
		if err := fb.addLeaf(Node{CID: j.cid, Size: n, Tsize: n}); err != nil {
			putErr = err
			cancel()
			continue
		}
		st.add(StagePut, t0)
		off += n
		if resync == nil {
			continue
		}
		if rest := resync(off); rest != nil {
			for _, l := range rest {
				if putErr == nil {
					putErr = fb.addLeaf(l)
				}
			}
			synced = true
			cancel() // the rest of the input is not needed
		}
	}
	wg.Wait()
	switch {
	case putErr != nil:
		return Node{}, putErr
	case synced:
		return fb.finish()
	case readErr != nil:
		return Node{}, fmt.Errorf("read: %w", readErr)
	case ctx.Err() != nil:
		return Node{}, ctx.Err()
	}
	return fb.finish()
}
