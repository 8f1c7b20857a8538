package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func blockOf(codec uint64, data []byte) Block {
	sum := sha256.Sum256(data)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	return Block{CID: cid.NewCidV1(codec, h), Data: data}
}

func openTemp(t testing.TB, o Options) *Badger {
	t.Helper()
	s, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPutGetHasDelete(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	tests := []struct {
		name string
		size int
	}{
		{"tiny, kept in the LSM tree", 10},
		{"empty", 0},
		{"256 KiB, in the value log", 256 << 10},
		{"1 MiB", 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte{byte(tt.size)}, tt.size)
			b := blockOf(cid.Raw, data)
			if ok, _ := s.Has(ctx, b.CID); ok {
				t.Fatal("has before put")
			}
			if err := s.Put(ctx, b.CID, b.Data); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, b.CID)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("get: %v", err)
			}
			// The same multihash under another codec or CID version is the same block.
			v0 := cid.NewCidV0(b.CID.Hash())
			if ok, _ := s.Has(ctx, v0); !ok {
				t.Fatal("CIDv0 of the same bytes not found")
			}
			if n, err := s.Size(ctx, b.CID); err != nil || n != tt.size {
				t.Fatalf("size %d, %v", n, err)
			}
			if err := s.Delete(ctx, b.CID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, b.CID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after delete: %v", err)
			}
		})
	}
}

