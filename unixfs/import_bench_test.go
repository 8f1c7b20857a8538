package unixfs_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// BenchmarkImportBadger imports 256 MiB into a fresh Badger store through
// a batch, as `add` does, with one worker (sequential hashing) and with one
// per core, and reports the time of each pipeline stage per import.
//
//	go test ./unixfs -run '^$' -bench ImportBadger -benchtime 3x
func BenchmarkImportBadger(b *testing.B) {
	data := make([]byte, 256<<20)
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, workers := range []int{1, 0} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ctx := context.Background()
			b.SetBytes(int64(len(data)))
			st := &unixfs.ImportStats{}
			for range b.N {
				b.StopTimer()
				s, err := store.Open(b.TempDir(), store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				batch := s.NewBatch()
				b.StartTimer()
				im := &unixfs.Importer{Put: batch, Layout: unixfs.DefaultLayout(), Workers: workers, Stats: st}
				if _, err := im.ImportReader(ctx, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				if err := batch.Close(); err != nil {
					b.Fatal(err)
				}
				if err := s.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			for k, name := range map[unixfs.Stage]string{unixfs.StageSplit: "split", unixfs.StagePrepare: "prepare",
				unixfs.StagePut: "put", unixfs.StageWait: "put-waited", unixfs.StageStall: "split-stalled"} {
				b.ReportMetric(st.Stage(k).Seconds()/float64(b.N), name+"-s/op")
			}
		})
	}
}
