// Package prefetch reads ahead of the readers of open files. Each open file
// gets a Stream that watches its reads: a sequential reader gets a window of
// the next bytes warmed ahead of it, growing while it stays sequential; in a
// file with groups (the tensors of a safetensors file) the first touch of a
// group warms the whole group and the next one. Warming runs on a pool of
// workers, so that many reads are in flight at once, within one byte budget
// shared by all streams: a range counts against it from when it is
// scheduled until its reader has read it or moved away.
package prefetch

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
)

// Source is the content of one open file.
type Source interface {
	// Warm makes [off, off+n) cheap to read soon: fetched from disk and
	// verified. It must be safe to call concurrently.
	Warm(ctx context.Context, off, n int64) error
}

// Range is a byte range [Off, End) of a file.
type Range struct{ Off, End int64 }

// Options tunes a Prefetcher; zero fields take the defaults.
type Options struct {
	Workers   int   // warms in flight at once (default 8)
	Budget    int64 // bytes scheduled and not yet read, all streams together (default 256 MiB)
	Unit      int64 // bytes per warm (default 1 MiB)
	MaxWindow int64 // how far a sequential stream reads ahead (default 64 MiB)
	// ReadAround is the kernel's readahead on the mount (default 16 MiB,
	// what fusefs sets): a run of reads shorter than twice this may be
	// the kernel reading around one page fault, not the reader going on.
	ReadAround int64
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Unit <= 0 {
		o.Unit = 1 << 20
	}
	if o.Budget <= 0 {
		o.Budget = 256 << 20
	}
	if o.Budget < o.Unit {
		o.Budget = o.Unit
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = 64 << 20
	}
	if o.ReadAround <= 0 {
		o.ReadAround = 16 << 20
	}
	return o
}

// Stats counts what the prefetcher did. A read is a hit when every unit it
// covers had been warmed before it came.
//
// FetchedBytes is what the workers actually warmed (a unit cancelled
// before its turn is not fetched); UsedBytes the part of it in units that a
// read then touched; ReadBytes what the readers asked for. A stream never
// fetches a unit twice, so FetchedBytes ≤ ReadBytes + what was read ahead
// and dropped (WastedBytes).
type Stats struct {
	Hits, Misses  int64 // reads
	ReadBytes     int64 // bytes asked for by the reads seen
	FetchedBytes  int64 // bytes warmed
	UsedBytes     int64 // bytes of warmed units that were then read
	WastedBytes   int64 // bytes of warmed units dropped unread
	Issued        int64 // units scheduled
	Useful        int64 // units read after they were warmed (or while warming)
	Wasted        int64 // units warmed and dropped unread
	Cancelled     int64 // units scheduled and dropped before their warm began
	Failed        int64 // warms that returned an error (the read reports it)
	OverBudget    int64 // units not scheduled for lack of budget
	BudgetInUse   int64 // bytes
	BudgetPeak    int64 // bytes
	Budget        int64 // bytes
	Unit          int64 // bytes per unit
	StreamsActive int64
}

// Prefetcher is the worker pool and budget shared by the streams of one
// mount.
type Prefetcher struct {
	o      Options
	jobs   chan job
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once

	used, peak                                                         atomic.Int64
	hits, misses, issued, useful, wasted, cancelled, failed, overLimit atomic.Int64
	readBytes, fetchedBytes, usedBytes, wastedBytes                    atomic.Int64
	streams                                                            atomic.Int64
}

type job struct {
	s *Stream
	i int64 // unit index
}

// New starts a Prefetcher's workers; Close stops them.
func New(o Options) *Prefetcher {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prefetcher{o: o, ctx: ctx, cancel: cancel,
		jobs: make(chan job, 2*o.Budget/o.Unit+int64(o.Workers))}
	for range o.Workers {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

// Close stops the workers; warms in progress are cancelled, and streams
// still open stop prefetching.
func (p *Prefetcher) Close() {
	p.closed.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
}

// Stats returns the counters so far.
func (p *Prefetcher) Stats() Stats {
	return Stats{
		Hits: p.hits.Load(), Misses: p.misses.Load(), ReadBytes: p.readBytes.Load(),
		FetchedBytes: p.fetchedBytes.Load(), UsedBytes: p.usedBytes.Load(), WastedBytes: p.wastedBytes.Load(),
		Issued: p.issued.Load(), Useful: p.useful.Load(), Wasted: p.wasted.Load(),
		Cancelled: p.cancelled.Load(), Failed: p.failed.Load(),
		OverBudget: p.overLimit.Load(), BudgetInUse: p.used.Load(), BudgetPeak: p.peak.Load(),
		Budget: p.o.Budget, Unit: p.o.Unit, StreamsActive: p.streams.Load(),
	}
}

// reserve takes one unit of budget if there is one.
func (p *Prefetcher) reserve() bool {
	for {
		u := p.used.Load()
		if u+p.o.Unit > p.o.Budget {
			p.overLimit.Add(1)
			return false
		}
		if p.used.CompareAndSwap(u, u+p.o.Unit) {
			for {
				pk := p.peak.Load()
				if u+p.o.Unit <= pk || p.peak.CompareAndSwap(pk, u+p.o.Unit) {
					return true
				}
			}
		}
	}
}

func (p *Prefetcher) work() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case j := <-p.jobs:
			j.s.run(p.ctx, j.i)
		}
	}
}

