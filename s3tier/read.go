package s3tier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// ErrCorruptPack means a block read from a pack in the bucket does not
// hash to its CID: the pack was altered or damaged. Reads of the block
// fail (EIO through a mount); nothing is cached.
var ErrCorruptPack = errors.New("block in the bucket does not match its CID")

var (
	_ unixfs.BlockViewer   = (*Tier)(nil)
	_ unixfs.CheckedViewer = (*Tier)(nil)
	_ unixfs.WillNeeder    = (*Tier)(nil)
	_ unixfs.BlockPutter   = (*Tier)(nil)
)

// reader fetches blocks from packs: deduplicated, bounded in number, and
// cached locally by one writer goroutine.
type reader struct {
	t     *Tier
	slots chan struct{}

	mu       sync.Mutex
	inflight map[string]*fetch
	running  sync.WaitGroup
	puts     chan fetched
	stopped  atomic.Bool

	cmu    sync.Mutex // the cache list
	cached int64
	seq    uint64
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

type fetched struct {
	c    cid.Cid
	key  string
	data []byte
}

func newReader(t *Tier) *reader {
	return &reader{t: t, slots: make(chan struct{}, t.o.Concurrency), inflight: map[string]*fetch{},
		puts: make(chan fetched, t.o.Concurrency)}
}

func (r *reader) cachedBytes() int64 {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	return r.cached
}

// stop waits for the fetches in flight (Close has cancelled them) and
// ends the writer.
func (r *reader) stop() {
	r.mu.Lock()
	r.stopped.Store(true)
	r.mu.Unlock()
	r.running.Wait()
	close(r.puts)
}

// Local is the store in front of the bucket.
func (t *Tier) Local() *store.Badger { return t.local }

// TempPin registers a temporary pin in the local store.
func (t *Tier) TempPin() *store.TempPin { return t.local.TempPin() }

// Put stores a block locally; the uploader pushes what refs reach.
func (t *Tier) Put(ctx context.Context, c cid.Cid, data []byte) error {
	return t.local.Put(ctx, c, data)
}

// View calls fn with the block's bytes: local, else from the bucket.
func (t *Tier) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	return t.ViewChecked(ctx, c, func(b []byte, _ bool) error { return fn(b) })
}

// ViewChecked is View for readers that check what they read: bytes from
// the bucket come checked, for they were hashed against c on arrival.
func (t *Tier) ViewChecked(ctx context.Context, c cid.Cid, fn func(b []byte, checked bool) error) error {
	called := false
	err := t.local.ViewChecked(ctx, c, func(b []byte, checked bool) error { called = true; return fn(b, checked) })
	if called || !errors.Is(err, store.ErrNotFound) {
		if called {
			t.st.cacheHits.Add(1)
		}
		return err
	}
	f, err := t.reads.start(ctx, c, true)
	if err != nil {
		return err
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	return fn(f.data, true)
}

// WillNeed starts fetching a block that is not stored locally.
func (t *Tier) WillNeed(ctx context.Context, c cid.Cid) error {
	if ok, err := t.local.Has(ctx, c); err != nil || ok {
		return err
	}
	_, err := t.reads.start(ctx, c, false)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the read will say so
	}
	return err
}

// maxHinted bounds fetches started by hints and not done.
const maxHinted = 4096

