package unixfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/chunker"
	mh "github.com/multiformats/go-multihash"
)

// Importer turns content into UnixFS file DAGs in a block store. Chunking,
// hashing and storing run as a pipeline: the splitter on one goroutine,
// sha2-256 on a worker per core, and the puts (and the tree) in order on the
// caller's goroutine.
type Importer struct {
	Put    BlockPutter
	Layout Layout
	// Workers hash chunks in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, if set, is called with the byte count of each chunk read.
	Progress func(n int)
}

// ImportReader imports a stream. Chunks are copied out of the splitter into
// a fixed set of buffers, which bounds the memory of the pipeline; the putter
// must not retain the data it is handed.
func (im *Importer) ImportReader(ctx context.Context, r io.Reader) (Node, error) {
	sp, err := im.Layout.Chunker.New(r)
	if err != nil {
		return Node{}, err
	}
	return im.run(ctx, sp)
}

type leafJob struct {
	data []byte
	cid  cid.Cid
	done chan struct{}
}

func (im *Importer) run(ctx context.Context, sp chunker.Splitter) (Node, error) {
	if im.Layout.MaxLinks < 2 {
		return Node{}, fmt.Errorf("unixfs: layout needs at least 2 links per node")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := im.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	depth := 4 * workers
	hashq := make(chan *leafJob, depth)
	orderq := make(chan *leafJob, depth)
	bufs := make(chan []byte, depth+2)
	for range cap(bufs) {
		bufs <- nil
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range hashq {
				sum := sha256.Sum256(j.data)
				h, _ := mh.Encode(sum[:], mh.SHA2_256)
				j.cid = cid.NewCidV1(cid.Raw, h)
				close(j.done)
			}
		}()
	}
	var readErr error
	go func() {
		defer close(orderq)
		defer close(hashq)
		for {
			ch, err := sp.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr = err
				}
				return
			}
			if im.Progress != nil {
				im.Progress(len(ch))
			}
			var buf []byte
			select {
			case buf = <-bufs:
			case <-ctx.Done():
				return
			}
			j := &leafJob{data: append(buf[:0], ch...), done: make(chan struct{})}
			select {
			case hashq <- j:
			case <-ctx.Done():
				return
			}
			select {
			case orderq <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	fb := newFileBuilder(ctx, im.Put, im.Layout.MaxLinks)
	var putErr error
	for j := range orderq {
		<-j.done
		if putErr != nil {
			continue
		}
		n := uint64(len(j.data))
		err := im.Put.Put(ctx, j.cid, j.data)
		bufs <- j.data
		if err != nil {
			putErr = err
			cancel()
			continue
		}
		if err := fb.addLeaf(Node{CID: j.cid, Size: n, Tsize: n}); err != nil {
			putErr = err
			cancel()
		}
	}
	wg.Wait()
	switch {
	case putErr != nil:
		return Node{}, putErr
	case readErr != nil:
		return Node{}, fmt.Errorf("read: %w", readErr)
	case ctx.Err() != nil:
		return Node{}, ctx.Err()
	}
	return fb.finish()
}