// Open starts watching the reads of one open file of the given size.
// groups, when not nil, is called once, in the background after the first
// read past the start of the file, and returns the file's groups sorted by
// offset (nil: none).
func (p *Prefetcher) Open(src Source, size int64, groups func() []Range) *Stream {
	p.streams.Add(1)
	nunits := (size + p.o.Unit - 1) / p.o.Unit
	return &Stream{p: p, src: src, size: size, groupsFn: groups, units: map[int64]*unit{}, group: -1,
		seen: make([]uint64, (nunits+63)/64)}
}

// Stream is the read-ahead state of one open file.
type Stream struct {
	p        *Prefetcher
	src      Source
	size     int64
	groupsFn func() []Range

	mu     sync.Mutex
	groups []Range
	units  map[int64]*unit // scheduled and not yet released, by index
	// seen marks the units scheduled once, or read whole, by this stream:
	// none is scheduled again, so a stream fetches each byte at most once
	// (kernel readahead reads out of order; without this a unit released
	// by a later read was scheduled again by an earlier one).
	seen     []uint64
	runStart int64 // start of the sequential run so far
	lastEnd  int64 // end of the sequential run so far
	window   int64
	group    int // the group last read, -1 for none
	dir      int // +1 or -1: the way the reader went from group to neighbouring group; 0 after a jump
	steps    int // how many such steps in a row
	closed   bool
}

type unit struct {
	running, done, failed, read bool
	orphan                      bool // released while running: the worker gives its budget back
}

func (s *Stream) isSeen(i int64) bool { return s.seen[i/64]&(1<<(i%64)) != 0 }
func (s *Stream) markSeen(i int64)    { s.seen[i/64] |= 1 << (i % 64) }

// unitLen is the byte length of unit i (the last one may be short).
func (s *Stream) unitLen(i int64) int64 {
	us := s.p.o.Unit
	return min(us, s.size-i*us)
}

// run warms unit i; called by a worker.
func (s *Stream) run(ctx context.Context, i int64) {
	s.mu.Lock()
	u, ok := s.units[i]
	if !ok || u.running {
		s.mu.Unlock()
		return // released before its turn, or a stale job for a rescheduled unit
	}
	u.running = true
	s.mu.Unlock()
	off := i * s.p.o.Unit
	s.p.fetchedBytes.Add(s.unitLen(i))
	err := s.src.Warm(ctx, off, s.unitLen(i))
	s.mu.Lock()
	defer s.mu.Unlock()
	u.done = true
	if err != nil {
		u.failed = true
		s.p.failed.Add(1)
	}
	if u.orphan {
		s.p.used.Add(-s.p.o.Unit)
	}
}

