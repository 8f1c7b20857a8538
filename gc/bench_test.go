package gc

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/chunker"
	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// BenchmarkMarkSweep measures one collection of a store of
// $IPFRS_GC_BENCH_BLOCKS blocks (default 1,000,000): files of 512-byte raw
// leaves under dag-pb nodes (174 links each), every other file pinned, the
// rest garbage. It reports blocks per second of mark plus sweep (every
// stored block is marked or deleted), and the reclaim separately. Run it
// once: go test ./gc -run '^$' -bench MarkSweep -benchtime 1x
func BenchmarkMarkSweep(b *testing.B) {
	total := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("IPFRS_GC_BENCH_BLOCKS")); err == nil && v > 0 {
		total = v
	}
	ctx := context.Background()
	dir := b.TempDir()
	if d := os.Getenv("IPFRS_GC_BENCH_DIR"); d != "" {
		dir = d
	}
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	layout, _ := unixfs.LayoutFor("kubo")
	layout.Chunker, _ = chunker.ParseSpec("size-512")
	const leavesPerFile = 174 * 4 // a two-level file: 4 nodes under a root
	ps := pin.New(s)
	start := time.Now()
	batch := s.NewBatch()
	im := &unixfs.Importer{Put: batch, Layout: layout}
	for i := 0; ; i++ {
		n, err := im.ImportReader(ctx, bytes.NewReader(randomBytes(uint64(i), leavesPerFile*512)))
		if err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			if err := ps.RecordAdded(ctx, n.CID, pin.Added{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
		if batch.Stored >= total {
			break
		}
	}
	if err := batch.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d blocks (%d bytes) in %v", st.Blocks, st.BlockBytes, time.Since(start).Round(time.Millisecond))
	b.ResetTimer()
	for range b.N {
		rep, err := (&Collector{Store: s, Pins: ps}).Run(ctx, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ms := rep.MarkDuration + rep.SweepDuration
		b.ReportMetric(float64(rep.Blocks)/ms.Seconds(), "blocks/s")
		b.ReportMetric(float64(rep.Marked), "marked")
		b.ReportMetric(float64(rep.Removed), "removed")
		b.ReportMetric(rep.MarkDuration.Seconds(), "mark-s")
		b.ReportMetric(rep.SweepDuration.Seconds(), "sweep-s")
		b.ReportMetric(rep.ReclaimSeconds, "reclaim-s")
	}
}