func TestBatchSkipsDuplicatesAndCommitsInGenerations(t *testing.T) {
	ctx := context.Background()
	// Small batches so that several generations are committed in flight.
	s := openTemp(t, Options{BatchBytes: 1 << 20})
	var blocks []Block
	for i := range 40 {
		blocks = append(blocks, blockOf(cid.Raw, bytes.Repeat([]byte{byte(i)}, 100<<10)))
	}
	b := s.NewBatch()
	for _, blk := range blocks {
		// Put each block twice, reusing the caller's buffer afterwards.
		buf := append([]byte(nil), blk.Data...)
		for range 2 {
			if err := b.Put(ctx, blk.CID, buf); err != nil {
				t.Fatal(err)
			}
		}
		clear(buf)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Stored != 40 || b.Skipped != 40 {
		t.Fatalf("stored %d skipped %d, want 40 and 40", b.Stored, b.Skipped)
	}
	// A new batch skips what is stored.
	b = s.NewBatch()
	for _, blk := range blocks {
		if err := b.Put(ctx, blk.CID, blk.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil || b.Stored != 0 {
		t.Fatalf("second batch stored %d: %v", b.Stored, err)
	}
	for _, blk := range blocks {
		got, err := s.Get(ctx, blk.CID)
		if err != nil || !bytes.Equal(got, blk.Data) {
			t.Fatalf("%s: %v", blk.CID, err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Blocks != 40 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if d := st.BlockBytes - 40*100<<10; d < -400 || d > 400 {
		t.Fatalf("block bytes %d, want about %d", st.BlockBytes, 40*100<<10)
	}
}

func TestIterationKeepsCodec(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	want := map[string]bool{}
	if err := s.PutMany(ctx, []Block{blockOf(cid.Raw, []byte("leaf")), blockOf(cid.DagProtobuf, []byte("node")), blockOf(cid.DagCBOR, []byte("commit"))}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []Block{blockOf(cid.Raw, []byte("leaf")), blockOf(cid.DagProtobuf, []byte("node")), blockOf(cid.DagCBOR, []byte("commit"))} {
		want[b.CID.String()] = true
	}
	err := s.AllBlocks(ctx, func(c cid.Cid, data []byte, readErr error) error {
		if !want[c.String()] {
			return fmt.Errorf("unexpected %s", c)
		}
		delete(want, c.String())
		return nil
	})
	if err != nil || len(want) != 0 {
		t.Fatalf("%v, missing %v", err, want)
	}
}

func TestReopenKeepsBlocksAndMeta(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := blockOf(cid.Raw, bytes.Repeat([]byte("x"), 300<<10))
	if err := s.Put(ctx, b.CID, b.Data); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta(ctx, "roots/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("a second open of a store in use succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(ctx, b.CID); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("after reopen: %v", err)
	}
	if v, err := s.GetMeta(ctx, "roots/a"); err != nil || string(v) != "1" {
		t.Fatalf("meta: %q %v", v, err)
	}
	n := 0
	if err := s.ScanMeta(ctx, "roots/", func(k string, v []byte) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("scan: %d %v", n, err)
	}
}

func BenchmarkView256K(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var cids []cid.Cid
	for i := range 64 {
		blk := blockOf(cid.Raw, bytes.Repeat([]byte{byte(i), 1}, 128<<10))
		if err := s.Put(ctx, blk.CID, blk.Data); err != nil {
			b.Fatal(err)
		}
		cids = append(cids, blk.CID)
	}
	dst := make([]byte, 256<<10)
	b.SetBytes(256 << 10)
	b.ResetTimer()
	for i := range b.N {
		if err := s.View(ctx, cids[i%len(cids)], func(v []byte) error { copy(dst, v); return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// Many small blocks fill Badger's transaction before the batch's own byte
// limit: the batch must commit and re-queue without losing or mixing bytes.
func TestBatchOfSmallBlocksOverflowsTransaction(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{BatchBytes: 64 << 20})
	var blocks []Block
	b := s.NewBatch()
	for i := range 30000 {
		data := []byte(fmt.Sprintf("%0999d", i)) // 999 bytes: stored inside the LSM tree
		blk := blockOf(cid.Raw, data)
		blocks = append(blocks, blk)
		if err := b.Put(ctx, blk.CID, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, blk := range blocks {
		got, err := s.Get(ctx, blk.CID)
		if err != nil || !bytes.Equal(got, blk.Data) {
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d blocks stored wrong", bad, len(blocks))
	}
}

func TestCompressedBlocksReadBack(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	// bf16-like data: a repetitive high byte, random low byte.
	r := uint64(1)
	data := make([]byte, 300<<10+1)
	for i := range data {
		r = r*6364136223846793005 + 1442695040888963407
		if i%2 == 1 {
			data[i] = 0x3c | byte(r>>63)
		} else {
			data[i] = byte(r >> 56)
		}
	}
	for _, tt := range []struct{ elem, phase int }{{2, 0}, {2, 1}, {4, 3}, {0, 0}} {
		d := append([]byte{byte(tt.elem), byte(tt.phase)}, data...)
		blk := blockOf(cid.Raw, d)
		payload, tag, ok := s.Encode(d, tt.elem, tt.phase)
		if !ok {
			if tt.elem == 0 {
				continue // plain zstd of this data saves too little: stored raw
			}
			t.Fatalf("elem %d: byte grouping did not pay", tt.elem)
		}
		b := s.NewBatch()
		if err := b.PutEncoded(ctx, blk.CID, payload, tag, len(d)); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, blk.CID)
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("elem %d phase %d: read back differs: %v", tt.elem, tt.phase, err)
		}
		t.Logf("elem %d phase %d: %d -> %d bytes", tt.elem, tt.phase, len(d), len(payload))
	}
}

// groupSlow is the plane layout of group, byte by byte.
func groupSlow(data []byte, elem, phase int) []byte {
	var out []byte
	for k := range elem {
		for i := range data {
			if (i+phase)%elem == k {
				out = append(out, data[i])
			}
		}
	}
	return out
}

func TestGroupRoundTrip(t *testing.T) {
	for _, elem := range []int{2, 4, 8} {
		for phase := range elem {
			for _, n := range []int{0, 1, 2, 3, 8, 16, 17, 64, 65, 1001, 4096} {
				data := make([]byte, n)
				for i := range data {
					data[i] = byte(i*7 + 3)
				}
				g := group(nil, data, elem, phase)
				if slow := groupSlow(data, elem, phase); !bytes.Equal(g, slow) {
					t.Fatalf("elem %d phase %d n %d: planes differ from the reference layout", elem, phase, n)
				}
				out := make([]byte, n)
				ungroup(out, g, elem, phase)
				if !bytes.Equal(out, data) {
					t.Fatalf("elem %d phase %d n %d: round trip differs", elem, phase, n)
				}
			}
		}
	}
}

// ViewChecked vouches only for bytes Badger's CRC covered on the read; a
// damaged value-log entry is an error, never an empty or altered block.
func TestViewCheckedAndCorruption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	big := blockOf(cid.Raw, bytes.Repeat([]byte("tensor bytes "), 40000))
	small := blockOf(cid.Raw, []byte("small block"))
	for _, b := range []Block{big, small} {
		if err := s.Put(ctx, b.CID, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	checkedOf := func(c cid.Cid) bool {
		var got bool
		if err := s.ViewChecked(ctx, c, func(b []byte, checked bool) error { got = checked; return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		name      string
		c         cid.Cid
		hashReads bool
		want      bool
	}{
		{"value log", big.CID, false, true},
		{"LSM tree", small.CID, false, false},
		{"value log, --hash-reads", big.CID, true, false},
	}
	for _, tc := range tests {
		s.HashReads(tc.hashReads)
		if got := checkedOf(tc.c); got != tc.want {
			t.Errorf("%s: checked %v, want %v", tc.name, got, tc.want)
		}
	}
	s.HashReads(false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Flip one byte of the big block in the value log.
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	probe := big.Data[1000:1064]
	flipped := false
	for _, v := range vlogs {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, probe); i >= 0 {
			b[i+7] ^= 0x20
			if err := os.WriteFile(v, b, 0o644); err != nil {
				t.Fatal(err)
			}
			flipped = true
			break
		}
	}
	if !flipped {
		t.Fatal("block not found in the value log")
	}
	s, err = Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	called := false
	err = s.ViewChecked(ctx, big.CID, func([]byte, bool) error { called = true; return nil })
	if !errors.Is(err, ErrCorrupt) || called {
		t.Fatalf("damaged block: err %v, callback called %v", err, called)
	}
	var corrupt []cid.Cid
	if err := s.AllBlocks(ctx, func(c cid.Cid, data []byte, readErr error) error {
		if readErr != nil {
			corrupt = append(corrupt, c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(corrupt) != 1 || corrupt[0] != big.CID {
		t.Fatalf("AllBlocks reported %v as unreadable, want only %s", corrupt, big.CID)
	}
}
