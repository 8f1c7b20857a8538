package unixfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/chunker"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func importBytes(t *testing.T, bs BlockPutter, l Layout, data []byte) Node {
	t.Helper()
	n, err := (&Importer{Put: bs, Layout: l}).ImportReader(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The dedup acceptance: a 64 MiB random file, then the same with one
// byte inserted at 10 MiB, stores at most 4 new blocks.
func TestInsertionStoresFewNewBlocks(t *testing.T) {
	bs := newMemStore()
	data := randomBytes(1, 64<<20)
	first := importBytes(t, bs, DefaultLayout(), data)
	before := len(bs.blocks)
	edited := append(append(append([]byte(nil), data[:10<<20]...), 0x42), data[10<<20:]...)
	second := importBytes(t, bs, DefaultLayout(), edited)
	if first.CID.Equals(second.CID) {
		t.Fatal("edited file has the same CID")
	}
	if added := len(bs.blocks) - before; added > 4 {
		t.Fatalf("%d new blocks after a one-byte insertion", added)
	}
	if second.Size != uint64(len(edited)) {
		t.Fatalf("size %d", second.Size)
	}
}

func TestReadAtMatchesContent(t *testing.T) {
	ctx := context.Background()
	bs := newMemStore()
	data := randomBytes(2, 9<<20+77)
	// Small chunks and narrow nodes give a three-level tree.
	l := Layout{Chunker: chunker.Spec{Kind: chunker.FastCDC, Min: 4096, Avg: 16384, Max: 65536}, MaxLinks: 8}
	n := importBytes(t, bs, l, data)
	f, err := OpenFile(ctx, bs, n.CID)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != uint64(len(data)) {
		t.Fatalf("size %d, want %d", f.Size(), len(data))
	}
	r := rand.New(rand.NewPCG(9, 9))
	for range 500 {
		off := r.IntN(len(data) + 10)
		buf := make([]byte, r.IntN(300<<10))
		k, err := f.ReadAt(ctx, buf, int64(off))
		want := data[min(off, len(data)):min(off+len(buf), len(data))]
		if k != len(want) || !bytes.Equal(buf[:k], want) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", off, len(buf), k, err)
		}
		if (k < len(buf)) != errors.Is(err, io.EOF) {
			t.Fatalf("ReadAt(%d, %d): short read %d with err %v", off, len(buf), k, err)
		}
	}
}

func TestCorruptLeafIsNeverServed(t *testing.T) {
	ctx := context.Background()
	bs := newMemStore()
	data := randomBytes(3, 3<<20)
	n := importBytes(t, bs, DefaultLayout(), data)
	// Flip one byte in every raw leaf.
	for k, b := range bs.blocks {
		c := cid.NewCidV1(cid.Raw, []byte(k))
		if CheckHash(c, b) == nil && len(b) > 1000 {
			b[500] ^= 1
		}
	}
	f, err := OpenFile(ctx, bs, n.CID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(ctx, make([]byte, 10), 600); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("ReadAt: %v", err)
	}
	if _, err := f.WriteTo(ctx, io.Discard, 2); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("WriteTo: %v", err)
	}
}

func TestDirectoriesBasicAndSharded(t *testing.T) {
	ctx := context.Background()
	for _, count := range []int{3, 5000} {
		t.Run(fmt.Sprint(count), func(t *testing.T) {
			bs := newMemStore()
			l := DefaultLayout()
			var entries []Entry
			for i := range count {
				n := importBytes(t, bs, l, []byte(fmt.Sprintf("file %d\n", i)))
				entries = append(entries, Entry{Name: fmt.Sprintf("entry-with-a-long-name-%05d.txt", i), Node: n})
			}
			dir, err := l.BuildDirectory(ctx, bs, entries)
			if err != nil {
				t.Fatal(err)
			}
			ents, err := ReadDir(ctx, bs, dir.CID)
			if err != nil || len(ents) != count {
				t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
			}
			for i, e := range ents {
				if e.Name != entries[i].Name || !e.CID.Equals(entries[i].Node.CID) {
					t.Fatalf("entry %d: %s %s", i, e.Name, e.CID)
				}
			}
			c, err := Resolve(ctx, bs, dir.CID, entries[count-1].Name)
			if err != nil || !c.Equals(entries[count-1].Node.CID) {
				t.Fatalf("Resolve: %v", err)
			}
			if _, err := Resolve(ctx, bs, dir.CID, "absent"); err == nil {
				t.Fatal("resolved an absent name")
			}
			pb, err := loadPB(ctx, bs, dir.CID)
			if err != nil {
				t.Fatal(err)
			}
			if sharded := pb.fanout > 0; sharded != (count > 1000) {
				t.Fatalf("sharded = %v for %d entries", sharded, count)
			}
		})
	}
}