// Access records a read of [off, off+n) and schedules what should be
// warmed next. It never waits for a warm.
func (s *Stream) Access(off, n int64) {
	if n <= 0 || off >= s.size {
		return
	}
	end := min(off+n, s.size)
	us := s.p.o.Unit
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.groupsFn != nil && off > 0 {
		fn := s.groupsFn
		s.groupsFn = nil
		go func() { // it may read the file: never in the reader's way
			g := fn()
			s.mu.Lock()
			s.groups = g
			s.mu.Unlock()
		}()
	}

	// Count the read, and release what it has read. A unit read whole
	// before its warm began is not warmed at all: the read fetched it.
	s.p.readBytes.Add(end - off)
	hit := true
	for i := off / us; i*us < end; i++ {
		if i*us >= off && ((i+1)*us <= end || end == s.size) {
			s.markSeen(i) // read whole: the read fetched it
		}
		u, ok := s.units[i]
		if !ok || !u.done || u.failed {
			hit = false
		}
		if !ok {
			continue
		}
		if u.running || u.done {
			u.read = true
		}
		if (i+1)*us <= end || end == s.size {
			s.release(i)
		}
	}
	if hit {
		s.p.hits.Add(1)
	} else {
		s.p.misses.Add(1)
	}

	// Kernel readahead sends several reads of one window at once, out of
	// order: anything within the current window counts as sequential.
	// The window is, like the kernel's own readahead, twice what has
	// been read in order so far, once that is a unit: a short run (a
	// header, a reader about to jump) fetches nothing ahead.
	slack := max(s.window, 4*us)
	if off >= s.lastEnd-slack && off <= s.lastEnd+slack {
		s.lastEnd = max(s.lastEnd, end)
		s.runStart = min(s.runStart, off)
		if run := s.lastEnd - s.runStart; run >= us {
			s.window = min(2*run, s.p.o.MaxWindow)
		}
		s.dropOutside(off-slack, off+2*s.p.o.MaxWindow)
	} else {
		s.dropOutside(off, off+2*s.p.o.MaxWindow)
		s.window = 0
		s.runStart, s.lastEnd = off, end
	}
	g, inGroup := s.groupAt(off)
	if inGroup && g != s.group {
		// Going from tensor to neighbouring tensor twice in a row (in
		// a run longer than the kernel's read-around, when forwards)
		// is reading in file order; the kernel reading around a fault
		// crosses small tensors too, and a reader in name order (or
		// one rank's share) jumps.
		switch {
		case g == s.group+1 && s.dir >= 0:
			s.dir, s.steps = 1, s.steps+1
		case g == s.group-1 && s.dir <= 0:
			s.dir, s.steps = -1, s.steps+1
		case g == s.group+1 || g == s.group-1:
			s.dir, s.steps = g-s.group, 1
		default:
			s.dir, s.steps = 0, 0
		}
		s.group = g
	}
	inOrder := inGroup && s.steps >= 2 && (s.dir < 0 || s.lastEnd-s.runStart >= 2*s.p.o.ReadAround)
	if s.window > 0 && (!inGroup || inOrder && s.dir > 0) {
		// Inside a tensor the window runs on past it only for a reader
		// in file order: it would fetch the neighbours of one that
		// jumps.
		s.schedule(end, min(s.lastEnd+s.window, s.size))
	}
	if inGroup {
		// A tensor is read whole once touched: warm it, and for a
		// reader in file order the next one its way.
		limit := end + 2*s.p.o.MaxWindow
		s.schedule(end, min(s.groups[g].End, limit))
		if next := g + s.dir; inOrder && next >= 0 && next < len(s.groups) {
			s.schedule(s.groups[next].Off, min(s.groups[next].End, limit))
		}
	}
}

// groupAt finds the group holding off.
func (s *Stream) groupAt(off int64) (int, bool) {
	g := sort.Search(len(s.groups), func(i int) bool { return s.groups[i].End > off })
	return g, g < len(s.groups) && s.groups[g].Off <= off
}

// schedule warms the units overlapping [from, to) that are not scheduled
// yet, in order, while the budget lasts. Called with mu held.
func (s *Stream) schedule(from, to int64) {
	us := s.p.o.Unit
	to = min(to, s.size) // groups come from the file's header: never trust them past its end
	for i := max(from, 0) / us; i*us < to; i++ {
		if s.isSeen(i) {
			continue
		}
		if !s.p.reserve() {
			return
		}
		select {
		case s.p.jobs <- job{s: s, i: i}:
		default: // full of jobs for units released since: try later
			s.p.used.Add(-us)
			return
		}
		s.units[i] = &unit{}
		s.markSeen(i)
		s.p.issued.Add(1)
	}
}

// release gives unit i's budget back. Called with mu held.
func (s *Stream) release(i int64) {
	u := s.units[i]
	delete(s.units, i)
	if u.running && !u.done {
		u.orphan = true
	} else {
		s.p.used.Add(-s.p.o.Unit)
	}
	switch {
	case !u.running && !u.done:
		s.p.cancelled.Add(1)
	case u.read:
		s.p.useful.Add(1)
		s.p.usedBytes.Add(s.unitLen(i))
	default:
		s.p.wasted.Add(1)
		s.p.wastedBytes.Add(s.unitLen(i))
	}
}

// dropOutside releases the units that end before lo (the reader has gone
// past them), and those starting after hi (so far ahead that the reader
// will not reach them soon). Called with mu held.
func (s *Stream) dropOutside(lo, hi int64) {
	us := s.p.o.Unit
	for i := range s.units {
		if (i+1)*us <= lo || i*us > hi {
			s.release(i)
		}
	}
}

// Close releases the stream's budget; warms still queued are skipped.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for i := range s.units {
		s.release(i)
	}
	s.p.streams.Add(-1)
}
