package versions

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/chunker"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func diffAll(t *testing.T, bs unixfs.BlockViewer, a, b cid.Cid) ([]Change, DiffStats) {
	t.Helper()
	var out []Change
	st, err := Diff(context.Background(), bs, a, b, func(c Change) error { out = append(out, c); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out, st
}

func TestDiff(t *testing.T) {
	s := openStore(t, t.TempDir())
	// Small fixed chunks, so that "big" files are multi-block dag-pb DAGs.
	l := unixfs.DefaultLayout()
	l.Chunker = chunker.FixedSpec(1024)
	big := strings.Repeat("0123456789", 500)

	base := map[string]string{
		"a.txt":       "alpha",
		"big.bin":     big,
		"d/e/f.txt":   "deep",
		"d/g.txt":     "g",
		"x/1":         "one",
		"x/2":         "two",
		"link":        "->a.txt",
		"keep/k":      "k",
		"empty/":      "",
		"a-b":         "dash",
		"a/inner.txt": "inner",
	}
	with := func(edit func(m map[string]string)) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		edit(m)
		return m
	}
	for _, tc := range []struct {
		name string
		b    map[string]string
		want []Change
	}{
		{"identical", base, nil},
		{"added file", with(func(m map[string]string) { m["new.txt"] = "hello" }),
			[]Change{{"new.txt", Added, 0, 5}}},
		{"removed file", with(func(m map[string]string) { delete(m, "a.txt") }),
			[]Change{{"a.txt", Removed, 5, 0}}},
		{"modified file", with(func(m map[string]string) { m["a.txt"] = "alphabet" }),
			[]Change{{"a.txt", Modified, 5, 8}}},
		{"modified multi-block file", with(func(m map[string]string) { m["big.bin"] = big + "tail" }),
			[]Change{{"big.bin", Modified, 5000, 5004}}},
		{"nested modify", with(func(m map[string]string) { m["d/e/f.txt"] = "deeper" }),
			[]Change{{"d/e/f.txt", Modified, 4, 6}}},
		{"symlink retarget", with(func(m map[string]string) { m["link"] = "->big.bin" }),
			[]Change{{"link", Modified, 5, 7}}},
		{"dir becomes file", with(func(m map[string]string) {
			delete(m, "x/1")
			delete(m, "x/2")
			m["x"] = "now a file"
		}), []Change{{"x", Removed, 0, 0}, {"x", Added, 0, 10}, {"x/1", Removed, 3, 0}, {"x/2", Removed, 3, 0}}},
		{"file becomes dir", with(func(m map[string]string) {
			delete(m, "a.txt")
			m["a.txt/p"] = "p"
		}), []Change{{"a.txt", Removed, 5, 0}, {"a.txt", Added, 0, 0}, {"a.txt/p", Added, 0, 1}}},
		{"added dir lists its files", with(func(m map[string]string) {
			m["n/m/1"] = "1"
			m["n/2"] = "22"
			m["n/o/"] = ""
		}), []Change{{"n", Added, 0, 0}, {"n/2", Added, 0, 2}, {"n/m", Added, 0, 0}, {"n/m/1", Added, 0, 1}, {"n/o", Added, 0, 0}}},
		{"removed dir lists its files", with(func(m map[string]string) {
			delete(m, "d/e/f.txt")
			delete(m, "d/g.txt")
		}), []Change{{"d", Removed, 0, 0}, {"d/e", Removed, 0, 0}, {"d/e/f.txt", Removed, 4, 0}, {"d/g.txt", Removed, 1, 0}}},
		{"empty dir gone, dir emptied", with(func(m map[string]string) {
			delete(m, "empty/")
			delete(m, "keep/k")
			m["keep/"] = ""
		}), []Change{{"empty", Removed, 0, 0}, {"keep/k", Removed, 1, 0}}},
		{"byte order of paths", with(func(m map[string]string) {
			m["a-b"] = "dash!"
			m["a/inner.txt"] = "changed"
			m["a0"] = "zero"
		}), []Change{{"a-b", Modified, 4, 5}, {"a/inner.txt", Modified, 5, 7}, {"a0", Added, 0, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := buildTree(t, s, l, base)
			b := buildTree(t, s, l, tc.b)
			got, _ := diffAll(t, s, a, b)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Diff =\n%v\nwant\n%v", got, tc.want)
			}
			// The reverse diff swaps Added and Removed.
			rev, _ := diffAll(t, s, b, a)
			var want []Change
			for _, c := range tc.want {
				c.OldSize, c.NewSize = c.NewSize, c.OldSize
				switch c.Kind {
				case Added:
					c.Kind = Removed
				case Removed:
					c.Kind = Added
				}
				want = append(want, c)
			}
			sortChanges(want)
			if !reflect.DeepEqual(rev, want) {
				t.Fatalf("reverse Diff =\n%v\nwant\n%v", rev, want)
			}
		})
	}
}

