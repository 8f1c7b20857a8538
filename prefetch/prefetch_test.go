package prefetch

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// source records what was warmed and how many bytes were being warmed at
// once; each warm holds a buffer of its size while it works.
type source struct {
	mu         sync.Mutex
	warmed     map[int64]int
	live, peak atomic.Int64
	delay      time.Duration
}

func newSource(delay time.Duration) *source { return &source{warmed: map[int64]int{}, delay: delay} }

func (s *source) Warm(ctx context.Context, off, n int64) error {
	buf := make([]byte, n)
	l := s.live.Add(n)
	for {
		p := s.peak.Load()
		if l <= p || s.peak.CompareAndSwap(p, l) {
			break
		}
	}
	time.Sleep(s.delay)
	buf[0], buf[n-1] = 1, 1
	s.live.Add(-n)
	s.mu.Lock()
	s.warmed[off]++
	s.mu.Unlock()
	return ctx.Err()
}

func (s *source) was(off int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warmed[off] > 0
}

const mib = 1 << 20

// readSeq reads a stream the way the kernel's readahead does: reads of 1
// MiB, several in flight, in a shuffled order within each batch.
func readSeq(st *Stream, size int64, each func()) {
	for off := int64(0); off < size; off += 4 * mib {
		batch := []int64{off, off + mib, off + 2*mib, off + 3*mib}
		rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, o := range batch {
			if o < size {
				st.Access(o, mib)
				each()
			}
		}
	}
}

func TestBudgetUnderParallelReaders(t *testing.T) {
	tests := []struct {
		name   string
		budget int64
		groups bool
	}{
		{"small budget", 8 * mib, false},
		{"default budget", 0, false},
		{"tensor groups", 16 * mib, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Options{Budget: tc.budget, Workers: 8})
			src := newSource(200 * time.Microsecond)
			const size = 96 * mib
			var groups func() []Range
			if tc.groups {
				groups = func() []Range {
					var g []Range
					for off := int64(64); off < size; off += 7 * mib {
						g = append(g, Range{off, min(off+7*mib, size)})
					}
					return g
				}
			}
			var wg sync.WaitGroup
			for r := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := p.Open(src, size, groups)
					defer st.Close()
					read := func() { time.Sleep(100 * time.Microsecond) } // the read itself
					if r%2 == 0 {
						readSeq(st, size, read)
						return
					}
					for range 200 { // random readers
						st.Access(rand.Int64N(size), 4096)
						read()
					}
				}()
			}
			wg.Wait()
			p.Close()
			st := p.Stats()
			if st.BudgetPeak > st.Budget {
				t.Errorf("budget peak %d > budget %d", st.BudgetPeak, st.Budget)
			}
			if pk := src.peak.Load(); pk > st.Budget {
				t.Errorf("bytes being warmed at once peaked at %d > budget %d", pk, st.Budget)
			}
			if st.BudgetInUse != 0 {
				t.Errorf("budget still in use after every stream closed: %d", st.BudgetInUse)
			}
			if st.StreamsActive != 0 {
				t.Errorf("%d streams still active", st.StreamsActive)
			}
			if st.Issued == 0 || src.peak.Load() == 0 {
				t.Errorf("nothing was prefetched: %+v", st)
			}
			t.Logf("%+v, source peak %d", st, src.peak.Load())
		})
	}
}

// idle reports whether every unit st has scheduled is warmed.
func idle(st *Stream) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, u := range st.units {
		if !u.done {
			return false
		}
	}
	return true
}

// A sequential reader that leaves the warms time to finish gets hits.
func TestSequentialHits(t *testing.T) {
	p := New(Options{})
	defer p.Close()
	src := newSource(0)
	const size = 64 * mib
	st := p.Open(src, size, nil)
	readSeq(st, size, func() { // the reader is slower than the warms
		for !idle(st) {
			time.Sleep(100 * time.Microsecond)
		}
	})
	st.Close()
	s := p.Stats()
	if s.Hits == 0 || s.Useful == 0 {
		t.Fatalf("no hits for a sequential reader: %+v", s)
	}
	if s.Misses > 8 {
		t.Errorf("a sequential reader missed %d times: %+v", s.Misses, s)
	}
}

// Touching a tensor warms all of it and the next tensor, in the reader's
// direction; a random reader without groups gets no read-ahead.
func TestGroups(t *testing.T) {
	p := New(Options{MaxWindow: 64 * mib, Budget: 64 * mib})
	defer p.Close()
	src := newSource(0)
	groups := []Range{{8, 10 * mib}, {10 * mib, 20 * mib}, {20 * mib, 30 * mib}, {30 * mib, 40 * mib}}
	st := p.Open(src, 40*mib, func() []Range { return groups })
	st.Access(4096, 4096) // past the header: the groups are read
	for {
		st.mu.Lock()
		n := len(st.groups)
		st.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	st.Access(35*mib, 4096) // the last tensor, then going backwards
	st.Access(25*mib, 4096)
	for !idle(st) {
		time.Sleep(100 * time.Microsecond)
	}
	st.Close()
	for _, want := range []int64{36 * mib, 39 * mib, 26 * mib, 29 * mib, 10 * mib, 19 * mib} {
		if !src.was(want) {
			t.Errorf("unit at %d MiB not warmed", want/mib)
		}
	}
	if src.was(5 * mib) {
		t.Errorf("warmed the middle of the first tensor, which the reader did not go towards")
	}

	p2 := New(Options{})
	defer p2.Close()
	src2 := newSource(0)
	st2 := p2.Open(src2, 400*mib, nil)
	for _, off := range []int64{300, 10, 200, 50, 120} {
		st2.Access(off*mib, 4096)
	}
	st2.Close()
	if n := p2.Stats().Issued; n != 0 {
		t.Errorf("random reads without groups scheduled %d units", n)
	}
}
