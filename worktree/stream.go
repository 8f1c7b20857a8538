package worktree

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// stream imports a file written sequentially from empty while it is being
// written: each write is handed to the chunking pipeline at once, so no
// staging copy is made and hashing overlaps with the writer. Any read, any
// write elsewhere, a truncate or a flush ends the stream; the file then
// continues from the DAG of what was streamed.
type stream struct {
	pw    *bufferedPipe
	end   uint64 // bytes streamed
	done  chan struct{}
	batch *store.Batch
	node  unixfs.Node
	err   error
}

func (t *Tree) startStream(ctx context.Context) *stream {
	pw := newBufferedPipe(streamBuffers)
	pr := pw
	s := &stream{pw: pw, done: make(chan struct{}), batch: t.s.NewBatch()}
	go func() {
		defer close(s.done)
		s.node, s.err = t.importer(s.batch).ImportReader(context.WithoutCancel(ctx), pr)
		if s.err != nil {
			s.batch.Cancel()
		} else if s.err = s.batch.Close(); s.err == nil {
			t.recordBases(context.WithoutCancel(ctx), s.node.CID)
		}
		pr.closeRead(s.err) // unblock a writer if the import failed
	}()
	return s
}

func (s *stream) write(p []byte) error {
	if _, err := s.pw.Write(p); err != nil {
		return fmt.Errorf("streaming import: %w", err)
	}
	s.end += uint64(len(p))
	return nil
}

// finish ends the stream and returns the DAG of the streamed bytes.
func (s *stream) finish() (unixfs.Node, error) {
	s.pw.Close()
	<-s.done
	if s.err == nil && s.node.Size != s.end {
		s.err = fmt.Errorf("streaming import: stored %d of %d bytes", s.node.Size, s.end)
	}
	return s.node, s.err
}

// endStream turns an active stream into the file's base. Called with f.mu
// held for writing.
func (t *Tree) endStream(ino uint64, f *fileData) error {
	if f.stream == nil {
		return nil
	}
	s := f.stream
	f.stream = nil
	n, err := s.finish()
	if err != nil {
		// What was streamed is lost: the file is what it was before the
		// stream, rather than zeros where the data was.
		f.changed(f.baseLen, time.Now().UnixNano())
		return err
	}
	f.base, f.baseCID, f.baseTs, f.baseSz, f.baseLen = nil, n.CID, n.Tsize, n.Size, n.Size
	if f.size > n.Size {
		return nil // a hole follows what was streamed: the next flush imports the whole
	}
	t.pub.queue(ino, published{cid: n.CID, size: n.Size, tsize: n.Tsize})
	t.contentChanged(ino)
	return nil
}

// streamBuffers bounds the bytes queued between the writer and the chunker
// (each buffer holds one write, at most 1 MiB with the mount's MaxWrite).
const streamBuffers = 16

// bufferedPipe decouples the writer from the chunking pipeline: a write
// copies its bytes into a queue and returns, so the next FUSE write arrives
// while the previous one is being chunked and hashed.
type bufferedPipe struct {
	q        chan []byte
	free     chan []byte
	cur      []byte // unread part of whole
	whole    []byte // the buffer being read
	readFail chan struct{}
	err      error // set before readFail closes
}

func newBufferedPipe(n int) *bufferedPipe {
	return &bufferedPipe{q: make(chan []byte, n), free: make(chan []byte, n+1), readFail: make(chan struct{})}
}

func (p *bufferedPipe) Write(b []byte) (int, error) {
	select {
	case <-p.readFail:
		return 0, p.err
	default:
	}
	var buf []byte
	select {
	case buf = <-p.free:
	default:
	}
	buf = append(buf[:0], b...)
	select {
	case p.q <- buf:
		return len(b), nil
	case <-p.readFail:
		return 0, p.err
	}
}

// Close ends the stream for the reader.
func (p *bufferedPipe) Close() error {
	close(p.q)
	return nil
}

func (p *bufferedPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.whole != nil {
			select {
			case p.free <- p.whole[:0]:
			default:
			}
			p.whole = nil
		}
		buf, ok := <-p.q
		if !ok {
			return 0, io.EOF
		}
		p.cur, p.whole = buf, buf
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// closeRead makes later and blocked writes fail with err (the import
// stopped); a nil err means the reader finished normally.
func (p *bufferedPipe) closeRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.err = err
	close(p.readFail)
}