func (r *reader) start(ctx context.Context, c cid.Cid, must bool) (*fetch, error) {
	l, ok := r.t.idx.lookup(c)
	if !ok {
		// A block pushed since the last look: read the new indexes (at
		// most once a second).
		if err := r.t.idx.refresh(ctx, time.Second); err != nil {
			return nil, fmt.Errorf("block %s: %w", c, err)
		}
		if l, ok = r.t.idx.lookup(c); !ok {
			return nil, fmt.Errorf("block %s: %w (not in the bucket either)", c, store.ErrNotFound)
		}
	}
	key := string(c.Hash())
	r.mu.Lock()
	f, ok := r.inflight[key]
	r.mu.Unlock()
	if ok {
		return f, nil
	}
	// The blocks after this one in its pack, not stored here: one GET
	// brings them all (packs hold files in order).
	var more []loc
	for _, m := range r.t.idx.following(l, spanBytes) {
		if has, err := r.t.local.Has(ctx, m.c); err != nil || has {
			break
		}
		more = append(more, m)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped.Load() {
		return nil, fmt.Errorf("block %s: %w", c, context.Canceled)
	}
	if f, ok := r.inflight[key]; ok {
		return f, nil
	}
	if !must && len(r.inflight) >= maxHinted {
		return &fetch{}, nil // dropped hint: nobody waits on it
	}
	f = &fetch{done: make(chan struct{})}
	span := []member{{l: l, key: key, f: f}}
	for _, m := range more {
		k := string(m.c.Hash())
		if _, busy := r.inflight[k]; busy {
			break
		}
		span = append(span, member{l: m, key: k, f: &fetch{done: make(chan struct{})}})
	}
	for _, m := range span {
		r.inflight[m.key] = m.f
	}
	r.running.Add(len(span))
	go r.run(span)
	return f, nil
}

// spanBytes bounds one ranged GET of adjacent blocks.
const spanBytes = 8 << 20

// member is one block of a span read by one GET.
type member struct {
	l   loc
	key string
	f   *fetch
}

// run reads a span of adjacent blocks of a pack in one GET and checks
// each block against its CID: a bad block fails alone.
func (r *reader) run(span []member) {
	t := r.t
	first, last := span[0].l, span[len(span)-1].l
	fail := func(err error) {
		for _, m := range span {
			m.f.err = fmt.Errorf("block %s in pack %s: %w", m.l.c, m.l.pack, err)
			close(m.f.done)
			r.finish(m.key)
		}
	}
	select {
	case r.slots <- struct{}{}:
	case <-t.ctx.Done():
		fail(t.ctx.Err())
		return
	}
	data, err := t.fetchRange(t.ctx, first.pack, first.off, last.off+last.length-first.off)
	<-r.slots
	if err != nil {
		t.o.Logger.Warn("s3: reading blocks from the bucket", "pack", first.pack, "blocks", len(span), "err", err)
		fail(err)
		return
	}
	var good []fetched
	for _, m := range span {
		b := data[m.l.off-first.off : m.l.off-first.off+m.l.length : m.l.off-first.off+m.l.length]
		if err := unixfs.CheckHash(m.l.c, b); err != nil {
			t.st.badBlocks.Add(1)
			m.f.err = fmt.Errorf("block %s in pack %s: %w: %w", m.l.c, m.l.pack, ErrCorruptPack, err)
			t.o.Logger.Error("s3: a block from the bucket does not match its CID", "cid", m.l.c.String(), "pack", m.l.pack)
			close(m.f.done)
			r.finish(m.key)
			continue
		}
		t.st.remoteReads.Add(1)
		t.st.remoteBytes.Add(int64(len(b)))
		m.f.data = b
		close(m.f.done)
		good = append(good, fetched{c: m.l.c, key: m.key, data: b})
	}
	for _, g := range good {
		r.puts <- g
	}
}

func (r *reader) finish(key string) {
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
	r.running.Done()
}

// fetchBlock reads a block by a ranged GET of its pack and checks it
// against c. Network errors are retried; wrong bytes are not.
func (t *Tier) fetchBlock(ctx context.Context, c cid.Cid, l loc) ([]byte, error) {
	b, err := t.fetchRange(ctx, l.pack, l.off, l.length)
	if err != nil {
		return nil, fmt.Errorf("block %s in pack %s: %w", c, l.pack, err)
	}
	if err := unixfs.CheckHash(c, b); err != nil {
		t.st.badBlocks.Add(1)
		return nil, fmt.Errorf("block %s in pack %s: %w: %w", c, l.pack, ErrCorruptPack, err)
	}
	t.st.remoteReads.Add(1)
	t.st.remoteBytes.Add(int64(len(b)))
	return b, nil
}

// fetchRange reads bytes of a pack, retrying network errors.
func (t *Tier) fetchRange(ctx context.Context, pack string, off, length int64) ([]byte, error) {
	var err error
	pause := t.o.Backoff
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			pause *= 2
		}
		var b []byte
		if b, err = t.getRange(ctx, t.packKey(pack), off, length); err == nil {
			return b, nil
		}
		if ctx.Err() != nil || errors.Is(err, errNoObject) {
			break
		}
	}
	return nil, err
}

