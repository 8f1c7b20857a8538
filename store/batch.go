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
// Data handed to Put is retained, not copied, until Flush returns: the caller
// must not modify it before then.
type Batch struct {
	s *Badger

	txn          *badger.Txn
	pendingBytes int
	// keys of blocks put but maybe not yet visible to readers, by generation
	gen      map[string]struct{}
	genNo    int
	inflight map[int]map[string]struct{}
	mu       sync.Mutex // guards inflight and err against commit callbacks

	slots chan struct{}
	wg    sync.WaitGroup
	err   error

	// Stored and Skipped count blocks and their bytes.
	Stored, Skipped           int
	StoredBytes, SkippedBytes int64
}

// NewBatch starts a batch of puts.
func (s *Badger) NewBatch() *Batch {
	return &Batch{
		s:        s,
		txn:      s.db.NewTransaction(true),
		gen:      map[string]struct{}{},
		inflight: map[int]map[string]struct{}{},
		slots:    make(chan struct{}, 2),
	}
}

// Put queues a block unless it is stored already. The caller vouches that
// data hashes to c.
func (b *Batch) Put(ctx context.Context, c cid.Cid, data []byte) error {
	if err := b.firstErr(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key := blockKey(c.Hash())
	if b.seen(key) {
		b.Skipped++
		b.SkippedBytes += int64(len(data))
		return nil
	}
	ok, err := b.s.has(key)
	if err != nil {
		return err
	}
	if ok {
		b.Skipped++
		b.SkippedBytes += int64(len(data))
		return nil
	}
	e := badger.NewEntry(key, data).WithMeta(byte(newFrame(compressionNone, c.Prefix().Codec)))
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
	b.pendingBytes += len(data)
	if b.pendingBytes >= b.s.opts.BatchBytes {
		b.commit()
	}
	return nil
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
	txn, gen, no := b.txn, b.gen, b.genNo
	b.txn, b.gen, b.pendingBytes = b.s.db.NewTransaction(true), map[string]struct{}{}, 0
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
		<-b.slots
	})
}

func (b *Batch) firstErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Flush commits everything queued and waits for it.
func (b *Batch) Flush() error {
	b.commit()
	b.wg.Wait()
	b.txn.Discard()
	return b.firstErr()
}

// Cancel drops what has not been committed and waits for commits in flight.
func (b *Batch) Cancel() {
	b.txn.Discard()
	b.wg.Wait()
}
