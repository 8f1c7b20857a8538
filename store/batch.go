package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// Batch gathers block puts and commits them in the background every
// Options.BatchBytes of payload, with at most two commits in flight, so that
// hashing and chunking overlap with Badger's writes. Blocks already stored, or
// already put in this batch, are skipped: re-putting a key wastes value-log
// space.
//
// Put copies the block into an arena that lives until its commit is done,
// so callers may reuse their buffers at once and memory stays bounded at
// about three arenas. A Batch is used by one goroutine.
type Batch struct {
	s *Badger

	txn   *badger.Txn
	arena []byte
	// keys of this generation, and of generations committed but maybe not
	// yet visible to readers
	gen      map[string]struct{}
	genNo    int
	inflight map[int]map[string]struct{}
	mu       sync.Mutex // guards inflight and err against commit callbacks

	slots  chan struct{} // bounds commits in flight
	arenas chan []byte   // arenas free for reuse
	wg     sync.WaitGroup
	err    error

	// Stored and Skipped count blocks and their bytes.
	Stored, Skipped           int
	StoredBytes, SkippedBytes int64
}

// maxInflight is how many commits may run behind the one being filled.
const maxInflight = 2

// NewBatch starts a batch of puts.
func (s *Badger) NewBatch() *Batch {
	s.prealloc.check()
	return &Batch{
		s:        s,
		txn:      s.db.NewTransaction(true),
		gen:      map[string]struct{}{},
		inflight: map[int]map[string]struct{}{},
		slots:    make(chan struct{}, maxInflight),
		arenas:   make(chan []byte, maxInflight+1),
	}
}

// Put queues a copy of a block unless it is stored already. The caller
// vouches that data hashes to c.
func (b *Batch) Put(ctx context.Context, c cid.Cid, data []byte) error {
	if err := b.firstErr(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key := blockKey(c.Hash())
	dup := b.seen(key)
	if !dup {
		var err error
		if dup, err = b.s.has(key); err != nil {
			return err
		}
	}
	if dup {
		b.Skipped++
		b.SkippedBytes += int64(len(data))
		return nil
	}
	e := badger.NewEntry(key, b.copyIn(data)).WithMeta(byte(newFrame(compressionNone, c.Prefix().Codec)))
	if err := b.txn.SetEntry(e); errors.Is(err, badger.ErrTxnTooBig) {
		b.commit()
		err = b.txn.SetEntry(e)
		if err != nil {
			return fmt.Errorf("store: put %s: %w", c, err)
		}
	} else if err != nil {
		return fmt.Errorf("store: put %s: %w", c, err)
	}
	b.gen[string(key)] = struct{}{}
	b.Stored++
	b.StoredBytes += int64(len(data))
	if len(b.arena) >= b.s.opts.BatchBytes {
		b.commit()
	}
	return nil
}

// copyIn copies data into the current arena, committing first when it is
// full. Entries keep pointing into the arena, so it never reallocates.
func (b *Batch) copyIn(data []byte) []byte {
	if len(data) > b.s.opts.BatchBytes/4 {
		return append([]byte(nil), data...)
	}
	if b.arena != nil && len(b.arena)+len(data) > cap(b.arena) {
		b.commit()
	}
	if b.arena == nil {
		select {
		case a := <-b.arenas:
			b.arena = a[:0]
		default:
			b.arena = make([]byte, 0, b.s.opts.BatchBytes+b.s.opts.BatchBytes/4)
		}
	}
	off := len(b.arena)
	b.arena = append(b.arena, data...)
	return b.arena[off:len(b.arena):len(b.arena)]
}

// seen reports whether key was put in this batch. Keys leave the in-flight
// set only after their commit is visible, so checking here before the
// database never misses a block.
func (b *Batch) seen(key []byte) bool {
	if _, ok := b.gen[string(key)]; ok {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range b.inflight {
		if _, ok := g[string(key)]; ok {
			return true
		}
	}
	return false
}

// commit sends the current transaction to Badger without waiting for it.
func (b *Batch) commit() {
	if len(b.gen) == 0 {
		return
	}
	txn, gen, no, arena := b.txn, b.gen, b.genNo, b.arena
	b.txn, b.gen, b.arena = b.s.db.NewTransaction(true), map[string]struct{}{}, nil
	b.genNo++
	b.slots <- struct{}{}
	b.mu.Lock()
	b.inflight[no] = gen
	b.mu.Unlock()
	b.wg.Add(1)
	txn.CommitWith(func(err error) {
		defer b.wg.Done()
		b.mu.Lock()
		delete(b.inflight, no)
		if err != nil && b.err == nil {
			b.err = fmt.Errorf("store: commit: %w", err)
		}
		b.mu.Unlock()
		b.s.prealloc.check()
		if arena != nil {
			select {
			case b.arenas <- arena:
			default:
			}
		}
		<-b.slots
	})
}

func (b *Batch) firstErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Flush commits everything queued and waits for it. The batch stays usable.
func (b *Batch) Flush() error {
	b.commit()
	b.wg.Wait()
	return b.firstErr()
}

// Close flushes and releases the batch.
func (b *Batch) Close() error {
	err := b.Flush()
	b.txn.Discard()
	return err
}

// Cancel drops what has not been committed, waits for commits in flight and
// releases the batch.
func (b *Batch) Cancel() {
	b.txn.Discard()
	b.wg.Wait()
}
