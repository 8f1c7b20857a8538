package unixfs_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// BenchmarkReadAtBadger reads a 64 MiB file stored in Badger in 1 MiB
// reads, the size of the mount's FUSE reads, after a first pass has
// checked every block: what the daemon does per READ request.
//
//	go test ./unixfs -run '^$' -bench ReadAtBadger -benchmem
func BenchmarkReadAtBadger(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	batch := s.NewBatch()
	n, err := (&unixfs.Importer{Put: batch, Layout: unixfs.DefaultLayout()}).ImportReader(ctx, bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	if err := batch.Close(); err != nil {
		b.Fatal(err)
	}
	f, err := unixfs.OpenFile(ctx, s, n.CID)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
		if _, err := f.ReadAt(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := range b.N {
		off := int64(i%64) << 20
		if _, err := f.ReadAt(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
	}
}
