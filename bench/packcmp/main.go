// Command packcmp measures the two ways block bytes could be kept, in one
// run on the same data: Badger's value log (what the store does: writes
// copied through a memory mapping, reads through page faults of that
// mapping) against an append-only pack file written with pwrite(2) and read
// with pread(2) into a buffer (the alternative of issue 15). Nothing here
// is used by ipfrs-mount; it decides whether a pack-file layout is worth
// building. As root it drops the page cache before the cold reads.
//
// Usage: packcmp [-mib N] [-block BYTES] DIR
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
)

func main() {
	mib := flag.Int("mib", 512, "MiB of blocks to write and read")
	block := flag.Int("block", 256<<10, "block size in bytes")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: packcmp [-mib N] [-block BYTES] DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *mib, *block); err != nil {
		fmt.Fprintln(os.Stderr, "packcmp:", err)
		os.Exit(1)
	}
}

func run(dir string, mib, bs int) error {
	ctx := context.Background()
	n := mib << 20 / bs
	data := make([]byte, n*bs)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	cids := make([]cid.Cid, n)
	for i := range n {
		sum := sha256.Sum256(data[i*bs : (i+1)*bs])
		h, _ := mh.Encode(sum[:], mh.SHA2_256)
		cids[i] = cid.NewCidV1(cid.Raw, h)
	}
	var usage syscall.Rusage
	cpu := func() time.Duration {
		syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
		return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
	}
	type result struct{ wall, cpu time.Duration }
	measure := func(f func() error) (result, error) {
		c0, t0 := cpu(), time.Now()
		err := f()
		return result{time.Since(t0), cpu() - c0}, err
	}

	// The value log, through the store as `add` uses it.
	sdir := filepath.Join(dir, "badger")
	os.RemoveAll(sdir)
	s, err := store.Open(sdir, store.Options{})
	if err != nil {
		return err
	}
	vlogW, err := measure(func() error {
		b := s.NewBatch()
		for i := range n {
			if err := b.Put(ctx, cids[i], data[i*bs:(i+1)*bs]); err != nil {
				return err
			}
		}
		if err := b.Close(); err != nil {
			return err
		}
		return s.Sync()
	})
	s.Close()
	if err != nil {
		return err
	}

	// A pack file: append with pwrite, one fdatasync at the end.
	pack := filepath.Join(dir, "pack")
	packW, err := measure(func() error {
		f, err := os.OpenFile(pack, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		for i := range n {
			if _, err := f.WriteAt(data[i*bs:(i+1)*bs], int64(i*bs)); err != nil {
				return err
			}
		}
		return f.Sync()
	})
	if err != nil {
		return err
	}

	// Cold reads of every block in order, each into (or viewed from) a
	// buffer and summed so that its bytes are touched.
	dropCaches()
	s, err = store.Open(sdir, store.Options{})
	if err != nil {
		return err
	}
	var sink byte
	vlogR, err := measure(func() error {
		for i := range n {
			if err := s.View(ctx, cids[i], func(b []byte) error {
				for j := 0; j < len(b); j += 4096 {
					sink += b[j]
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	s.Close()
	if err != nil {
		return err
	}
	dropCaches()
	packR, err := measure(func() error {
		f, err := os.Open(pack)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, bs)
		for i := range n {
			if _, err := f.ReadAt(buf, int64(i*bs)); err != nil {
				return err
			}
			for j := 0; j < len(buf); j += 4096 {
				sink += buf[j]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = sink
	mbs := func(d time.Duration) float64 { return float64(len(data)) / d.Seconds() / 1e6 }
	fmt.Printf("%d MiB in %d blocks of %d bytes\n", mib, n, bs)
	fmt.Printf("write  value log: %.2f s wall, %.2f s CPU (%.0f MB/s); pack pwrite: %.2f s wall, %.2f s CPU (%.0f MB/s); pack/vlog speed %.2f\n",
		vlogW.wall.Seconds(), vlogW.cpu.Seconds(), mbs(vlogW.wall), packW.wall.Seconds(), packW.cpu.Seconds(), mbs(packW.wall), vlogW.wall.Seconds()/packW.wall.Seconds())
	fmt.Printf("cold read  value log: %.2f s wall, %.2f s CPU (%.0f MB/s); pack pread: %.2f s wall, %.2f s CPU (%.0f MB/s); pack/vlog speed %.2f\n",
		vlogR.wall.Seconds(), vlogR.cpu.Seconds(), mbs(vlogR.wall), packR.wall.Seconds(), packR.cpu.Seconds(), mbs(packR.wall), vlogR.wall.Seconds()/packR.wall.Seconds())
	return nil
}

func dropCaches() {
	syscall.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
