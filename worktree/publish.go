package worktree

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// published is a file content ready to be recorded: its blocks are
// committed to the store but maybe not yet durable.
type published struct {
	cid   cid.Cid
	size  uint64
	tsize uint64
}

// publisher records new file contents in the persisted namespace only after
// a store sync has made their blocks durable, so that after a crash or power
// cut no name points at missing blocks: a file shows its old content until
// the new one is published.
type publisher struct {
	mu       sync.Mutex // guards pending and inflight
	pending  map[uint64]published
	inflight map[uint64]published // taken from pending, not yet recorded (GC roots too)
	cycle    sync.Mutex           // one publication at a time
	done     chan struct{}
	stopped  chan struct{}
}

func (p *publisher) start(t *Tree, every time.Duration) {
	p.pending = map[uint64]published{}
	p.done = make(chan struct{})
	p.stopped = make(chan struct{})
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
				if err := p.publishNow(context.Background(), t); err != nil {
					t.log.Error("publishing file contents", "err", err)
				}
			}
		}
	}()
}

func (p *publisher) stop() {
	close(p.done)
	<-p.stopped
}

func (p *publisher) queue(ino uint64, v published) {
	p.mu.Lock()
	p.pending[ino] = v
	p.mu.Unlock()
}

func (p *publisher) drop(ino uint64) {
	p.mu.Lock()
	delete(p.pending, ino)
	p.mu.Unlock()
}

// publishNow syncs the store, then records every content queued before the
// sync began.
func (p *publisher) publishNow(ctx context.Context, t *Tree) error {
	p.cycle.Lock()
	defer p.cycle.Unlock()
	p.mu.Lock()
	batch := p.pending
	p.pending = map[uint64]published{}
	p.inflight = batch
	p.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	// Cleared once the batch is recorded (or back in pending).
	defer func() {
		p.mu.Lock()
		p.inflight = nil
		p.mu.Unlock()
	}()
	requeue := func() {
		p.mu.Lock()
		for ino, v := range batch {
			if _, newer := p.pending[ino]; !newer {
				p.pending[ino] = v
			}
		}
		p.mu.Unlock()
	}
	if err := t.s.Sync(); err != nil {
		requeue()
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	var c change
	for ino, v := range batch {
		in, ok := t.inodes[ino]
		if !ok || in.rec.Nlink == 0 && in.opens == 0 {
			continue // removed meanwhile
		}
		r := c.rec(in)
		r.Content, r.Size, r.Tsize = "", v.size, v.tsize
		if v.size > 0 {
			r.Content = v.cid.String()
		}
	}
	t.mu.Unlock()
	// Written in transactions of bounded size; each is applied once written.
	for len(c.order) > 0 {
		n := min(len(c.order), metaBatch)
		part := change{recs: c.recs, order: c.order[:n]}
		if err := t.write(ctx, &part, nil); err != nil {
			requeue()
			return err
		}
		t.mu.Lock()
		for _, in := range part.order {
			r := c.recs[in.rec.Ino]
			in.rec.Content, in.rec.Size, in.rec.Tsize = r.Content, r.Size, r.Tsize
		}
		t.mu.Unlock()
		c.order = c.order[n:]
	}
	return nil
}

// Fsync makes ino's content and name durable.
func (t *Tree) Fsync(ctx context.Context, ino uint64) error {
	if err := t.Flush(ctx, ino); err != nil {
		return err
	}
	return t.Sync(ctx)
}

// Sync publishes every queued content and makes all metadata durable.
func (t *Tree) Sync(ctx context.Context) error {
	if err := t.pub.publishNow(ctx, t); err != nil {
		return err
	}
	return t.s.Sync()
}

// FlushAll flushes every file with unflushed writes.
func (t *Tree) FlushAll(ctx context.Context) error {
	t.changedMu.Lock()
	inos := make([]uint64, 0, len(t.unflushed))
	for ino := range t.unflushed {
		inos = append(inos, ino)
	}
	clear(t.unflushed)
	t.changedMu.Unlock()
	var first error
	for _, ino := range inos {
		err := t.Flush(ctx, ino)
		if errors.Is(err, ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			t.written(ino) // try again next time
			if first == nil {
				first = err
			}
		}
	}
	return first
}
