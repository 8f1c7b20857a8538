package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	carstorage "github.com/ipld/go-car/v2/storage"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/multicodec"
	"github.com/ipld/go-ipld-prime/node/basicnode"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// maxDepth bounds the DAG walk against hostile or cyclic-looking DAGs.
const maxDepth = 4096

// walker writes the blocks of a dag-scope to a CAR, depth first, each
// block hashed before it goes out.
type walker struct {
	ctx  context.Context
	bs   unixfs.BlockViewer
	car  carstorage.WritableCar
	dups bool
	seen map[string]struct{}
}

// put writes block c (unless it went out already and duplicates are off)
// and hands its bytes to fn. Identity blocks are never written: their
// data is in the CID.
func (w *walker) put(c cid.Cid, fn func([]byte) error) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	_, sent := w.seen[c.KeyString()]
	if sent && !w.dups && fn == nil {
		return nil
	}
	return w.bs.View(w.ctx, c, func(b []byte) error {
		if err := unixfs.CheckHash(c, b); err != nil {
			return err
		}
		if !unixfs.IsIdentity(c) && (!sent || w.dups) {
			if err := w.car.Put(w.ctx, c.KeyString(), b); err != nil {
				return err
			}
			w.seen[c.KeyString()] = struct{}{}
		}
		if fn != nil {
			return fn(b)
		}
		return nil
	})
}

