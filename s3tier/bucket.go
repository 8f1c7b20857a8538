package s3tier

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// OpenBucket opens the bucket alone, without a local store, for Verify
// and Collect. Close it when done.
func OpenBucket(ctx context.Context, o Options) (*Tier, error) {
	o = o.withDefaults()
	cl := o.Client
	if cl == nil {
		var err error
		if cl, err = o.Location.Client(); err != nil {
			return nil, err
		}
	}
	ok, err := cl.BucketExists(ctx, o.Location.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", o.Location, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 %s: no such bucket", o.Location)
	}
	bg, cancel := context.WithCancel(context.Background())
	t := &Tier{o: o, cl: cl, loc: o.Location, ctx: bg, cancel: cancel}
	t.idx = newIndex(t)
	return t, nil
}

// BadBlock is a block of a pack that does not match its CID.
type BadBlock struct {
	Pack string `json:"pack"`
	CID  string `json:"cid"`
	Err  string `json:"error"`
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Packs      int        `json:"packs"`
	Blocks     int        `json:"blocks"`
	Bytes      int64      `json:"bytes"`
	BadPacks   []string   `json:"bad_packs"`  // packs holding a bad block
	BadBlocks  []BadBlock `json:"bad_blocks"` // blocks that fail their CID
	Unreadable []string   `json:"unreadable"` // packs or indexes that could not be read
	Refs       int        `json:"refs"`       // refs whose DAGs were walked
	Missing    []string   `json:"missing"`    // blocks refs reach that no pack holds
}

// Clean reports whether Verify found nothing wrong.
func (r VerifyReport) Clean() bool {
	return len(r.BadPacks)+len(r.BadBlocks)+len(r.Unreadable)+len(r.Missing) == 0
}

// Verify reads every pack whole, checks it against its ID and every block
// against its CID, then walks every ref's DAG to check that the bucket
// holds all of it.
func (t *Tier) Verify(ctx context.Context) (VerifyReport, error) {
	rep := VerifyReport{BadPacks: []string{}, BadBlocks: []BadBlock{}, Unreadable: []string{}, Missing: []string{}}
	ids, err := t.listPacks(ctx)
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		pi, err := t.readIndex(ctx, id)
		if err != nil {
			rep.Unreadable = append(rep.Unreadable, id)
			continue
		}
		t.idx.add(pi)
		rep.Packs++
		data, err := t.getRange(ctx, t.packKey(id), 0, pi.Size)
		if err != nil {
			rep.Unreadable = append(rep.Unreadable, id)
			continue
		}
		rep.Bytes += int64(len(data))
		bad := false
		for _, e := range pi.Blocks {
			rep.Blocks++
			c, _ := cid.Decode(e.CID) // readIndex checked it
			if err := unixfs.CheckHash(c, data[e.Offset:e.Offset+e.Length]); err != nil {
				rep.BadBlocks = append(rep.BadBlocks, BadBlock{Pack: id, CID: e.CID, Err: err.Error()})
				bad = true
			}
		}
		if bad {
			rep.BadPacks = append(rep.BadPacks, id)
		}
	}
	refs, err := t.Refs(ctx)
	if err != nil {
		return rep, err
	}
	m := newBucketMarker(t)
	for _, c := range refs {
		rep.Refs++
		if err := m.walk(ctx, c); err != nil {
			return rep, err
		}
	}
	rep.Missing = m.missing
	return rep, nil
}

// bucketMarker marks the blocks a set of roots reaches, reading links
// from the bucket.
type bucketMarker struct {
	t       *Tier
	marked  map[string]bool
	missing []string
}

func newBucketMarker(t *Tier) *bucketMarker {
	return &bucketMarker{t: t, marked: map[string]bool{}, missing: []string{}}
}

func (m *bucketMarker) walk(ctx context.Context, root cid.Cid) error {
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := string(c.Hash())
		if m.marked[k] || unixfs.IsIdentity(c) {
			continue
		}
		m.marked[k] = true
		l, ok := m.t.idx.lookup(c)
		if !ok {
			m.missing = append(m.missing, c.String())
			continue
		}
		if c.Prefix().Codec == cid.Raw {
			continue
		}
		b, err := m.t.fetchBlock(ctx, c, l)
		if err != nil {
			return fmt.Errorf("s3: reading %s: %w", c, err)
		}
		links, err := unixfs.Links(c, b)
		if err != nil {
			return fmt.Errorf("s3: %w", err)
		}
		stack = append(stack, links...)
	}
	return nil
}

// CollectOptions tunes Collect.
type CollectOptions struct {
	DryRun bool
	// MinAge keeps packs uploaded less than MinAge ago: a writer may be
	// about to publish the ref that needs them (default 1h; <0: none).
	MinAge time.Duration
	// Grace is how long packs stay condemned before they go: a writer that
	// checked its packs just before they were condemned publishes within
	// it, and the second marking sees its ref (default 30s).
	Grace time.Duration
}

