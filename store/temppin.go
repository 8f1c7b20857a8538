package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Temporary pins keep garbage collection away from blocks that a writer has
// stored (or found already stored) but not yet linked from anything GC
// marks: a file being imported, a commit whose index entry is not written
// yet, a DAG open for reading. They live in memory only, so a crash drops
// them with their holders.
//
// The protocol with a GC run (BeginGC):
//   - every block a Batch puts, or skips because it is present, is recorded
//     in the batch's TempPin before the presence check, under a shared lock
//     that a sweep takes exclusively while it filters and deletes;
//   - from BeginGC to End, every record also goes to the run's live set, and
//     BeginGC seeds that set with what every open TempPin recorded so far;
//   - a sweep deletes no block in the live set, and walks the DAG nodes and
//     roots that entered it before deleting anything more.
//
// So a block a writer counts on is either recorded before the sweep's filter
// (kept) or looked up after the delete committed (absent: the writer stores
// it again).

// ErrGCRunning is returned by BeginGC while another collection runs.
var ErrGCRunning = errors.New("a garbage collection is already running")

// tracker is the store's registry of temporary pins and the running GC.
type tracker struct {
	// sweep is held shared by a writer around recording a block and
	// checking its presence, and exclusively by a sweep deleting a batch.
	sweep sync.RWMutex

	mu   sync.Mutex
	pins map[*TempPin]struct{}
	gc   *GCSession // nil when no GC runs
}

// TempPin protects blocks and DAG roots from garbage collection until
// Release. Safe for concurrent use.
type TempPin struct {
	s *Badger

	mu   sync.Mutex
	keys map[string]struct{} // multihashes recorded
	walk []cid.Cid           // recorded blocks that link to others, and roots
}

// TempPin registers a new temporary pin.
func (s *Badger) TempPin() *TempPin {
	p := &TempPin{s: s, keys: map[string]struct{}{}}
	t := &s.track
	t.mu.Lock()
	if t.pins == nil {
		t.pins = map[*TempPin]struct{}{}
	}
	t.pins[p] = struct{}{}
	t.mu.Unlock()
	return p
}

// Protect keeps the whole DAG under root: a reference the holder is about
// to record (a pin, a commit) or is reading through.
func (p *TempPin) Protect(root cid.Cid) {
	if !root.Defined() || root.Prefix().MhType == mh.IDENTITY {
		return
	}
	p.mu.Lock()
	p.walk = append(p.walk, root)
	p.mu.Unlock()
	// Like a writer's record: a sweep batch either sees the root or ran
	// before it (and then deleted only what was garbage before the pin).
	p.s.track.sweep.RLock()
	defer p.s.track.sweep.RUnlock()
	if g := p.s.track.current(); g != nil {
		g.addRoot(root)
	}
}

// record notes a block a batch of this pin put or found present. The
// caller holds the tracker's sweep lock shared.
func (p *TempPin) record(c cid.Cid) {
	key := string(c.Hash())
	p.mu.Lock()
	_, seen := p.keys[key]
	if !seen {
		p.keys[key] = struct{}{}
		if c.Prefix().Codec != cid.Raw {
			p.walk = append(p.walk, c)
		}
	}
	p.mu.Unlock()
	if seen {
		return // recorded in the live set too, if a GC began since
	}
	if g := p.s.track.current(); g != nil {
		g.addBlock(c)
	}
}

// Release drops the pin. Calling it again does nothing.
func (p *TempPin) Release() {
	t := &p.s.track
	t.mu.Lock()
	delete(t.pins, p)
	t.mu.Unlock()
	p.mu.Lock()
	p.keys, p.walk = map[string]struct{}{}, nil // a late record still reaches a running GC
	p.mu.Unlock()
}

func (t *tracker) current() *GCSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gc
}

// GCSession is one garbage collection's view of the writers: the blocks
// and roots they touched since it began. Only one runs per store.
type GCSession struct {
	s *Badger

	mu    sync.Mutex
	live  map[string]struct{} // multihashes no sweep may delete
	walks []cid.Cid           // to be walked (marked with descendants) before the next delete
}

