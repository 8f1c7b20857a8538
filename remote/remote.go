// Package remote reads blocks missing from the local store from IPFS
// trustless gateways (GET /ipfs/{cid}?format=raw): each block is hashed
// against its CID before it is used or stored, then cached in the local
// store, where it is ordinary garbage to GC unless something pins or
// references it. Fetches are deduplicated, bounded in number, and started
// ahead of reads by WillNeed (which the prefetcher calls for every leaf it
// is about to read), so that sequential reads become parallel fetches.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// ErrUnavailable means no gateway returned a block that matches its CID:
// the block is missing everywhere, a gateway lied, or none answered in
// time. Reads through a mount turn it into EIO.
var ErrUnavailable = errors.New("block not available from any gateway")

// ErrInvalid means a gateway sent a block that hashes to its CID but is
// not a consistent node (see unixfs.CheckBlock): it is not stored.
var ErrInvalid = errors.New("invalid block")

// MaxBlockSize is the largest block a gateway may send (2 MiB, the largest
// block IPFS exchanges). A response that runs past it is cut off and
// rejected, whatever its Content-Length said.
const MaxBlockSize = 2 << 20

// Options configures a Store; zero fields take the defaults.
type Options struct {
	Gateways    []string      // base URLs, e.g. http://10.0.0.1:8080
	Timeout     time.Duration // per HTTP request (default 30s)
	Retries     int           // further rounds over all gateways after the first (default 2; <0: none)
	Backoff     time.Duration // before the second round, doubling after (default 200ms)
	Concurrency int           // fetches in flight at once (default 16)
	// MaxQueued bounds fetches started by WillNeed and not yet done; past
	// it a hint is dropped (the read fetches when it comes). Default 4096.
	MaxQueued int
	Client    *http.Client
	Logger    *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 2
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = 200 * time.Millisecond
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 4096
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: o.Concurrency,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ParseGateways splits a comma-separated list of gateway URLs and checks
// each one.
func ParseGateways(list string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway %q: want an http:// or https:// URL", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no gateway URL given")
	}
	return out, nil
}

// Store is the local block store with gateways behind it for reads.
// Writes go to the local store only.
type Store struct {
	local *store.Badger
	o     Options
	slots chan struct{} // one per fetch on the network

	ctx    context.Context // fetches outlive the read that started them
	cancel context.CancelFunc

	mu       sync.Mutex
	inflight map[string]*fetch // by multihash
	running  sync.WaitGroup
	puts     chan put
	writing  sync.WaitGroup

	fetched, fetchedBytes, failed, requests atomic.Int64
}

var (
	_ unixfs.BlockViewer = (*Store)(nil)
	_ unixfs.WillNeeder  = (*Store)(nil)
	_ unixfs.BlockPutter = (*Store)(nil)
)

// fetch is one block on its way from the network; done closes when data or
// err is set.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// New puts gateways behind local. Close stops the fetches in flight.
func New(local *store.Badger, o Options) *Store {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{local: local, o: o, slots: make(chan struct{}, o.Concurrency),
		ctx: ctx, cancel: cancel, inflight: map[string]*fetch{}, puts: make(chan put, o.Concurrency)}
	s.writing.Add(1)
	go func() {
		defer s.writing.Done()
		s.writer()
	}()
	return s
}

// Close cancels the fetches in flight and waits for them; it does not
// close the local store.
func (s *Store) Close() {
	s.cancel()
	s.running.Wait()
	close(s.puts)
	s.writing.Wait()
}

// Wait returns once every fetch started so far has ended, its block
// stored: a view returns as soon as the bytes are verified, before they
// are written.
func (s *Store) Wait() { s.running.Wait() }

// Local is the store under the gateways.
func (s *Store) Local() *store.Badger { return s.local }

// TempPin registers a temporary pin in the local store (open DAGs are GC
// roots while they are read).
func (s *Store) TempPin() *store.TempPin { return s.local.TempPin() }

// Put stores a block locally.
func (s *Store) Put(ctx context.Context, c cid.Cid, data []byte) error {
	return s.local.Put(ctx, c, data)
}