// CollectReport says what Collect did.
type CollectReport struct {
	DryRun       bool     `json:"dry_run"`
	Refs         int      `json:"refs"`
	Packs        int      `json:"packs"`
	LiveBlocks   int      `json:"live_blocks"`
	Missing      int      `json:"missing"` // blocks refs reach that no pack holds
	KeptYoung    int      `json:"kept_young"`
	Removed      []string `json:"removed"` // pack IDs
	RemovedBytes int64    `json:"removed_bytes"`
	// MostlyGarbage are kept packs under a quarter live: repacking them is
	// not done yet.
	MostlyGarbage int `json:"mostly_garbage"`
}

// Collect removes the packs that no block any ref in the bucket reaches
// needs. It is safe against a writer pushing at the same time: young packs
// are kept, garbage packs are first condemned (a writer that sees a
// condemned pack pushes its blocks again), and only removed when a second
// marking after Grace still finds them unneeded.
func (t *Tier) Collect(ctx context.Context, o CollectOptions) (CollectReport, error) {
	if o.MinAge == 0 {
		o.MinAge = time.Hour
	}
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	rep := CollectReport{DryRun: o.DryRun, Removed: []string{}}
	cands, err := t.garbagePacks(ctx, o, &rep)
	if err != nil || len(cands) == 0 || o.DryRun {
		if o.DryRun {
			rep.Removed = cands
		}
		return rep, err
	}
	for _, id := range cands {
		if err := t.putObject(ctx, t.condemnKey(id), []byte(time.Now().UTC().Format(time.RFC3339)), minio.PutObjectOptions{}); err != nil {
			return rep, err
		}
	}
	select {
	case <-time.After(o.Grace):
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	again, err := t.garbagePacks(ctx, o, &CollectReport{})
	if err != nil {
		return rep, err
	}
	still := map[string]bool{}
	for _, id := range again {
		still[id] = true
	}
	sizes := t.packSizes()
	for _, id := range cands {
		if still[id] {
			// The index first: readers never see an index without its pack.
			if err := t.cl.RemoveObject(ctx, t.loc.Bucket, t.indexKey(id), minio.RemoveObjectOptions{}); err != nil {
				return rep, fmt.Errorf("s3 gc: removing index %s: %w", id, err)
			}
			if err := t.cl.RemoveObject(ctx, t.loc.Bucket, t.packKey(id), minio.RemoveObjectOptions{}); err != nil {
				return rep, fmt.Errorf("s3 gc: removing pack %s: %w", id, err)
			}
			rep.Removed = append(rep.Removed, id)
			rep.RemovedBytes += sizes[id]
		}
		if err := t.cl.RemoveObject(ctx, t.loc.Bucket, t.condemnKey(id), minio.RemoveObjectOptions{}); err != nil {
			return rep, fmt.Errorf("s3 gc: %w", err)
		}
	}
	return rep, nil
}

func (t *Tier) condemnKey(id string) string { return t.loc.Prefix + "condemned/" + id }

func (t *Tier) packSizes() map[string]int64 {
	out := map[string]int64{}
	t.idx.mu.Lock()
	defer t.idx.mu.Unlock()
	for _, l := range t.idx.byHash {
		if e := l.off + l.length; e > out[l.pack] {
			out[l.pack] = e
		}
	}
	return out
}

// garbagePacks marks from the bucket's refs and returns the packs old
// enough that hold no live block.
func (t *Tier) garbagePacks(ctx context.Context, o CollectOptions, rep *CollectReport) ([]string, error) {
	// Fresh index: a pack that disappeared must not linger in it.
	t.idx = newIndex(t)
	if err := t.idx.refresh(ctx, 0); err != nil {
		return nil, err
	}
	refs, err := t.Refs(ctx)
	if err != nil {
		return nil, err
	}
	m := newBucketMarker(t)
	for _, c := range refs {
		if err := m.walk(ctx, c); err != nil {
			return nil, err
		}
	}
	rep.Refs, rep.Missing = len(refs), len(m.missing)
	ages, err := t.indexAges(ctx)
	if err != nil {
		return nil, err
	}
	live, total := map[string]int{}, map[string]int{}
	t.idx.mu.Lock()
	for k, l := range t.idx.byHash {
		total[l.pack]++
		if m.marked[k] {
			live[l.pack]++
			rep.LiveBlocks++
		}
	}
	t.idx.mu.Unlock()
	rep.Packs = len(ages)
	var out []string
	for id, mod := range ages {
		switch {
		case live[id] > 0:
			if live[id]*4 < total[id] {
				rep.MostlyGarbage++
			}
		case o.MinAge > 0 && time.Since(mod) < o.MinAge:
			rep.KeptYoung++
		default:
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (t *Tier) indexAges(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	prefix := t.loc.Prefix + "index/"
	for obj := range t.cl.ListObjects(ctx, t.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 %s: listing packs: %w", t.loc, obj.Err)
		}
		id := strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), ".idx")
		if isPackID(id) {
			out[id] = obj.LastModified
		}
	}
	return out, nil
}

// condemned lists the packs a running gc --s3 is about to remove.
func (t *Tier) condemned(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	prefix := t.loc.Prefix + "condemned/"
	for obj := range t.cl.ListObjects(ctx, t.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 %s: listing condemned packs: %w", t.loc, obj.Err)
		}
		out[strings.TrimPrefix(obj.Key, prefix)] = true
	}
	return out, nil
}
