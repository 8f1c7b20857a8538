package unixfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/chunker"
)

// putLog records every put in the order it came, with what was stored.
type putLog struct {
	mu   sync.Mutex
	cids []cid.Cid
	data [][]byte
	tags []byte
}

var (
	_ BlockPutter   = (*putLog)(nil)
	_ EncodedPutter = (*putLog)(nil)
	_ Encoder       = slowEncoder{}
)

func (p *putLog) Put(_ context.Context, c cid.Cid, data []byte) error {
	return p.PutEncoded(context.Background(), c, data, 0, len(data))
}

func (p *putLog) PutEncoded(_ context.Context, c cid.Cid, payload []byte, tag byte, _ int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cids = append(p.cids, c)
	p.data = append(p.data, append([]byte(nil), payload...))
	p.tags = append(p.tags, tag)
	return nil
}

// slowEncoder takes a random time per chunk, so that the workers finish
// out of order, and stores the chunk reversed (with its element size as
// the tag) so that a payload put under the wrong CID shows.
type slowEncoder struct{ seed uint64 }

func (slowEncoder) Has(context.Context, cid.Cid) (bool, error) { return false, nil }

func (e slowEncoder) Encode(data []byte, elem, phase int) ([]byte, byte, bool) {
	r := rand.New(rand.NewPCG(e.seed, uint64(len(data))^uint64(data[0])))
	time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
	out := slices.Clone(data)
	slices.Reverse(out)
	return out, byte(elem<<4 | phase), true
}

// sequentialImport is the reference: one chunk at a time, hashed, put and
// linked in order, with nothing in parallel.
func sequentialImport(t *testing.T, put BlockPutter, enc Encoder, l Layout, data []byte, segs []Segment) Node {
	t.Helper()
	ctx := context.Background()
	im := &Importer{Layout: l}
	sp, err := im.splitter(bytes.NewReader(data), segs, 0)
	if err != nil {
		t.Fatal(err)
	}
	fb := newFileBuilder(ctx, put, l.MaxLinks)
	var off uint64
	for {
		ch, err := sp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		j := &leafJob{data: ch}
		j.elem, j.phase = layoutAt(segs, off)
		prepareLeaf(ctx, enc, j)
		if j.payload != nil {
			err = put.(EncodedPutter).PutEncoded(ctx, j.cid, j.payload, j.tag, len(ch))
		} else {
			err = put.Put(ctx, j.cid, ch)
		}
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(len(ch))
		if err := fb.addLeaf(Node{CID: j.cid, Size: n, Tsize: n}); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	n, err := fb.finish()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The parallel pipeline gives the DAG of a sequential import, and stores
// the same blocks in the same order (leaves in file order, each internal
// node after its children), for any number of workers, with workers that
// finish out of order.
func TestPipelineMatchesSequentialImport(t *testing.T) {
	small := Layout{Name: "small", Chunker: chunker.FixedSpec(4096), MaxLinks: 3}
	cdc, err := chunker.ParseSpec("fastcdc-16384-65536-262144")
	if err != nil {
		t.Fatal(err)
	}
	cdcLayout := Layout{Name: "cdc", Chunker: cdc, MaxLinks: 7}
	tests := []struct {
		name   string
		layout Layout
		data   []byte
		segs   []Segment
		enc    bool
	}{
		{"empty", small, nil, nil, false},
		{"one byte", small, []byte{7}, nil, false},
		{"exactly one chunk", small, randomBytes(1, 4096), nil, false},
		{"a full tree of 3 links", small, randomBytes(2, 9*4096), nil, false},
		{"one leaf more than a full tree", small, randomBytes(3, 9*4096+1), nil, false},
		{"deep tree, fixed chunks", small, randomBytes(4, 1000*4096+123), nil, false},
		{"FastCDC", cdcLayout, randomBytes(5, 12<<20), nil, false},
		{"FastCDC, repeated content", cdcLayout, bytes.Repeat(randomBytes(6, 300<<10), 20), nil, false},
		{"segments, encoded out of order", cdcLayout, randomBytes(7, 6<<20),
			[]Segment{{End: 100}, {End: 1 << 20, Elem: 2}, {End: 1<<20 + 3, Elem: 4}, {End: 5 << 20, Elem: 4}, {End: 6 << 20}}, true},
		{"default layout", DefaultLayout(), randomBytes(8, 20<<20), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var enc Encoder
			if tc.enc {
				enc = slowEncoder{seed: 9}
			}
			ref := &putLog{}
			want := sequentialImport(t, ref, enc, tc.layout, tc.data, tc.segs)
			for _, workers := range []int{1, 2, 8, 33} {
				got := &putLog{}
				st := &ImportStats{}
				im := &Importer{Put: got, Layout: tc.layout, Workers: workers, Encoder: enc, Stats: st}
				if tc.segs != nil {
					segs := tc.segs
					im.Cuts = func(func(int) ([]byte, error)) []Segment { return segs }
				}
				n, err := im.ImportReader(context.Background(), bytes.NewReader(tc.data))
				if err != nil {
					t.Fatalf("%d workers: %v", workers, err)
				}
				if n != want {
					t.Fatalf("%d workers: root %+v, sequential import %+v", workers, n, want)
				}
				if !slices.EqualFunc(got.cids, ref.cids, cid.Cid.Equals) {
					t.Fatalf("%d workers: %d puts differ from the sequential import's %d in order or content", workers, len(got.cids), len(ref.cids))
				}
				for i := range got.data {
					if !bytes.Equal(got.data[i], ref.data[i]) || got.tags[i] != ref.tags[i] {
						t.Fatalf("%d workers: put %d (%s) stored other bytes than the sequential import", workers, i, got.cids[i])
					}
				}
				if st.Bytes.Load() != int64(len(tc.data)) {
					t.Errorf("%d workers: stats count %d bytes of %d", workers, st.Bytes.Load(), len(tc.data))
				}
			}
		})
	}
}

// A failing put stops the pipeline with that error, and nothing after the
// failed block is put.
func TestPipelinePutErrorStops(t *testing.T) {
	data := randomBytes(10, 4<<20)
	l := Layout{Chunker: chunker.FixedSpec(4096), MaxLinks: 174}
	boom := errors.New("disk full")
	p := &failAfter{n: 100, err: boom}
	_, err := (&Importer{Put: p, Layout: l, Workers: 4}).ImportReader(context.Background(), bytes.NewReader(data))
	if !errors.Is(err, boom) {
		t.Fatalf("import: %v, want %v", err, boom)
	}
	if p.calls != 101 {
		t.Fatalf("%d puts, want the 100 that succeeded and the one that failed", p.calls)
	}
}

type failAfter struct {
	n, calls int
	err      error
}

func (f *failAfter) Put(context.Context, cid.Cid, []byte) error {
	f.calls++
	if f.calls > f.n {
		return f.err
	}
	return nil
}