// BeginGC starts a collection: from now until End, every block a writer
// touches is live, and so is everything open temporary pins hold. Call it
// before reading any root.
func (s *Badger) BeginGC() (*GCSession, error) {
	t := &s.track
	t.mu.Lock()
	if t.gc != nil {
		t.mu.Unlock()
		return nil, ErrGCRunning
	}
	g := &GCSession{s: s, live: map[string]struct{}{}}
	t.gc = g
	pins := make([]*TempPin, 0, len(t.pins))
	for p := range t.pins {
		pins = append(pins, p)
	}
	t.mu.Unlock()
	// A record racing with this either lands in the pin before the copy or
	// sees t.gc afterwards.
	for _, p := range pins {
		p.mu.Lock()
		g.mu.Lock() // writers may add to g already
		for k := range p.keys {
			g.live[k] = struct{}{}
		}
		g.walks = append(g.walks, p.walk...)
		g.mu.Unlock()
		p.mu.Unlock()
	}
	return g, nil
}

// End finishes the collection.
func (g *GCSession) End() {
	t := &g.s.track
	t.mu.Lock()
	if t.gc == g {
		t.gc = nil
	}
	t.mu.Unlock()
}

func (g *GCSession) addBlock(c cid.Cid) {
	g.mu.Lock()
	g.live[string(c.Hash())] = struct{}{}
	if c.Prefix().Codec != cid.Raw {
		g.walks = append(g.walks, c)
	}
	g.mu.Unlock()
}

func (g *GCSession) addRoot(c cid.Cid) {
	g.mu.Lock()
	g.live[string(c.Hash())] = struct{}{}
	g.walks = append(g.walks, c)
	g.mu.Unlock()
}

// TakeWalks returns the DAG nodes and roots that writers touched since the
// last call; the collector marks them with their descendants.
func (g *GCSession) TakeWalks() []cid.Cid {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.walks
	g.walks = nil
	return w
}

// Live reports whether a writer touched the block during this collection.
func (g *GCSession) Live(c cid.Cid) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.live[string(c.Hash())]
	return ok
}

// ErrWalksPending means writers touched DAG nodes since the last TakeWalks:
// walk them and call DeleteBlocks again.
var ErrWalksPending = errors.New("store: roots to walk arrived")

// DeleteBlocks deletes the given blocks except those keep reports or that a
// writer touched, in one transaction (keep the slice bounded: a few
// thousand). Writers' presence checks wait meanwhile. It returns the blocks
// deleted, or ErrWalksPending and deletes nothing.
func (g *GCSession) DeleteBlocks(ctx context.Context, cands []cid.Cid, keep func(cid.Cid) bool) ([]cid.Cid, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := &g.s.track
	t.sweep.Lock()
	defer t.sweep.Unlock()
	g.s.writes.RLock()
	defer g.s.writes.RUnlock()
	// Writers record only under the sweep lock, shared: the live set
	// cannot change until the deletes are committed.
	g.mu.Lock()
	if len(g.walks) > 0 {
		g.mu.Unlock()
		return nil, ErrWalksPending
	}
	del := make([]cid.Cid, 0, len(cands))
	for _, c := range cands {
		if _, live := g.live[string(c.Hash())]; !live && !keep(c) {
			del = append(del, c)
		}
	}
	g.mu.Unlock()
	deleted := make([]cid.Cid, 0, len(del))
	txn := g.s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, c := range del {
		// The block and its delta record, if it has one.
		for _, key := range [][]byte{blockKey(c.Hash()), deltaKey(c.Hash())} {
			err := txn.Delete(key)
			if errors.Is(err, badger.ErrTxnTooBig) {
				if err = txn.Commit(); err != nil {
					return nil, fmt.Errorf("store: gc delete: %w", err)
				}
				txn = g.s.db.NewTransaction(true)
				err = txn.Delete(key)
			}
			if err != nil {
				return nil, fmt.Errorf("store: gc delete %s: %w", c, err)
			}
		}
		deleted = append(deleted, c)
	}
	if err := txn.Commit(); err != nil {
		return nil, fmt.Errorf("store: gc delete: %w", err)
	}
	return deleted, nil
}