// getRange reads length bytes at off of an object.
func (t *Tier) getRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if length == 0 {
		return []byte{}, nil
	}
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+length-1); err != nil {
		return nil, err
	}
	t.st.getRequests.Add(1)
	obj, err := t.cl.GetObject(ctx, t.loc.Bucket, key, opts)
	if err != nil {
		return nil, noObject(err)
	}
	defer obj.Close()
	b := make([]byte, length)
	if _, err := io.ReadFull(obj, b); err != nil {
		return nil, noObject(err)
	}
	return b, nil
}

// maxPutGroup bounds the bytes of one commit of fetched blocks.
const maxPutGroup = 32 << 20

// writer stores fetched blocks, notes them in the cache list and keeps
// the cache within its budget.
func (r *reader) writer(ctx context.Context) {
	wctx := context.WithoutCancel(ctx)
	for p := range r.puts {
		group, size := []fetched{p}, len(p.data)
	more:
		for size < maxPutGroup {
			select {
			case q, ok := <-r.puts:
				if !ok {
					break more
				}
				group, size = append(group, q), size+len(q.data)
			default:
				break more
			}
		}
		if err := r.cache(wctx, group); err != nil {
			r.t.o.Logger.Warn("s3: caching fetched blocks", "blocks", len(group), "err", err)
		}
		if err := r.evict(wctx); err != nil {
			r.t.o.Logger.Warn("s3: evicting cached blocks", "err", err)
		}
		for _, q := range group {
			r.finish(q.key)
		}
	}
}

func (r *reader) cache(ctx context.Context, group []fetched) error {
	blocks := make([]store.Block, len(group))
	for i, q := range group {
		blocks[i] = store.Block{CID: q.c, Data: q.data}
	}
	if err := r.t.local.PutMany(ctx, blocks); err != nil {
		return err
	}
	if r.t.o.CacheBytes < 0 {
		return nil
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	return r.t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		for _, q := range group {
			r.seq++
			if err := txn.Set(cacheKey(r.seq), cacheVal(q.c, len(q.data))); err != nil {
				return err
			}
			r.cached += int64(len(q.data))
		}
		return nil
	})
}

func cacheKey(seq uint64) string { return fmt.Sprintf("%s%016x", keyCache, seq) }

func cacheVal(c cid.Cid, size int) []byte {
	v := binary.AppendUvarint(nil, uint64(size))
	return append(v, c.Bytes()...)
}

func parseCacheVal(v []byte) (cid.Cid, int64, error) {
	size, n := binary.Uvarint(v)
	if n <= 0 {
		return cid.Undef, 0, errors.New("bad cache record")
	}
	c, err := cid.Cast(v[n:])
	return c, int64(size), err
}

// loadCacheSize sums the cache list left by earlier runs.
func (r *reader) loadCacheSize(ctx context.Context) error {
	return r.t.local.ScanMeta(ctx, keyCache, func(key string, v []byte) error {
		var seq uint64
		fmt.Sscanf(key[len(keyCache):], "%x", &seq)
		if seq > r.seq {
			r.seq = seq
		}
		if _, size, err := parseCacheVal(v); err == nil {
			r.cached += size
		}
		return nil
	})
}

// evict drops the oldest fetched blocks while the cache is over budget.
// They stay in the bucket and are fetched again when read.
func (r *reader) evict(ctx context.Context) error {
	if r.t.o.CacheBytes < 0 {
		return nil
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if r.cached <= r.t.o.CacheBytes {
		return nil
	}
	type victim struct {
		key  string
		c    cid.Cid
		size int64
	}
	var vs []victim
	over := r.cached - r.t.o.CacheBytes*9/10 // evict down to 90% so that evictions batch
	errStop := errors.New("stop")
	err := r.t.local.ScanMeta(ctx, keyCache, func(key string, v []byte) error {
		c, size, err := parseCacheVal(v)
		if err != nil {
			vs = append(vs, victim{key: key})
			return nil
		}
		vs = append(vs, victim{key: key, c: c, size: size})
		over -= size
		if over <= 0 {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	for _, v := range vs {
		if v.c.Defined() {
			if err := r.t.local.Delete(ctx, v.c); err != nil {
				return err
			}
			r.t.st.evicted.Add(1)
		}
		r.cached -= v.size
	}
	return r.t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		for _, v := range vs {
			if err := txn.Delete(v.key); err != nil {
				return err
			}
		}
		return nil
	})
}
