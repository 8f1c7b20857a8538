package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
)

func openStore(t testing.TB) *store.Badger {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// importFile stores data as a UnixFS file through put.
func importFile(t testing.TB, put unixfs.BlockPutter, data []byte) cid.Cid {
	t.Helper()
	im := &unixfs.Importer{Put: put, Layout: unixfs.DefaultLayout(), Workers: 1}
	n, err := im.ImportReader(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return n.CID
}

func readFile(ctx context.Context, s *store.Badger, c cid.Cid) ([]byte, error) {
	f, err := unixfs.OpenFile(ctx, s, c)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(readerAt{ctx, f}, 0, int64(f.Size())))
}

type readerAt struct {
	ctx context.Context
	f   *unixfs.File
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(r.ctx, p, off) }

// blocksOf lists every block of the DAG under c.
func blocksOf(t testing.TB, s *store.Badger, c cid.Cid) []cid.Cid {
	t.Helper()
	out := []cid.Cid{c}
	for i := 0; i < len(out); i++ {
		if out[i].Prefix().Codec == cid.Raw {
			continue
		}
		data, err := s.Get(context.Background(), out[i])
		if err != nil {
			t.Fatal(err)
		}
		links, err := unixfs.Links(out[i], data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, links...)
	}
	return out
}

func collector(s *store.Badger) *Collector {
	return &Collector{Store: s, History: versions.New(s), Pins: pin.New(s)}
}

func run(t testing.TB, col *Collector, o Options) (Report, []string) {
	t.Helper()
	var removed []string
	o.Removed = func(c cid.Cid, _ int64) { removed = append(removed, c.String()) }
	rep, err := col.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(removed)
	return rep, removed
}

func TestRootsSurviveGarbageGoes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	ps := pin.New(s)
	h := versions.New(s)
	content := map[string][]byte{}
	roots := map[string]cid.Cid{}
	for i, name := range []string{"pinned", "named", "direct", "added", "committed", "garbage", "unpinned"} {
		content[name] = randomBytes(uint64(i+1), 3<<20)
		roots[name] = importFile(t, s, content[name])
	}
	mustPin := func(_ pin.Pin, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustPin(ps.Add(ctx, roots["pinned"], "", pin.Recursive))
	mustPin(ps.Add(ctx, roots["named"], "model", pin.Recursive))
	mustPin(ps.Add(ctx, roots["direct"], "", pin.Direct))
	mustPin(ps.Add(ctx, roots["unpinned"], "", pin.Recursive))
	if _, err := ps.Remove(ctx, roots["unpinned"].String()); err != nil {
		t.Fatal(err)
	}
	if err := ps.RecordAdded(ctx, roots["added"], pin.Added{Name: "added"}); err != nil {
		t.Fatal(err)
	}
	tree, err := unixfs.DefaultLayout().BuildDirectory(ctx, s, []unixfs.Entry{{Name: "f", Node: unixfs.Node{CID: roots["committed"], Size: 3 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Create(ctx, versions.Commit{Tree: tree.CID, Message: "m", Author: "a"}, false); err != nil {
		t.Fatal(err)
	}

	// The direct pin keeps its root block only.
	var want []string
	for _, name := range []string{"garbage", "unpinned", "direct"} {
		for _, c := range blocksOf(t, s, roots[name]) {
			if name == "direct" && c.Equals(roots[name]) {
				continue
			}
			want = append(want, c.String())
		}
	}
	sort.Strings(want)

	dry, listed := run(t, collector(s), Options{DryRun: true})
	if fmt.Sprint(listed) != fmt.Sprint(want) {
		t.Fatalf("dry run lists %d blocks, want %d", len(listed), len(want))
	}
	if dry.Removed != int64(len(want)) {
		t.Fatalf("dry run reports %d removed", dry.Removed)
	}
	for _, c := range want {
		if ok, _ := s.Has(ctx, cid.MustParse(c)); !ok {
			t.Fatalf("dry run deleted %s", c)
		}
	}
	rep, removed := run(t, collector(s), Options{})
	if fmt.Sprint(removed) != fmt.Sprint(listed) {
		t.Fatalf("the real run removed other blocks than the dry run listed")
	}
	if rep.RemovedBytes != dry.RemovedBytes {
		t.Fatalf("removed %d bytes, the dry run said %d", rep.RemovedBytes, dry.RemovedBytes)
	}
	for _, name := range []string{"pinned", "named", "added", "committed"} {
		got, err := readFile(ctx, s, roots[name])
		if err != nil || !bytes.Equal(got, content[name]) {
			t.Fatalf("%s content after gc: %v", name, err)
		}
	}
	if ok, _ := s.Has(ctx, roots["direct"]); !ok {
		t.Fatal("the directly pinned block is gone")
	}
	for _, c := range want {
		if ok, _ := s.Has(ctx, cid.MustParse(c)); ok {
			t.Fatalf("%s survived", c)
		}
	}
	if _, again := run(t, collector(s), Options{}); len(again) != 0 {
		t.Fatalf("a second run removed %d blocks", len(again))
	}
}

// Blocks a writer stored but has not linked from any root yet survive (the
// bug of ipfs/kubo#11386), until the writer lets go.
func TestTempPinKeepsUnlinkedBlocks(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	tp := s.TempPin()
	b := tp.NewBatch()
	data := randomBytes(7, 2<<20)
	c := importFile(t, b, data)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, removed := run(t, collector(s), Options{}); len(removed) != 0 {
		t.Fatalf("gc removed %d blocks a writer holds", len(removed))
	}
	if got, err := readFile(ctx, s, c); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content after gc: %v", err)
	}
	all := blocksOf(t, s, c)
	tp.Release()
	if _, removed := run(t, collector(s), Options{}); len(removed) != len(all) {
		t.Fatalf("after release gc removed %d blocks", len(removed))
	}
}

// A writer that finds a garbage block already stored (and so skips it)
// during a collection keeps it; one that looks after the delete stores it
// again.
func TestDedupHitDuringSweep(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		beforeBegin bool // the writer's batch is opened before the GC begins
		afterDelete bool // the writer puts only after the sweep deleted
	}{
		{"batch opened before the gc", true, false},
		{"batch opened during the gc", false, false},
		{"put after the delete", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			data := randomBytes(9, 100<<10)
			c := importFile(t, s, data) // one raw block, unreferenced
			var b *store.Batch
			if tt.beforeBegin {
				b = s.NewBatch()
			}
			g, err := s.BeginGC()
			if err != nil {
				t.Fatal(err)
			}
			defer g.End()
			if b == nil {
				b = s.NewBatch()
			}
			if !tt.afterDelete {
				if err := b.Put(ctx, c, data); err != nil {
					t.Fatal(err)
				}
			}
			gone, err := g.DeleteBlocks(ctx, []cid.Cid{c}, func(cid.Cid) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			if tt.afterDelete {
				if len(gone) != 1 {
					t.Fatal("the sweep kept an untouched garbage block")
				}
				if err := b.Put(ctx, c, data); err != nil {
					t.Fatal(err)
				}
			} else if len(gone) != 0 {
				t.Fatal("the sweep deleted a block a writer counts on")
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, c); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("block after the sweep: %v", err)
			}
		})
	}
}

// Writers import files and pin them while collections run: every pinned
// file stays whole, and what writers dropped goes.
func TestWritersRacingGC(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	ps := pin.New(s)
	const writers, rounds = 4, 15
	type file struct {
		c    cid.Cid
		data []byte
	}
	var mu sync.Mutex
	var kept []file
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				// Half the content repeats the previous round's, so
				// that writers find blocks GC is about to delete.
				seed := uint64(w*1000 + i/2)
				data := append(randomBytes(seed, 600<<10), randomBytes(uint64(w*1000+i+500), 300<<10)...)
				tp := s.TempPin()
				b := tp.NewBatch()
				im := &unixfs.Importer{Put: b, Layout: unixfs.DefaultLayout(), Workers: 1}
				n, err := im.ImportReader(ctx, bytes.NewReader(data))
				if err == nil {
					err = b.Close()
				}
				if err == nil && i%2 == 0 {
					_, err = ps.Add(ctx, n.CID, fmt.Sprintf("w%d-%d", w, i), pin.Recursive)
					mu.Lock()
					kept = append(kept, file{n.CID, data})
					mu.Unlock()
				}
				tp.Release()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	go func() {
		defer close(errs)
		runs := 0
		for {
			select {
			case <-stop:
				if runs == 0 {
					errs <- errors.New("no gc ran")
				}
				return
			default:
			}
			if _, err := collector(s).Run(ctx, Options{}); err != nil {
				errs <- err
				return
			}
			runs++
		}
	}()
	wg.Wait()
	close(stop)
	for err := range errs {
		t.Fatal(err)
	}
	run(t, collector(s), Options{})
	for _, f := range kept {
		got, err := readFile(ctx, s, f.c)
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("pinned file %s after the race: %v", f.c, err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range kept {
		for _, c := range blocksOf(t, s, f.c) {
			want[string(c.Hash())] = true
		}
	}
	if st.Blocks != int64(len(want)) {
		t.Fatalf("%d blocks stored after the last gc, %d reachable", st.Blocks, len(want))
	}
}

func TestMinAgeAndTargetSize(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	var garbage []cid.Cid
	for i := range 4 {
		garbage = append(garbage, importFile(t, s, randomBytes(uint64(100+i), 1<<20)))
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		o           Options
		wantRemoved func(n int) bool
		wantSkipped bool
	}{
		{"everything is younger than an hour", Options{MinAge: time.Hour}, func(n int) bool { return n == 0 }, false},
		{"under the target size", Options{TargetSize: st.BlockBytes + 1}, func(n int) bool { return n == 0 }, true},
		{"a target size half the store", Options{TargetSize: st.BlockBytes / 2}, func(n int) bool { return n > 0 && n < int(st.Blocks) }, false},
		{"no limits", Options{}, func(n int) bool { return n > 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, removed := run(t, collector(s), tt.o)
			if !tt.wantRemoved(len(removed)) || rep.Skipped != tt.wantSkipped {
				t.Fatalf("removed %d blocks (skipped %v)", len(removed), rep.Skipped)
			}
			if tt.o.TargetSize > 0 && !rep.Skipped {
				after, err := s.Stats(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if after.BlockBytes > tt.o.TargetSize {
					t.Fatalf("%d bytes stored, target %d", after.BlockBytes, tt.o.TargetSize)
				}
				// Oldest first: the first file written went first.
				if ok, _ := s.Has(ctx, garbage[0]); ok {
					t.Fatal("the oldest garbage survived while newer went")
				}
			}
		})
	}
	if st, _ := s.Stats(ctx); st.Blocks != 0 {
		t.Fatalf("%d blocks left", st.Blocks)
	}
}

func TestPruneCommitsOlderThan(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	h := versions.New(s)
	old := randomBytes(31, 1<<20)
	recent := randomBytes(32, 1<<20)
	commit := func(data []byte, when time.Time) (versions.Commit, cid.Cid) {
		f := importFile(t, s, data)
		tree, err := unixfs.DefaultLayout().BuildDirectory(ctx, s, []unixfs.Entry{{Name: "f", Node: unixfs.Node{CID: f, Size: uint64(len(data))}}})
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.Create(ctx, versions.Commit{Tree: tree.CID, Message: "m", Author: "a", Time: when}, false)
		if err != nil {
			t.Fatal(err)
		}
		return c, f
	}
	first, oldFile := commit(old, time.Now().Add(-48*time.Hour))
	second, newFile := commit(recent, time.Now())

	if _, removed := run(t, collector(s), Options{}); len(removed) != 0 {
		t.Fatalf("by default history is kept, yet %d blocks went", len(removed))
	}
	rep, _ := run(t, collector(s), Options{PruneCommitsOlderThan: 24 * time.Hour})
	if rep.PrunedCommits != 1 {
		t.Fatalf("pruned %d commits, want 1", rep.PrunedCommits)
	}
	if ok, _ := s.Has(ctx, oldFile); ok {
		t.Fatal("the old commit's file survived pruning")
	}
	if got, err := readFile(ctx, s, newFile); err != nil || !bytes.Equal(got, recent) {
		t.Fatalf("the branch head's file: %v", err)
	}
	var logged []cid.Cid
	if err := h.Log(ctx, second.CID, func(c versions.Commit) error { logged = append(logged, c.CID); return nil }); err != nil {
		t.Fatalf("log after pruning: %v", err)
	}
	if len(logged) != 2 || !logged[1].Equals(first.CID) {
		t.Fatalf("log after pruning: %v", logged)
	}
}
