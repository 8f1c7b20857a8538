// Package carfile moves DAGs in and out of the block store as CAR files
// (CARv1 and CARv2, through github.com/ipld/go-car/v2). Import trusts nothing
// it has not hashed: a CAR is stored only after every block in it has been
// verified against its CID.
package carfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Limits on what an imported CAR may contain.
const (
	maxHeaderSize  = 1 << 20
	maxSectionSize = 2<<20 + 1024 // a 2 MiB block (the largest IPFS exchanges) plus its CID
)

// Stats counts blocks and bytes moved.
type Stats struct {
	Blocks int64
	Bytes  int64
	// Problem is, for an import with AllowPartial, the first reason the
	// DAG is incomplete or inconsistent; nil when it is neither.
	Problem error
}

// BlockViewer is the read side of the block store.
type BlockViewer = unixfs.BlockViewer

// ExportOptions configures Export.
type ExportOptions struct {
	Version  int         // 1 or 2 (2 needs a *os.File)
	Progress func(n int) // called with each block's size
}

// Export writes the DAGs under roots, each block once, in depth-first order.
// Every block must be present in the store.
func Export(ctx context.Context, bs BlockViewer, roots []cid.Cid, w io.Writer, o ExportOptions) (Stats, error) {
	var opts []carv2.Option
	switch o.Version {
	case 1:
		opts = append(opts, carv2.WriteAsCarV1(true))
	case 2:
		if _, ok := w.(*os.File); !ok {
			return Stats{}, errors.New("carfile: CARv2 needs a seekable file")
		}
	default:
		return Stats{}, fmt.Errorf("carfile: unknown CAR version %d", o.Version)
	}
	car, err := carstorage.NewWritable(w, roots, opts...)
	if err != nil {
		return Stats{}, fmt.Errorf("carfile: %w", err)
	}
	var st Stats
	visited := map[string]struct{}{}
	stack := append([]cid.Cid(nil), roots...)
	// Reverse so that the first root is walked first.
	for i, j := 0, len(stack)-1; i < j; i, j = i+1, j-1 {
		stack[i], stack[j] = stack[j], stack[i]
	}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := visited[c.KeyString()]; ok || unixfs.IsIdentity(c) {
			continue
		}
		visited[c.KeyString()] = struct{}{}
		var links []cid.Cid
		err := bs.View(ctx, c, func(b []byte) error {
			if err := unixfs.CheckHash(c, b); err != nil {
				return err
			}
			var err error
			if links, err = unixfs.Links(c, b); err != nil {
				return err
			}
			st.Blocks++
			st.Bytes += int64(len(b))
			if o.Progress != nil {
				o.Progress(len(b))
			}
			return car.Put(ctx, c.KeyString(), b)
		})
		if err != nil {
			return st, err
		}
		if wn, ok := bs.(unixfs.WillNeeder); ok {
			// Start reading the children now (from disk, or a remote
			// store's network) rather than one at a time as the walk
			// reaches them; a failed hint only means no read-ahead.
			for _, l := range links {
				_ = wn.WillNeed(ctx, l)
			}
		}
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	if f, ok := car.(interface{ Finalize() error }); ok && o.Version == 2 {
		if err := f.Finalize(); err != nil {
			return st, fmt.Errorf("carfile: finalize: %w", err)
		}
	}
	return st, nil
}

// BlockPutter is the write side of the block store.
type BlockPutter = unixfs.BlockPutter

// ImportOptions configures Import.
type ImportOptions struct {
	Progress func(n int) // called with each section's size, on both passes
	// Existing reads the blocks already stored: a CAR's DAG may link to
	// them instead of carrying them (nil: it may not).
	Existing BlockViewer
	// AllowPartial stores a DAG that is incomplete or inconsistent; the
	// first problem is then in Stats.Problem rather than an error.
	AllowPartial bool
}

// ErrInvalid marks a CAR refused by the strict checks: its DAG is
// incomplete or not consistent UnixFS.
var ErrInvalid = errors.New("DAG refused")