// Stats counts what the gateways served.
type Stats struct {
	Fetched      int64 // blocks fetched, verified and stored
	FetchedBytes int64
	Failed       int64 // blocks no gateway could give
	Requests     int64 // HTTP requests made
}

// Stats returns the counters so far.
func (s *Store) Stats() Stats {
	return Stats{Fetched: s.fetched.Load(), FetchedBytes: s.fetchedBytes.Load(),
		Failed: s.failed.Load(), Requests: s.requests.Load()}
}

var _ unixfs.CheckedViewer = (*Store)(nil)

// View calls fn with the block's bytes: from the local store, else from a
// gateway (verified, then stored locally).
func (s *Store) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	return s.ViewChecked(ctx, c, func(b []byte, _ bool) error { return fn(b) })
}

// ViewChecked is View for readers that check what they read (see
// store.Badger.ViewChecked): fetched bytes come checked, for they were
// hashed against c when they arrived.
func (s *Store) ViewChecked(ctx context.Context, c cid.Cid, fn func(b []byte, checked bool) error) error {
	called := false
	err := s.local.ViewChecked(ctx, c, func(b []byte, checked bool) error { called = true; return fn(b, checked) })
	if called || !errors.Is(err, store.ErrNotFound) {
		return err
	}
	f := s.start(c, true)
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	return fn(f.data, true)
}

// WillNeed starts fetching a block that is not stored, in the
// background. It does not wait.
func (s *Store) WillNeed(ctx context.Context, c cid.Cid) error {
	if ok, err := s.local.Has(ctx, c); err != nil || ok {
		return err
	}
	s.start(c, false)
	return nil
}

// start returns the fetch of c in flight, starting one if there is none.
// A hint (must false) is dropped when too many fetches are queued.
func (s *Store) start(c cid.Cid, must bool) *fetch {
	key := string(c.Hash())
	s.mu.Lock()
	f, ok := s.inflight[key]
	if !ok && (must || len(s.inflight) < s.o.MaxQueued) {
		f = &fetch{done: make(chan struct{})}
		s.inflight[key] = f
		s.running.Add(1)
		go s.run(c, key, f)
	}
	s.mu.Unlock()
	if f == nil {
		return &fetch{} // dropped hint: nobody waits on it
	}
	return f
}

func (s *Store) run(c cid.Cid, key string, f *fetch) {
	stored := false
	defer func() {
		if !stored {
			close(f.done)
			s.finish(key)
		}
	}()
	select {
	case s.slots <- struct{}{}:
	case <-s.ctx.Done():
		f.err = fmt.Errorf("block %s: %w", c, s.ctx.Err())
		return
	}
	// Another fetch of the same block may have stored it meanwhile.
	err := s.local.View(s.ctx, c, func(b []byte) error {
		f.data = append([]byte(nil), b...)
		return nil
	})
	if err == nil {
		<-s.slots
		return
	}
	f.data, f.err = s.fetchAny(s.ctx, c)
	<-s.slots // the network is done; storing takes no slot
	if f.err == nil {
		// The same checks as a CAR import's, on the one block: a node
		// whose fields contradict each other (a file claiming bytes it
		// does not hold, a name twice) is refused before anyone shows a
		// size or a listing from it, and never stored.
		if _, err := unixfs.CheckBlock(c, f.data); err != nil {
			f.data, f.err = nil, fmt.Errorf("block %s from the gateways: %w: %w", c, ErrInvalid, err)
		}
	}
	if f.err != nil {
		s.failed.Add(1)
		s.o.Logger.Warn("remote: no gateway has the block", "cid", c.String(), "err", f.err)
		return
	}
	s.fetched.Add(1)
	s.fetchedBytes.Add(int64(len(f.data)))
	// The readers go on while the writer stores the block; f.data is not
	// changed after this.
	stored = true
	close(f.done)
	s.puts <- put{c: c, key: key, data: f.data}
}

// finish ends a fetch: out of the map (only once its block is stored, so
// that a view meanwhile waits on it rather than fetching again).
func (s *Store) finish(key string) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	s.running.Done()
}

