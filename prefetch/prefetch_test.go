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
	wait := func() {
		for !idle(st) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	st.Access(35*mib, 4096) // the last tensor, then going backwards
	st.Access(25*mib, 4096)
	wait()
	if src.was(15 * mib) {
		t.Errorf("one step back warmed the tensor before it")
	}
	st.Access(15*mib, 4096) // the second step: the next tensor that way is warmed too
	wait()
	st.Close()
	for _, want := range []int64{36 * mib, 39 * mib, 26 * mib, 29 * mib, 16 * mib, 19 * mib, 5 * mib} {
		if !src.was(want) {
			t.Errorf("unit at %d MiB not warmed", want/mib)
		}
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

// tensorsOf lays out n tensors of varied sizes after a small header, as
// groups in file order.
func tensorsOf(n int, size func(i int) int64) []Range {
	g := make([]Range, 0, n)
	off := int64(4096)
	for i := range n {
		g = append(g, Range{off, off + size(i)})
		off += size(i)
	}
	return g
}

// loadTensors reads the given tensors the way safetensors' mmap loader
// does: the header first, then each tensor in 128 KiB faults. After the
// first fault of a tensor it lets the warms in flight finish, as a disk
// faster than the copy out of the faults would.
func loadTensors(st *Stream, groups []Range, order []int) {
	st.Access(0, 4096)
	for _, g := range order {
		r := groups[g]
		for off := r.Off; off < r.End; off += 128 << 10 {
			st.Access(off, min(128<<10, r.End-off))
			if off == r.Off {
				for !idle(st) {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}
	}
}

// The prefetcher fetches what is read: on a sequential read (kernel
// readahead order) and on a safetensors load in file order, in name order
// (jumping around the file), and by eight ranks each loading an eighth of
// the tensors. Its counters add up: what was fetched was used or wasted.
func TestFetchedIsWhatIsRead(t *testing.T) {
	sizes := func(i int) int64 { return int64(1+i%5)*mib + int64(i%3)*300<<10 }
	groups := tensorsOf(64, sizes)
	size := groups[len(groups)-1].End
	fileOrder := make([]int, len(groups))
	for i := range fileOrder {
		fileOrder[i] = i
	}
	nameOrder := append([]int(nil), fileOrder...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(nameOrder), func(i, j int) {
		nameOrder[i], nameOrder[j] = nameOrder[j], nameOrder[i]
	})
	tests := []struct {
		name    string
		readers int
		read    func(st *Stream, rank int)
		groups  bool
		minUsed float64 // of what was read
	}{
		{"sequential read", 1, func(st *Stream, _ int) {
			readSeq(st, size, func() {
				for !idle(st) {
					time.Sleep(50 * time.Microsecond)
				}
			})
		}, false, 0.8},
		{"safetensors load, file order", 1, func(st *Stream, _ int) { loadTensors(st, groups, fileOrder) }, true, 0.8},
		{"safetensors load, name order", 1, func(st *Stream, _ int) { loadTensors(st, groups, nameOrder) }, true, 0.5},
		{"eight ranks, an eighth each, name order", 8, func(st *Stream, rank int) {
			var mine []int
			for k, g := range nameOrder {
				if k%8 == rank {
					mine = append(mine, g)
				}
			}
			loadTensors(st, groups, mine)
		}, true, 0.3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Options{Workers: 4})
			src := newSource(0)
			var gf func() []Range
			if tc.groups {
				gf = func() []Range { return groups }
			}
			var wg sync.WaitGroup
			for r := range tc.readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := p.Open(src, size, gf)
					defer st.Close()
					tc.read(st, r)
				}()
			}
			wg.Wait()
			p.Close()
			s := p.Stats()
			t.Logf("read %d MiB, fetched %d MiB, used %d MiB, wasted %d MiB; %+v",
				s.ReadBytes/mib, s.FetchedBytes/mib, s.UsedBytes/mib, s.WastedBytes/mib, s)
			if s.ReadBytes < size*int64(1)/int64(max(tc.readers, 1))/2 {
				t.Fatalf("read only %d of %d bytes", s.ReadBytes, size)
			}
			if s.FetchedBytes == 0 {
				t.Fatalf("nothing prefetched")
			}
			if float64(s.FetchedBytes) > 1.5*float64(s.ReadBytes) {
				t.Errorf("fetched %d bytes to serve %d read (%.2f×, want ≤ 1.5×)",
					s.FetchedBytes, s.ReadBytes, float64(s.FetchedBytes)/float64(s.ReadBytes))
			}
			if s.UsedBytes+s.WastedBytes != s.FetchedBytes {
				t.Errorf("used %d + wasted %d != fetched %d", s.UsedBytes, s.WastedBytes, s.FetchedBytes)
			}
			if float64(s.UsedBytes) < tc.minUsed*float64(s.FetchedBytes) {
				t.Errorf("only %d of %d fetched bytes were used", s.UsedBytes, s.FetchedBytes)
			}
			var warmed int64
			src.mu.Lock()
			for _, n := range src.warmed {
				if n > tc.readers {
					t.Errorf("a unit was warmed %d times by %d streams", n, tc.readers)
					break
				}
				warmed += int64(n)
			}
			src.mu.Unlock()
			if s.FetchedBytes > warmed*mib || s.FetchedBytes < (warmed-int64(tc.readers))*mib {
				t.Errorf("counters say %d bytes fetched, the source warmed %d units", s.FetchedBytes, warmed)
			}
		})
	}
}

// Groups that claim bytes past the end of the file (a damaged header) are
// cut at the end.
func TestGroupsPastTheEnd(t *testing.T) {
	p := New(Options{})
	defer p.Close()
	src := newSource(0)
	st := p.Open(src, 8*mib, func() []Range { return []Range{{-mib, 2 * mib}, {2 * mib, 900 * mib}} })
	st.Access(4096, 4096)
	for {
		st.mu.Lock()
		n := len(st.groups)
		st.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	st.Access(3*mib, 4096)
	for !idle(st) {
		time.Sleep(100 * time.Microsecond)
	}
	st.Close()
	if s := p.Stats(); s.FetchedBytes > 8*mib {
		t.Errorf("fetched %d bytes of an 8 MiB file", s.FetchedBytes)
	}
}
