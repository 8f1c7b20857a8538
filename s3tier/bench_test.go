package s3tier

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ipfrs/ipfrs-mount/s3tier/s3test"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// TestBenchTier measures the tier against the same client talking to the
// same server directly (BENCHMARKS.md, "S3 tier"). It runs only with
// IPFRS_S3_BENCH_MB set (the model size in MB):
//
//	IPFRS_S3_BENCH_MB=800 go test -count=1 -run TestBenchTier -v -timeout 30m ./s3tier/
func TestBenchTier(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("IPFRS_S3_BENCH_MB"))
	if mb <= 0 {
		t.Skip("set IPFRS_S3_BENCH_MB to run")
	}
	srv := s3test.Start(t)
	srv.Env(t)
	ctx := context.Background()
	a, b := openStore(t), openStore(t)
	data := randomData(9, mb*1000*1000)
	_, file := commitFile(t, a, "model.bin", data)
	loc := location(t, srv, "bench")
	cl, err := loc.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.MakeBucket(ctx, loc.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	const packSize = 32 << 20

	// Baseline put: the same bytes as objects of the pack size, one at a
	// time (as the uploader does), multipart above 16 MiB.
	start := time.Now()
	var keys []string
	for off := 0; off < len(data); off += packSize {
		end := min(off+packSize, len(data))
		key := fmt.Sprintf("plain/%08d", off/packSize)
		if _, err := cl.PutObject(ctx, loc.Bucket, key, bytes.NewReader(data[off:end]), int64(end-off),
			minio.PutObjectOptions{PartSize: 16 << 20, ContentType: "application/octet-stream"}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	putSec := time.Since(start).Seconds()

	start = time.Now()
	ta := openTier(t, a, Options{Location: loc, Push: true})
	drain(t, ta)
	pushSec := time.Since(start).Seconds()
	sa := ta.Stats()

	// Baseline read: ranged GETs of 4 MiB over the plain objects, 16 at a
	// time (the tier reads blocks 32 at a time).
	start = time.Now()
	type rng struct {
		key       string
		off, size int64
	}
	jobs := make(chan rng)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				opts := minio.GetObjectOptions{}
				opts.SetRange(j.off, j.off+j.size-1)
				obj, err := cl.GetObject(ctx, loc.Bucket, j.key, opts)
				if err != nil {
					t.Error(err)
					continue
				}
				n, err := io.Copy(io.Discard, obj)
				obj.Close()
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				got += n
				mu.Unlock()
			}
		}()
	}
	for i, key := range keys {
		size := int64(min(packSize, len(data)-i*packSize))
		for off := int64(0); off < size; off += 4 << 20 {
			jobs <- rng{key, off, min(4<<20, size-off)}
		}
	}
	close(jobs)
	wg.Wait()
	getSec := time.Since(start).Seconds()
	if got != int64(len(data)) {
		t.Fatalf("baseline read %d bytes of %d", got, len(data))
	}

	// Cold read through the tier: a fresh repo following the branch.
	start = time.Now()
	tb := openTier(t, b, Options{Location: loc, Follow: []string{versions.DefaultBranch}})
	f, err := unixfs.OpenFile(ctx, tb, file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.WriteTo(ctx, io.Discard, 32)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("tier read %d bytes: %v", n, err)
	}
	readSec := time.Since(start).Seconds()
	sb := tb.Stats()

	gb := float64(len(data)) / 1e9
	t.Logf("model %d MB, %d blocks in %d packs", mb, sa.PushedBlocks, sa.Packs)
	t.Logf("push:  tier %.2fs (%.0f MB/s), plain puts %.2fs (%.0f MB/s): ratio %.2f; %.0f requests/GB (plain: %.0f)",
		pushSec, float64(mb)/pushSec, putSec, float64(mb)/putSec, putSec/pushSec,
		float64(sa.PutRequests)/gb, float64(len(keys)*4)/gb)
	t.Logf("read:  tier cold %.2fs (%.0f MB/s), plain ranged GETs %.2fs (%.0f MB/s): ratio %.2f; %.0f requests/GB (plain: %.0f)",
		readSec, float64(mb)/readSec, getSec, float64(mb)/getSec, getSec/readSec,
		float64(sb.GetRequests)/gb, float64(len(data)/(4<<20)+1)/gb)
}