// put is a fetched, verified block on its way to the local store.
type put struct {
	c    cid.Cid
	key  string
	data []byte
}

// maxPutGroup bounds the bytes of one commit of fetched blocks.
const maxPutGroup = 32 << 20

// writer stores fetched blocks, as many to a commit as have arrived (a
// commit per block would cost more than the network).
func (s *Store) writer() {
	ctx := context.WithoutCancel(s.ctx)
	for p := range s.puts {
		group, size := []put{p}, len(p.data)
	more:
		for size < maxPutGroup {
			select {
			case q, ok := <-s.puts:
				if !ok {
					break more
				}
				group, size = append(group, q), size+len(q.data)
			default:
				break more
			}
		}
		blocks := make([]store.Block, len(group))
		for i, q := range group {
			blocks[i] = store.Block{CID: q.c, Data: q.data}
		}
		if err := s.local.PutMany(ctx, blocks); err != nil {
			// The verified bytes served their reads; the next read fetches again.
			s.o.Logger.Warn("remote: caching fetched blocks", "blocks", len(blocks), "err", err)
		}
		for _, q := range group {
			s.finish(q.key)
		}
	}
}

// fetchAny tries every gateway in turn, in rounds with a growing pause
// between them, until one returns bytes that hash to c. A gateway that
// answered 404 or sent wrong bytes is not asked again.
func (s *Store) fetchAny(ctx context.Context, c cid.Cid) ([]byte, error) {
	var errs []error
	done := make([]bool, len(s.o.Gateways))
	pause := s.o.Backoff
	notFound := 0
	for round := 0; round <= s.o.Retries; round++ {
		if round > 0 {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil, fmt.Errorf("block %s: %w", c, ctx.Err())
			}
			pause *= 2
		}
		for i, gw := range s.o.Gateways {
			if done[i] {
				continue
			}
			b, err := s.fetchOne(ctx, gw, c)
			if err == nil {
				return b, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("block %s: %w", c, ctx.Err())
			}
			errs = append(errs, fmt.Errorf("%s: %w", gw, err))
			var st statusError
			switch {
			case errors.As(err, &st) && st == http.StatusNotFound:
				done[i] = true
				notFound++
			case errors.Is(err, unixfs.ErrHashMismatch), errors.Is(err, errTooLarge):
				done[i] = true
			}
		}
		if countTrue(done) == len(done) {
			break // every gateway gave a final answer
		}
	}
	detail := errors.Join(errs...)
	if notFound == len(s.o.Gateways) {
		// Missing everywhere: also "not found", so that a lookup by CID
		// answers ENOENT rather than EIO.
		return nil, fmt.Errorf("block %s: %w: %w (%w)", c, ErrUnavailable, store.ErrNotFound, detail)
	}
	return nil, fmt.Errorf("block %s: %w (%w)", c, ErrUnavailable, detail)
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// statusError is a gateway's non-200 answer.
type statusError int

func (e statusError) Error() string {
	return fmt.Sprintf("HTTP %d %s", int(e), http.StatusText(int(e)))
}

var errTooLarge = fmt.Errorf("response larger than %d bytes", MaxBlockSize)

// fetchOne asks one gateway for the raw block c, within the timeout, and
// checks the bytes against c.
func (s *Store) fetchOne(ctx context.Context, gw string, c cid.Cid) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gw+"/ipfs/"+c.String()+"?format=raw", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	s.requests.Add(1)
	resp, err := s.o.Client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("no answer within %v", s.o.Timeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return nil, statusError(resp.StatusCode)
	}
	if resp.ContentLength > MaxBlockSize {
		return nil, errTooLarge
	}
	buf := make([]byte, 0, min(max(resp.ContentLength, 0), MaxBlockSize)+1)
	b, err := readAllLimit(resp.Body, buf, MaxBlockSize)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("no whole answer within %v", s.o.Timeout)
		}
		return nil, err
	}
	if err := unixfs.CheckHash(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readAllLimit reads r to its end into buf, failing once more than limit
// bytes have come.
func readAllLimit(r io.Reader, buf []byte, limit int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