// all writes the whole DAG under c.
func (w *walker) all(c cid.Cid, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: DAG deeper than %d", c, maxDepth)
	}
	if _, ok := w.seen[c.KeyString()]; ok && !w.dups {
		return nil // its whole DAG went out with it
	}
	var links []cid.Cid
	err := w.put(c, func(b []byte) error {
		var err error
		links, err = unixfs.Links(c, b)
		return err
	})
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := w.all(l, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// byteRange is a half-open range [from, end) of a file's bytes.
type byteRange struct{ from, end uint64 }

// entity writes the blocks that verify the UnixFS entity at c: a whole
// file (or the blocks of rng of it), a directory's blocks (every shard of
// a HAMT) without its entries, or the block alone for anything else.
func (w *walker) entity(c cid.Cid, rng *byteRange, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: DAG deeper than %d", c, maxDepth)
	}
	if c.Prefix().Codec != cid.DagProtobuf {
		return w.put(c, nil)
	}
	var d unixfs.Decoded
	var isUnixFS bool
	err := w.put(c, func(b []byte) error {
		var err error
		d, err = unixfs.Decode(b)
		if errors.Is(err, unixfs.ErrMalformed) || errors.Is(err, unixfs.ErrUnsupported) {
			return nil // plain dag-pb: the block is the entity
		}
		isUnixFS = err == nil
		return err
	})
	if err != nil || !isUnixFS {
		return err
	}
	switch {
	case d.Kind == unixfs.KindFile:
		start := d.DataLen
		for i, l := range d.Links {
			end := start + d.BlockSizes[i]
			var sub *byteRange
			if rng != nil {
				if end <= rng.from || start >= rng.end {
					start = end
					continue
				}
				sub = &byteRange{from: max(rng.from, start) - start, end: min(rng.end, end) - start}
			}
			if err := w.entity(l.CID, sub, depth+1); err != nil {
				return err
			}
			start = end
		}
	case d.HAMT:
		for _, l := range d.Links {
			if len(l.Name) == d.Prefix { // a sub-shard, not an entry
				if err := w.entity(l.CID, nil, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// parseRange parses entity-bytes "from:to": from an integer (negative
// counts from the end), to an integer or "*" (negative counts from the
// end). nil to means "*".
func parseRange(s string) (int64, *int64, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, nil, errors.New("want from:to")
	}
	from, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("from: %w", err)
	}
	if b == "*" {
		return from, nil, nil
	}
	to, err := strconv.ParseInt(b, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("to: %w", err)
	}
	if from >= 0 && to >= 0 && to < from {
		return 0, nil, errors.New("to before from")
	}
	return from, &to, nil
}

// resolveRange turns from:to (inclusive, negatives from the end) into a
// half-open range of a file of size bytes. inside is false when the range
// lies wholly outside the file. A range that resolves empty yields an
// empty byteRange: only the root block goes out.
func resolveRange(from int64, to *int64, size uint64) (r *byteRange, inside bool) {
	n := int64(size)
	if from < 0 {
		from = max(n+from, 0)
	}
	last := n - 1
	if to != nil {
		last = *to
		if last < 0 {
			last = n + last
		}
	}
	if from >= n && n > 0 || last < 0 && n > 0 {
		return nil, false
	}
	last = min(last, n-1)
	if last < from {
		return &byteRange{}, true
	}
	return &byteRange{from: uint64(from), end: uint64(last) + 1}, true
}

// resolvePath walks segs from root: through UnixFS directories (dag-pb,
// by entry name, HAMTs included) and through the maps and lists of other
// IPLD codecs (dag-cbor commits, dag-json), following links between
// blocks. It returns the CID the path ends in and the CID of each block
// stepped through (the root first), for X-Ipfs-Roots.
func resolvePath(ctx context.Context, bs unixfs.BlockViewer, root cid.Cid, segs []string) (cid.Cid, []cid.Cid, error) {
	cur, roots := root, []cid.Cid{root}
	for len(segs) > 0 {
		if cur.Prefix().Codec == cid.DagProtobuf || cur.Prefix().Codec == cid.Raw {
			next, err := unixfs.Resolve(ctx, bs, cur, segs[0])
			if err != nil {
				return cur, roots, err
			}
			cur, segs = next, segs[1:]
			roots = append(roots, cur)
			continue
		}
		next, rest, err := stepIPLD(ctx, bs, cur, segs)
		if err != nil {
			return cur, roots, err
		}
		if !next.Defined() {
			break // the path ends inside cur's block
		}
		cur, segs = next, rest
		roots = append(roots, cur)
	}
	return cur, roots, nil
}

// stepIPLD follows segs inside block c (of a codec go-ipld-prime decodes)
// up to the first link, which it returns with the segments left after it.
// It returns an undefined CID when the path ends inside the block.
func stepIPLD(ctx context.Context, bs unixfs.BlockViewer, c cid.Cid, segs []string) (cid.Cid, []string, error) {
	dec, err := multicodec.LookupDecoder(c.Prefix().Codec)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("%s: %w", c, unixfs.ErrUnsupported)
	}
	var n datamodel.Node
	err = bs.View(ctx, c, func(b []byte) error {
		if err := unixfs.CheckHash(c, b); err != nil {
			return err
		}
		nb := basicnode.Prototype.Any.NewBuilder()
		if err := dec(nb, bytes.NewReader(b)); err != nil {
			return fmt.Errorf("%s: %w: %v", c, unixfs.ErrMalformed, err)
		}
		n = nb.Build()
		return nil
	})
	if err != nil {
		return cid.Undef, nil, err
	}
	for i, seg := range segs {
		if k := n.Kind(); k != datamodel.Kind_Map && k != datamodel.Kind_List {
			return cid.Undef, nil, fmt.Errorf("%s: %q: %w", c, seg, unixfs.ErrNotDir)
		}
		next, err := n.LookupBySegment(datamodel.PathSegmentOfString(seg))
		if err != nil {
			return cid.Undef, nil, fmt.Errorf("%s: %q: %w", c, seg, unixfs.ErrNoEntry)
		}
		if next.Kind() == datamodel.Kind_Link {
			l, _ := next.AsLink()
			cl, ok := l.(cidlink.Link)
			if !ok {
				return cid.Undef, nil, fmt.Errorf("%s: %q: %w: link is not a CID", c, seg, unixfs.ErrMalformed)
			}
			return cl.Cid, segs[i+1:], nil
		}
		n = next
	}
	return cid.Undef, nil, nil
}
