// Package s3tier keeps a repo's blocks and refs in an S3 bucket shared by
// several machines: writers pack the blocks their refs reach into objects
// of tens of MiB with an index, upload them in the background from a queue
// kept in the repo, and publish a ref only once every block it reaches is
// in the bucket; readers fetch missing blocks by ranged GETs of those
// packs, verify each against its CID before use, and cache them locally
// within a budget.
package s3tier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// Location names a bucket and a key prefix on an S3 endpoint.
type Location struct {
	Endpoint string // host:port
	Secure   bool   // https
	Region   string
	Bucket   string
	Prefix   string // "" or ending in "/"
}

// ParseURL reads s3://bucket/prefix?endpoint=http://host:port&region=R.
// Without endpoint the tier talks to AWS (s3.amazonaws.com over https).
func ParseURL(s string) (Location, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Location{}, fmt.Errorf("s3 URL %q: %w", s, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Location{}, fmt.Errorf("s3 URL %q: want s3://BUCKET[/PREFIX][?endpoint=http://HOST:PORT]", s)
	}
	if err := s3utils.CheckValidBucketNameStrict(u.Host); err != nil {
		return Location{}, fmt.Errorf("s3 URL %q: %w", s, err)
	}
	loc := Location{Bucket: u.Host, Endpoint: "s3.amazonaws.com", Secure: true, Region: u.Query().Get("region")}
	if p := strings.Trim(u.Path, "/"); p != "" {
		loc.Prefix = p + "/"
	}
	if ep := u.Query().Get("endpoint"); ep != "" {
		e, err := url.Parse(ep)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return Location{}, fmt.Errorf("s3 URL %q: endpoint %q: want http://HOST:PORT or https://HOST:PORT", s, ep)
		}
		loc.Endpoint, loc.Secure = e.Host, e.Scheme == "https"
	}
	if loc.Region == "" {
		loc.Region = os.Getenv("AWS_REGION")
	}
	if loc.Region == "" {
		loc.Region = "us-east-1"
	}
	return loc, nil
}

func (l Location) String() string {
	scheme := "http"
	if l.Secure {
		scheme = "https"
	}
	return fmt.Sprintf("s3://%s/%s?endpoint=%s://%s", l.Bucket, strings.TrimSuffix(l.Prefix, "/"), scheme, l.Endpoint)
}

// Client connects to the location with credentials from the usual AWS
// environment variables, then ~/.aws/credentials.
func (l Location) Client() (*minio.Client, error) {
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.EnvMinio{},
	})
	c, err := minio.New(l.Endpoint, &minio.Options{Creds: creds, Secure: l.Secure, Region: l.Region,
		BucketLookup: minio.BucketLookupPath, MaxRetries: 2}) // the tier retries on its own, with longer pauses
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", l, err)
	}
	return c, nil
}