func sortChanges(cs []Change) {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Path != cs[j].Path {
			return cs[i].Path < cs[j].Path
		}
		return cs[i].Kind == Removed && cs[j].Kind == Added
	})
}

func TestDiffEdges(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	l := unixfs.DefaultLayout()
	tree := buildTree(t, s, l, map[string]string{"a": "1", "b/c": "22"})

	got, _ := diffAll(t, s, cid.Undef, tree)
	want := []Change{{"a", Added, 0, 1}, {"b", Added, 0, 0}, {"b/c", Added, 0, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff from nothing = %v", got)
	}
	if got, st := diffAll(t, s, tree, tree); len(got) != 0 || st.NodesLoaded != 0 {
		t.Fatalf("diff of a tree with itself: %v, %+v", got, st)
	}

	var n int
	_, err := Diff(ctx, s, cid.Undef, tree, func(Change) error { n++; return Stop })
	if err != nil || n != 1 {
		t.Fatalf("Stop: %d calls, %v", n, err)
	}
	boom := errors.New("boom")
	if _, err := Diff(ctx, s, cid.Undef, tree, func(Change) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	file, err := (&unixfs.Importer{Put: s, Layout: l}).ImportChunk(ctx, []byte("file"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Diff(ctx, s, file.CID, tree, func(Change) error { return nil }); !errors.Is(err, unixfs.ErrNotDir) {
		t.Fatalf("diff of a file root: %v", err)
	}
}

// TestDiffLargeTree changes one file among 10,000 in 100 directories: the
// diff reads the two roots and the two versions of one directory.
func TestDiffLargeTree(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	l := unixfs.DefaultLayout()
	batch := s.NewBatch()
	im := &unixfs.Importer{Put: batch, Layout: l}
	dirs := make([][]unixfs.Entry, 100)
	for d := range dirs {
		for f := 0; f < 100; f++ {
			n, err := im.ImportChunk(ctx, fmt.Appendf(nil, "file %d/%d", d, f))
			if err != nil {
				t.Fatal(err)
			}
			dirs[d] = append(dirs[d], unixfs.Entry{Name: fmt.Sprintf("file%03d", f), Node: n})
		}
	}
	root := func() cid.Cid {
		var top []unixfs.Entry
		for d, es := range dirs {
			n, err := l.BuildDirectory(ctx, batch, es)
			if err != nil {
				t.Fatal(err)
			}
			top = append(top, unixfs.Entry{Name: fmt.Sprintf("dir%03d", d), Node: n})
		}
		n, err := l.BuildDirectory(ctx, batch, top)
		if err != nil {
			t.Fatal(err)
		}
		return n.CID
	}
	a := root()
	changed, err := im.ImportChunk(ctx, []byte("changed!!"))
	if err != nil {
		t.Fatal(err)
	}
	dirs[42][17].Node = changed
	b := root()
	if err := batch.Close(); err != nil {
		t.Fatal(err)
	}

	got, st := diffAll(t, s, a, b)
	want := []Change{{"dir042/file017", Modified, uint64(len("file 42/17")), 9}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	if st.NodesLoaded > 10 {
		t.Fatalf("NodesLoaded = %d for one change in a 2-level tree", st.NodesLoaded)
	}
	t.Logf("one change among 10,000 files: %d directory nodes loaded", st.NodesLoaded)
}

// hamtLayout shards every directory of more than a few entries.
func hamtLayout(fanout int) unixfs.Layout {
	l := unixfs.DefaultLayout()
	l.HAMTThreshold, l.HAMTFanout, l.DirEstimate = 256, fanout, unixfs.EstimateLinks
	return l
}

// TestDiffHAMT compares large sharded directories bucket by bucket, and
// checks the result against a diff computed from the file lists.
func TestDiffHAMT(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	const n = 5000
	base := map[string]string{}
	for i := 0; i < n; i++ {
		base[fmt.Sprintf("f%05d", i)] = fmt.Sprint("content ", i)
	}
	base["sub/x"] = "x"
	// Batched puts: one Badger transaction per tree, not per block.
	build := func(l unixfs.Layout, files map[string]string) cid.Cid {
		b := s.NewBatch()
		c := buildTree(t, b, l, files)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, fanout := range []int{16, 256} {
		l := hamtLayout(fanout)
		a := build(l, base)
		if info, err := unixfs.Stat(ctx, s, a); err != nil || info.Kind != unixfs.KindDirectory {
			t.Fatalf("stat root: %+v %v", info, err)
		}

		one := map[string]string{}
		for k, v := range base {
			one[k] = v
		}
		one["f01234"] = "changed"
		b := build(l, one)
		got, st := diffAll(t, s, a, b)
		want := []Change{{"f01234", Modified, uint64(len("content 1234")), 7}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fanout %d: Diff = %v, want %v", fanout, got, want)
		}
		_, full := diffAll(t, s, cid.Undef, a)
		t.Logf("fanout %d: one change loads %d nodes; listing all loads %d", fanout, st.NodesLoaded, full.NodesLoaded)
		if st.NodesLoaded > 10 || full.NodesLoaded < 2*st.NodesLoaded {
			t.Fatalf("fanout %d: NodesLoaded = %d (full listing %d)", fanout, st.NodesLoaded, full.NodesLoaded)
		}

		// Many edits: adds, removes, modifies, a file turned directory.
		many := map[string]string{}
		for k, v := range base {
			many[k] = v
		}
		var want2 []Change
		for i := 0; i < n; i += 97 {
			k := fmt.Sprintf("f%05d", i)
			switch i % 3 {
			case 0:
				delete(many, k)
				want2 = append(want2, Change{k, Removed, uint64(len(base[k])), 0})
			case 1:
				many[k] = "m"
				want2 = append(want2, Change{k, Modified, uint64(len(base[k])), 1})
			case 2:
				many[k+"new"] = "nn"
				want2 = append(want2, Change{k + "new", Added, 0, 2})
			}
		}
		delete(many, "f00001")
		many["f00001/inside"] = "in"
		want2 = append(want2, Change{"f00001", Removed, uint64(len(base["f00001"])), 0},
			Change{"f00001", Added, 0, 0}, Change{"f00001/inside", Added, 0, 2})
		sortChanges(want2)
		c := build(l, many)
		got2, _ := diffAll(t, s, a, c)
		if !reflect.DeepEqual(got2, want2) {
			t.Fatalf("fanout %d: many edits: got %d changes, want %d\n%v\n%v", fanout, len(got2), len(want2), got2, want2)
		}

		// The same content as a basic directory: different root, no change.
		flat := unixfs.DefaultLayout()
		flat.HAMTThreshold = 1 << 30
		d := build(flat, base)
		if d.Equals(a) {
			t.Fatal("expected a basic directory")
		}
		if got, _ := diffAll(t, s, a, d); len(got) != 0 {
			t.Fatalf("fanout %d: sharded vs basic: %v", fanout, got)
		}
	}
}

var _ unixfs.BlockViewer = (*store.Badger)(nil)
