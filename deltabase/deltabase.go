// Package deltabase chooses the base a tensor chunk is stored against as a
// delta: for each tensor written (by name, dtype and shape), the leaves of
// the most recently stored file that has it. So the usual checkpoint layouts
// find their bases without being told: run/checkpoint-2000/model.safetensors
// against run/checkpoint-1000/model.safetensors, a fine-tune against the
// model it started from, a file replaced in place by a rename.
//
// The index is a set of small repo metadata records, one per tensor
// identity, each holding the leaf CIDs of that tensor's fixed-size chunks
// (see safetensors.TensorChunk) in the file that last stored it. A record
// may name leaves that garbage collection has since removed: the store then
// finds no base and stores the chunk whole.
package deltabase

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/torchzip"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Store is what the index needs of the repo's store: its metadata records
// and the blocks of the files it records.
type Store interface {
	unixfs.BlockViewer
	GetMeta(ctx context.Context, key string) ([]byte, error)
	UpdateMeta(ctx context.Context, fn func(store.MetaTxn) error) error
}

var _ Store = (*store.Badger)(nil)

// keyPrefix is the metadata namespace of the index.
const keyPrefix = "deltabase/"

// Index is the base-selection index of one store. Safe for concurrent use
// (its state is the store's).
type Index struct {
	s Store
}

// New returns the index kept in s.
func New(s Store) *Index { return &Index{s: s} }

// part is a run of a file with an identity that outlives the file: a
// tensor by name, dtype and shape.
type part struct {
	key        string
	begin, end uint64
}

// describe recognises a file by its head and returns its segments (as
// safetensors.FindSegments does) and its parts, parallel to the segments
// that are Fixed; nil for a file it does not know.
func describe(peek func(n int) ([]byte, error)) ([]unixfs.Segment, []part) {
	segs := safetensors.FindSegments(peek)
	if segs == nil {
		return nil, nil
	}
	head, err := peek(int(segs[0].End))
	if err != nil {
		return nil, nil
	}
	h, err := safetensors.Parse(head, -1)
	if err != nil {
		return nil, nil
	}
	var parts []part
	for _, t := range h.Tensors {
		if t.End == t.Begin {
			continue
		}
		dims := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = strconv.FormatInt(d, 10)
		}
		parts = append(parts, part{
			key:   "st/" + string(t.DType) + "/" + strings.Join(dims, "x") + "/" + t.Name,
			begin: uint64(t.Begin), end: uint64(t.End),
		})
	}
	return segs, parts
}

// Cuts is a unixfs.CutFinder: the segments of a safetensors file, each
// tensor's carrying the leaves of the same tensor in the latest file that
// had it, as bases for the chunks written now; those of a torch.save file
// (see torchzip); nil for other files.
func (x *Index) Cuts(peek func(n int) ([]byte, error)) []unixfs.Segment {
	segs, parts := describe(peek)
	if segs == nil {
		// torch.save archives: compressed by their storages' float type
		// (their entry boundaries are not known from the head, so no
		// deltas).
		return torchzip.FindSegments(peek)
	}
	pi := 0
	for i := range segs {
		if segs[i].Fixed == 0 || pi >= len(parts) {
			continue
		}
		p := parts[pi]
		pi++
		if segs[i].End != p.end {
			return segs // not the layout this package expects: no bases
		}
		v, err := x.s.GetMeta(context.Background(), keyPrefix+p.key)
		if err != nil {
			continue
		}
		fixed, bases, err := decodeRecord(v)
		if err != nil || fixed != segs[i].Fixed || len(bases) != chunks(p.end-p.begin, fixed) {
			continue
		}
		segs[i].Bases = bases
	}
	return segs
}

func chunks(n uint64, fixed int) int { return int((n + uint64(fixed) - 1) / uint64(fixed)) }

// Record remembers the tensors of the stored file root as the latest of
// their kind. A file that is not a safetensors file, or whose tensors are
// not cut at fixed offsets (stored by another layout), records nothing.
func (x *Index) Record(ctx context.Context, root cid.Cid) error {
	f, err := unixfs.OpenFile(ctx, x.s, root)
	if err != nil {
		return fmt.Errorf("deltabase: %w", err)
	}
	peek := func(n int) ([]byte, error) {
		if uint64(n) > f.Size() {
			return nil, io.ErrUnexpectedEOF
		}
		b := make([]byte, n)
		if _, err := f.ReadAt(ctx, b, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return b, nil
	}
	segs, parts := describe(peek)
	if len(parts) == 0 {
		return nil
	}
	leaves, err := f.Leaves(ctx)
	if err != nil {
		return nil // a DAG without raw leaves: nothing to base on
	}
	start := make(map[uint64]int, len(leaves))
	var off uint64
	for i, l := range leaves {
		start[off] = i
		off += l.Size
	}
	fixed := segs[len(segs)-1].Fixed
	records := map[string][]byte{}
	for _, p := range parts {
		i, ok := start[p.begin]
		n := chunks(p.end-p.begin, fixed)
		if !ok || fixed == 0 || i+n > len(leaves) {
			continue
		}
		bases := make([]cid.Cid, n)
		aligned := true
		for k := range n {
			l := leaves[i+k]
			want := uint64(fixed)
			if k == n-1 {
				want = p.end - p.begin - uint64(k)*uint64(fixed)
			}
			if l.Size != want {
				aligned = false
				break
			}
			bases[k] = l.CID
		}
		if aligned {
			records[keyPrefix+p.key] = encodeRecord(fixed, bases)
		}
	}
	if len(records) == 0 {
		return nil
	}
	return x.s.UpdateMeta(ctx, func(t store.MetaTxn) error {
		for k, v := range records {
			if err := t.Set(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// A record is [uvarint chunk size][uvarint count] then each CID as
// [uvarint length][bytes].
func encodeRecord(fixed int, bases []cid.Cid) []byte {
	b := binary.AppendUvarint(nil, uint64(fixed))
	b = binary.AppendUvarint(b, uint64(len(bases)))
	for _, c := range bases {
		cb := c.Bytes()
		b = binary.AppendUvarint(b, uint64(len(cb)))
		b = append(b, cb...)
	}
	return b
}

var errBadRecord = errors.New("deltabase: malformed record")

func decodeRecord(b []byte) (fixed int, bases []cid.Cid, err error) {
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	f, ok1 := next()
	n, ok2 := next()
	if !ok1 || !ok2 || n > uint64(len(b)) {
		return 0, nil, errBadRecord
	}
	bases = make([]cid.Cid, 0, n)
	for range n {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return 0, nil, errBadRecord
		}
		c, err := cid.Cast(b[:l])
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errBadRecord, err)
		}
		bases = append(bases, c)
		b = b[l:]
	}
	return int(f), bases, nil
}