func TestBadEntryNamesAreRefused(t *testing.T) {
	bs := newMemStore()
	n := importBytes(t, bs, DefaultLayout(), []byte("x"))
	for _, name := range []string{"", ".", "..", "a/b", "nul\x00"} {
		if _, err := DefaultLayout().BuildDirectory(context.Background(), bs, []Entry{{name, n}}); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := DefaultLayout().BuildDirectory(context.Background(), bs, []Entry{{"a", n}, {"a", n}}); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestSymlinkAndStat(t *testing.T) {
	ctx := context.Background()
	bs := newMemStore()
	s, err := BuildSymlink(ctx, bs, "../target")
	if err != nil {
		t.Fatal(err)
	}
	info, err := Stat(ctx, bs, s.CID)
	if err != nil || info.Kind != KindSymlink || info.Target != "../target" {
		t.Fatalf("%+v %v", info, err)
	}
	if _, err := OpenFile(ctx, bs, s.CID); !errors.Is(err, ErrNotFile) {
		t.Fatalf("OpenFile on a symlink: %v", err)
	}
}

func BenchmarkImport(b *testing.B) {
	data := randomBytes(4, 64<<20)
	b.SetBytes(int64(len(data)))
	for range b.N {
		im := &Importer{Put: discard{}, Layout: DefaultLayout()}
		if _, err := im.ImportReader(context.Background(), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Put(context.Context, cid.Cid, []byte) error { return nil }

// Resume with the unchanged leaves before an edit and a resync after it
// gives the same DAG as importing the edited file whole, while chunking only
// the region around the edit.
func TestResumeMatchesFullImport(t *testing.T) {
	ctx := context.Background()
	bs := newMemStore()
	l := DefaultLayout()
	data := randomBytes(5, 40<<20)
	orig := importBytes(t, bs, l, data)
	f, err := OpenFile(ctx, bs, orig.CID)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := f.Leaves(ctx)
	if err != nil {
		t.Fatal(err)
	}
	edited := append([]byte(nil), data...)
	const at = 20 << 20
	copy(edited[at:], "overwritten in place")
	want := importBytes(t, bs, l, edited)

	// The prefix: leaves that end before the edit.
	var prefix []Node
	var off uint64
	for _, lf := range leaves {
		if off+lf.Size > at {
			break
		}
		prefix = append(prefix, lf)
		off += lf.Size
	}
	starts := map[uint64]int{}
	var o uint64
	for i, lf := range leaves {
		starts[o] = i
		o += lf.Size
	}
	read := 0
	r := &countingReader{r: bytes.NewReader(edited[off:]), n: &read}
	got, err := (&Importer{Put: bs, Layout: l}).Resume(ctx, prefix, r, nil, func(end uint64) []Node {
		if i, ok := starts[end]; ok && end > at+20 {
			return leaves[i:]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got.CID.Equals(want.CID) || got.Size != want.Size {
		t.Fatalf("resumed %s (%d bytes), full import %s", got.CID, got.Size, want.CID)
	}
	if read > 8<<20 {
		t.Fatalf("read %d bytes to re-chunk a 20-byte edit", read)
	}
}

type countingReader struct {
	r io.Reader
	n *int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += n
	return n, err
}
