package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// Batch gathers block puts into one Badger transaction and commits it every
// Options.BatchBytes of payload (large values barely count toward Badger's
// own limit, so without this a big import would sit in memory). Blocks
// already stored, or already put in this batch, are skipped: re-putting a
// key wastes value-log space.
//
// Put copies the block into an arena reused after each commit, so callers
// may reuse their buffers at once and memory stays bounded. Commits are
// synchronous: a new Badger transaction waits for the previous commit
// anyway. A Batch is used by one goroutine.
//
// Every block put or skipped is recorded in the batch's temporary pin, so
// that garbage collection leaves it alone (see TempPin). A batch from
// NewBatch holds its own pin until Close or Cancel; one from
// TempPin.NewBatch records into that pin, which outlives the batch until
// the holder has recorded a reference to what it built.
type Batch struct {
	s       *Badger
	pin     *TempPin
	ownPin  bool
	txn     *badger.Txn
	arena   []byte
	full    [][]byte            // earlier arena chunks, still referenced by txn
	keys    map[string]struct{} // keys in txn
	pending int64               // bytes queued in txn

	// Stored and Skipped count blocks and their bytes.
	Stored, Skipped           int
	StoredBytes, SkippedBytes int64
}

// NewBatch starts a batch of puts protected by its own temporary pin.
func (s *Badger) NewBatch() *Batch {
	b := s.TempPin().NewBatch()
	b.ownPin = true
	return b
}

// NewBatch starts a batch of puts recorded in p.
func (p *TempPin) NewBatch() *Batch {
	return &Batch{s: p.s, pin: p, txn: p.s.db.NewTransaction(true), keys: map[string]struct{}{}}
}

// Put queues a copy of a block unless it is stored already. The caller
// vouches that data hashes to c.
func (b *Batch) Put(ctx context.Context, c cid.Cid, data []byte) error {
	return b.put(ctx, c, data, compressionNone, len(data))
}

func (b *Batch) put(ctx context.Context, c cid.Cid, data []byte, tag byte, rawSize int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := blockKey(c.Hash())
	_, dup := b.keys[string(key)]
	if !dup {
		// Recorded before the presence check, under the lock a GC sweep
		// holds while it deletes: either the sweep sees the record, or
		// this check sees its delete.
		b.s.track.sweep.RLock()
		b.pin.record(c)
		var err error
		dup, err = b.s.has(key)
		b.s.track.sweep.RUnlock()
		if err != nil {
			return err
		}
	}
	if dup {
		b.Skipped++
		b.SkippedBytes += int64(rawSize)
		b.s.counters.dupPuts.Add(1)
		b.s.counters.dupPutBytes.Add(int64(rawSize))
		return nil
	}
	if tag == compDelta {
		if err := b.putDeltaRecord(c, data); err != nil {
			return err
		}
	}
	meta := byte(newFrame(tag, c.Prefix().Codec))
	err := b.txn.SetEntry(badger.NewEntry(key, b.copyIn(data)).WithMeta(meta))
	if errors.Is(err, badger.ErrTxnTooBig) {
		// Commit what is queued (this entry is not part of it), then
		// queue the entry again in the fresh transaction and arena.
		if err := b.Flush(); err != nil {
			return err
		}
		err = b.txn.SetEntry(badger.NewEntry(key, b.copyIn(data)).WithMeta(meta))
	}
	if err != nil {
		return fmt.Errorf("store: put %s: %w", c, err)
	}
	b.keys[string(key)] = struct{}{}
	b.pending += int64(len(data))
	b.Stored++
	b.StoredBytes += int64(rawSize)
	b.s.counters.puts.Add(1)
	b.s.counters.putBytes.Add(int64(rawSize))
	if b.pending >= int64(b.s.opts.BatchBytes) {
		return b.Flush()
	}
	return nil
}

// PutEncoded queues a block whose payload Encode compressed (tag is what
// Encode returned); rawSize is the uncompressed length, for the counters.
func (b *Batch) PutEncoded(ctx context.Context, c cid.Cid, payload []byte, tag byte, rawSize int) error {
	return b.put(ctx, c, payload, tag, rawSize)
}

// copyIn copies data into the arena. Queued entries point into it, so it
// never grows in place: when full, a new chunk twice the size follows (up
// to a batch's worth), so that a batch of one small block costs a small
// allocation, and a big batch a few.
func (b *Batch) copyIn(data []byte) []byte {
	if len(b.arena)+len(data) > cap(b.arena) {
		limit := b.s.opts.BatchBytes + b.s.opts.BatchBytes/4
		n := min(max(2*cap(b.arena), 2*len(data), 1<<20), limit)
		if n < len(data) {
			return append([]byte(nil), data...)
		}
		if len(b.arena) > 0 {
			b.full = append(b.full, b.arena)
		}
		b.arena = make([]byte, 0, n)
	}
	off := len(b.arena)
	b.arena = append(b.arena, data...)
	return b.arena[off:len(b.arena):len(b.arena)]
}

// Flush commits everything queued. The batch stays usable.
func (b *Batch) Flush() error {
	if len(b.keys) == 0 {
		return nil
	}
	if err := b.s.checkSpace(b.pending); err != nil {
		b.txn.Discard()
		b.txn, b.pending = b.s.db.NewTransaction(true), 0
		b.arena, b.full = b.arena[:0], nil
		clear(b.keys)
		return err
	}
	if k := b.s.clock.mark(time.Now()); k != "" {
		_ = b.txn.Set([]byte(k), nil) // a missing marker only makes blocks look younger
	}
	b.s.writes.RLock()
	err := b.txn.Commit()
	b.s.writes.RUnlock()
	b.pending = 0
	b.txn = b.s.db.NewTransaction(true)
	b.arena, b.full = b.arena[:0], nil
	clear(b.keys)
	b.s.prealloc.check()
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// Close flushes and releases the batch (and its own pin).
func (b *Batch) Close() error {
	err := b.Flush()
	b.txn.Discard()
	if b.ownPin {
		b.pin.Release()
	}
	return err
}

// Cancel drops what has not been committed and releases the batch.
func (b *Batch) Cancel() {
	b.txn.Discard()
	if b.ownPin {
		b.pin.Release()
	}
}

// ErrBaseGone means a delta's base was deleted (by a garbage collection)
// between coding the delta and storing it: the block must be stored whole.
var ErrBaseGone = errors.New("store: the base of a delta is no longer stored")

// putDeltaRecord queues the record of a delta's base, and keeps the base
// from garbage collection as a block this batch needs.
func (b *Batch) putDeltaRecord(c cid.Cid, payload []byte) error {
	h, err := parseDelta(payload)
	if err != nil {
		return fmt.Errorf("store: put %s: %w", c, err)
	}
	base := baseCID(h.base)
	if _, queued := b.keys[string(blockKey(h.base))]; !queued {
		b.s.track.sweep.RLock()
		b.pin.record(base)
		ok, err := b.s.has(blockKey(h.base))
		b.s.track.sweep.RUnlock()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("put %s: base %s: %w", c, base, ErrBaseGone)
		}
	}
	key, val := deltaKey(c.Hash()), []byte(h.base)
	err = b.txn.Set(key, val)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := b.Flush(); err != nil {
			return err
		}
		err = b.txn.Set(key, val)
	}
	if err != nil {
		return fmt.Errorf("store: put %s: %w", c, err)
	}
	return nil
}