// Import reads the CAR at path twice. The first pass stores nothing: it
// verifies every block against its CID, checks each block on its own
// (codec, UnixFS fields, directory names; see unixfs.CheckBlock) and then
// the DAG under the roots as a whole (every block present in the CAR or
// the store, block sizes matching the children, see unixfs.DAGChecker).
// The second pass stores the blocks (verified again, since the file could
// have changed). A CAR that fails the first pass leaves the store
// untouched; with AllowPartial, only the hash checks refuse it. It returns
// the CAR's roots.
func Import(ctx context.Context, path string, put BlockPutter, o ImportOptions) ([]cid.Cid, Stats, error) {
	chk := unixfs.NewDAGChecker()
	roots, st, err := scan(ctx, path, o, nil, chk)
	if err != nil {
		return nil, st, err
	}
	for _, r := range roots {
		if chk.Added(r) || unixfs.IsIdentity(r) {
			continue
		}
		if o.Existing != nil {
			err := o.Existing.View(ctx, r, func([]byte) error { return nil })
			if err == nil {
				continue
			}
			if !errors.Is(err, store.ErrNotFound) {
				return nil, st, err
			}
		}
		return nil, st, fmt.Errorf("%s: root %s is neither in the CAR nor in the repo", path, r)
	}
	if err := chk.Finish(ctx, roots, o.Existing); err != nil {
		if ctx.Err() != nil {
			return nil, st, ctx.Err()
		}
		if !o.AllowPartial {
			return nil, st, fmt.Errorf("%s: %w (nothing stored; --allow-partial stores it anyway): %w", path, ErrInvalid, err)
		}
		st.Problem = err
	}
	problem := st.Problem
	if _, st, err = scan(ctx, path, o, put, nil); err != nil {
		return nil, st, err
	}
	st.Problem = problem
	return roots, st, nil
}

// scan reads the CAR's blocks: into chk on the first pass (put nil),
// into put on the second.
func scan(ctx context.Context, path string, o ImportOptions, put BlockPutter, chk *unixfs.DAGChecker) ([]cid.Cid, Stats, error) {
	var st Stats
	f, err := os.Open(path)
	if err != nil {
		return nil, st, err
	}
	defer f.Close()
	if err := checkV2Header(f); err != nil {
		return nil, st, fmt.Errorf("%s: not a valid CAR: %w", path, err)
	}
	br, err := carv2.NewBlockReader(f, carv2.MaxAllowedHeaderSize(maxHeaderSize), carv2.MaxAllowedSectionSize(maxSectionSize))
	if err != nil {
		return nil, st, fmt.Errorf("%s: not a valid CAR: %w", path, err)
	}
	if len(br.Roots) == 0 {
		return nil, st, fmt.Errorf("%s: CAR has no roots", path)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, st, err
		}
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("%s: block %d: %w", path, st.Blocks+1, unexpected(err))
		}
		c := blk.Cid()
		st.Blocks++
		st.Bytes += int64(len(blk.RawData()))
		if o.Progress != nil {
			o.Progress(len(blk.RawData()))
		}
		if chk != nil {
			if err := chk.Add(c, blk.RawData()); err != nil && !o.AllowPartial {
				return nil, st, fmt.Errorf("%s: %w (nothing stored; --allow-partial stores it anyway): block %d: %w", path, ErrInvalid, st.Blocks, err)
			} else if err != nil && st.Problem == nil {
				st.Problem = err
			}
		}
		if put != nil && !unixfs.IsIdentity(c) {
			if err := put.Put(ctx, c, blk.RawData()); err != nil {
				return nil, st, err
			}
		}
	}
	return br.Roots, st, nil
}

// checkV2Header refuses a CARv2 whose header places the data payload
// before the header's end or past the file's end (go-car would fail with
// "seek: invalid argument" or read past the payload). It leaves f at its
// start.
func checkV2Header(f *os.File) error {
	defer f.Seek(0, io.SeekStart)
	v, err := carv2.ReadVersion(f)
	if err != nil || v != 2 {
		return nil // go-car's own error says it better
	}
	var h carv2.Header
	if _, err := h.ReadFrom(f); err != nil {
		return fmt.Errorf("CARv2 header: %w", unexpected(err))
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := uint64(fi.Size())
	start := uint64(carv2.PragmaSize + carv2.HeaderSize)
	switch {
	case h.DataOffset < start:
		return fmt.Errorf("CARv2 header puts the data at offset %d, inside the header (which ends at %d)", h.DataOffset, start)
	case h.DataOffset > size || h.DataSize > size-h.DataOffset:
		return fmt.Errorf("CARv2 header puts %d bytes of data at offset %d, past the end of the %d-byte file", h.DataSize, h.DataOffset, size)
	}
	return nil
}

// unexpected names a truncated file as such.
func unexpected(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated CAR: %w", err)
	}
	return err
}