// Options configures a Tier; zero fields take the defaults.
type Options struct {
	Location Location
	Client   *minio.Client // nil: Location.Client()
	// Push makes the tier a writer: it uploads what the local refs reach
	// and publishes them. Without it the tier only reads.
	Push bool
	// RootsOnly limits a writer to the roots queued with Enqueue (add
	// --s3): it neither pushes branches nor takes their leases.
	RootsOnly bool
	// Follow names bucket branches whose newest commit becomes the local
	// branch of the same name (refreshed every FollowInterval); the tier
	// never pushes them.
	Follow         []string
	FollowInterval time.Duration // default 2s
	PollInterval   time.Duration // how often a writer looks at its refs (default 1s)
	PackSize       int           // target pack size (default 32 MiB)
	PartSize       uint64        // multipart part size (default 16 MiB: larger packs go multipart)
	Concurrency    int           // ranged GETs in flight (default 32)
	CacheBytes     int64         // budget of fetched blocks kept locally (default 4 GiB; <0: unbounded)
	LeaseTTL       time.Duration // writer lease on a branch (default 60s)
	Backoff        time.Duration // first retry pause of uploads (default 250ms, doubling to 30s)
	// History is the repo's history, whose lock the follower's ref
	// updates share (nil: one over the local store).
	History *versions.History
	Logger  *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.FollowInterval <= 0 {
		o.FollowInterval = 2 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.PackSize <= 0 {
		o.PackSize = 32 << 20
	}
	if o.PartSize == 0 {
		o.PartSize = 16 << 20
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 4 << 30
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 60 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Tier is the bucket behind a local store: a block store that reads
// through to the bucket (see Store) and, for a writer, the uploader.
type Tier struct {
	o      Options
	local  *store.Badger
	hist   *versions.History
	cl     *minio.Client
	loc    Location
	owner  string // this repo's writer identity, for leases
	follow map[string]bool

	ctx    context.Context // background work; Close cancels it
	cancel context.CancelFunc
	bg     sync.WaitGroup // every goroutine the tier starts

	idx   *index
	reads *reader

	wake      chan struct{} // tells the uploader to look again
	drained   chan struct{} // closed and replaced each time the queue empties
	dmu       sync.Mutex
	lastErr   atomic.Pointer[string]
	fatal     atomic.Pointer[error] // the last error if retrying cannot help
	leases    *leaseSet
	ready     atomic.Bool // the bucket exists
	closeOnce sync.Once

	st counters
}

type counters struct {
	pushedBytes, pushedBlocks, packs, putRequests atomic.Int64
	remoteReads, remoteBytes, getRequests         atomic.Int64
	cacheHits, evicted, badBlocks                 atomic.Int64
	queue                                         atomic.Int64
}

// Stats are the tier's counters since it opened; Queue and CachedBytes
// are current values.
type Stats struct {
	Bucket       string `json:"bucket"`
	Queue        int64  `json:"queue"` // refs and roots waiting to be pushed
	PushedBytes  int64  `json:"pushed_bytes"`
	PushedBlocks int64  `json:"pushed_blocks"`
	Packs        int64  `json:"packs"` // packs uploaded
	PutRequests  int64  `json:"put_requests"`
	RemoteReads  int64  `json:"remote_reads"` // blocks fetched from the bucket
	RemoteBytes  int64  `json:"remote_bytes"`
	GetRequests  int64  `json:"get_requests"`
	CacheHits    int64  `json:"cache_hits"` // reads found locally
	BadBlocks    int64  `json:"bad_blocks"` // fetched bytes that failed their CID
	Evicted      int64  `json:"evicted"`    // cached blocks dropped for the budget
	CachedBytes  int64  `json:"cached_bytes"`
	LastError    string `json:"last_error,omitempty"`
}

// Stats returns the counters.
func (t *Tier) Stats() Stats {
	s := Stats{Bucket: t.loc.String(), Queue: t.st.queue.Load(), PushedBytes: t.st.pushedBytes.Load(),
		PushedBlocks: t.st.pushedBlocks.Load(), Packs: t.st.packs.Load(), PutRequests: t.st.putRequests.Load(),
		RemoteReads: t.st.remoteReads.Load(), RemoteBytes: t.st.remoteBytes.Load(), GetRequests: t.st.getRequests.Load(),
		CacheHits: t.st.cacheHits.Load(), BadBlocks: t.st.badBlocks.Load(), Evicted: t.st.evicted.Load()}
	if t.reads != nil {
		s.CachedBytes = t.reads.cachedBytes()
	}
	if t.o.Push && t.local != nil {
		// The uploader notices changed refs within PollInterval: count
		// them now, so that a commit shows as queued at once.
		if n, err := t.pending(context.Background()); err == nil {
			s.Queue = int64(n)
		}
	}
	if e := t.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// Open connects to the bucket (creating it when missing) and starts the
// tier's background work: the uploader for a writer, the followers.
func Open(ctx context.Context, local *store.Badger, o Options) (*Tier, error) {
	o = o.withDefaults()
	cl := o.Client
	if cl == nil {
		var err error
		if cl, err = o.Location.Client(); err != nil {
			return nil, err
		}
	}
	bg, cancel := context.WithCancel(context.Background())
	hist := o.History
	if hist == nil {
		hist = versions.New(local)
	}
	t := &Tier{o: o, local: local, hist: hist, cl: cl, loc: o.Location,
		ctx: bg, cancel: cancel, wake: make(chan struct{}, 1), drained: make(chan struct{}),
		follow: map[string]bool{}}
	for _, b := range o.Follow {
		t.follow[b] = true
	}
	// A writer opens with the server down (its queue waits); a reader
	// needs it.
	if err := t.ensureBucket(ctx); err != nil {
		if !o.Push {
			cancel()
			return nil, err
		}
		t.setErr(err)
		o.Logger.Warn("s3: bucket not reachable; uploads wait for it", "err", err)
	}
	t.idx = newIndex(t)
	t.leases = newLeaseSet(t)
	t.reads = newReader(t)
	if err := t.reads.loadCacheSize(ctx); err != nil {
		cancel()
		return nil, err
	}
	t.start(t.reads.writer)
	if o.Push {
		var err error
		if t.owner, err = t.ownerID(ctx); err != nil {
			t.Close()
			return nil, err
		}
		if o.RootsOnly {
			// no branch to hold
		} else if err := t.checkLeases(ctx); errors.Is(err, ErrLeased) {
			t.Close()
			return nil, err
		} else if err != nil {
			o.Logger.Warn("s3: cannot check the lease now; the uploader will", "err", err)
		}
		t.start(t.uploader)
		t.start(t.leases.renewer)
	}
	if len(o.Follow) > 0 {
		for _, b := range o.Follow {
			if err := t.followOnce(ctx, b); err != nil && !errors.Is(err, ErrNoRef) {
				t.Close()
				return nil, err
			}
		}
		t.start(t.follower)
	}
	return t, nil
}

// ensureBucket creates the bucket when it is missing.
func (t *Tier) ensureBucket(ctx context.Context) error {
	if t.ready.Load() {
		return nil
	}
	ok, err := t.cl.BucketExists(ctx, t.loc.Bucket)
	if err != nil {
		return fmt.Errorf("s3 %s: %w", t.loc, err)
	}
	if !ok {
		if err := t.cl.MakeBucket(ctx, t.loc.Bucket, minio.MakeBucketOptions{Region: t.loc.Region}); err != nil {
			return fmt.Errorf("s3 %s: creating the bucket: %w", t.loc, err)
		}
	}
	t.ready.Store(true)
	return nil
}

// start runs fn in a goroutine the tier owns; Close waits for it.
func (t *Tier) start(fn func(ctx context.Context)) {
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		fn(t.ctx)
	}()
}

// Close stops the background work and waits for it. What is still queued
// stays queued in the repo for the next Open. It does not close the local
// store. A second Close does nothing.
func (t *Tier) Close() { t.closeOnce.Do(t.close) }

func (t *Tier) close() {
	t.cancel()
	if t.reads != nil {
		t.reads.stop()
	}
	t.bg.Wait()
	if t.leases != nil {
		t.leases.releaseAll()
	}
}

// Kick makes the uploader look at the refs now rather than at its next
// poll (call it after a commit).
func (t *Tier) Kick() { t.kick() }

// Location is where the tier keeps its objects.
func (t *Tier) Location() Location { return t.loc }

// Metadata keys in the local store.
const (
	keyOwner     = "s3/owner"
	keyQueue     = "s3/queue/"     // + kind/name: CID to push and publish
	keyPushed    = "s3/pushed/"    // + multihash: the pack that holds it
	keyDone      = "s3/done/"      // + multihash: whole DAG below is in the bucket
	keyPublished = "s3/published/" // + kind/name: CID last published
	keyCache     = "s3/cache/"     // + 16-digit sequence: a fetched block (CID bytes)
)

func (t *Tier) ownerID(ctx context.Context) (string, error) {
	v, err := t.local.GetMeta(ctx, keyOwner)
	if err == nil {
		return string(v), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("s3: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	id := host + "-" + hex.EncodeToString(b[:])
	if err := t.local.SetMeta(ctx, keyOwner, []byte(id)); err != nil {
		return "", fmt.Errorf("s3: %w", err)
	}
	return id, nil
}

// Object keys in the bucket, under the prefix.
func (t *Tier) packKey(id string) string  { return t.loc.Prefix + "packs/" + id + ".pack" }
func (t *Tier) indexKey(id string) string { return t.loc.Prefix + "index/" + id + ".idx" }
func (t *Tier) refKey(kind, name string) string {
	return t.loc.Prefix + "refs/" + kind + "/" + name
}
func (t *Tier) leaseKey(branch string) string { return t.loc.Prefix + "leases/" + branch }

func (t *Tier) setErr(err error) {
	if err == nil {
		t.lastErr.Store(nil)
		t.fatal.Store(nil)
		return
	}
	s := err.Error()
	t.lastErr.Store(&s)
	if permanent(err) {
		t.fatal.Store(&err)
	}
}

// permanent reports whether retrying err cannot help until someone changes
// something (credentials, the bucket, a lease): Drain stops waiting on it,
// the uploader keeps retrying.
func permanent(err error) bool {
	if errors.Is(err, ErrLeased) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch minio.ToErrorResponse(e).Code {
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidBucketName", "AllAccessDisabled":
			return true
		}
	}
	return false
}
