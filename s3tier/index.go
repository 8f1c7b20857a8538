package s3tier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"
)

// packIndex is the index object of one pack: where each block lies in it.
// It is uploaded after its pack, so an index names only packs that exist.
type packIndex struct {
	// Pack is the pack's ID: 32 random bytes in hex, never reused, so that
	// a pack gc --s3 removes is never one a writer has just uploaded again.
	Pack   string       `json:"pack"`
	Size   int64        `json:"size"`
	Blocks []indexEntry `json:"blocks"`
}

type indexEntry struct {
	CID    string `json:"cid"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// loc is where a block lies in the bucket.
type loc struct {
	pack        string
	c           cid.Cid
	off, length int64
}

// maxIndexBytes bounds an index object (a 64 MiB pack of 4 KiB blocks
// has 16k entries of about 100 bytes).
const maxIndexBytes = 16 << 20

// index is the union of the bucket's pack indexes that this tier has read.
type index struct {
	t        *Tier
	mu       sync.Mutex
	byHash   map[string]loc   // by multihash
	packs    map[string][]loc // each pack's blocks by offset
	loaded   map[string]bool
	lastLoad time.Time
	loading  sync.Mutex // one listing at a time
}

func newIndex(t *Tier) *index {
	return &index{t: t, byHash: map[string]loc{}, packs: map[string][]loc{}, loaded: map[string]bool{}}
}

func (x *index) lookup(c cid.Cid) (loc, bool) {
	x.mu.Lock()
	l, ok := x.byHash[string(c.Hash())]
	x.mu.Unlock()
	return l, ok
}

// refresh reads the indexes added to the bucket since the last refresh.
// With maxAge > 0 it does nothing when the last refresh is that recent.
func (x *index) refresh(ctx context.Context, maxAge time.Duration) error {
	x.loading.Lock()
	defer x.loading.Unlock()
	if maxAge > 0 && time.Since(x.lastLoad) < maxAge {
		return nil
	}
	start := time.Now()
	ids, err := x.t.listPacks(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		x.mu.Lock()
		done := x.loaded[id]
		x.mu.Unlock()
		if done {
			continue
		}
		pi, err := x.t.readIndex(ctx, id)
		if err != nil {
			return err
		}
		x.add(pi)
	}
	x.lastLoad = start
	return nil
}

func (x *index) add(pi packIndex) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.loaded[pi.Pack] = true
	locs := make([]loc, 0, len(pi.Blocks))
	for _, e := range pi.Blocks {
		c, err := cid.Decode(e.CID)
		if err != nil {
			continue // readIndex checked them
		}
		l := loc{pack: pi.Pack, c: c, off: e.Offset, length: e.Length}
		x.byHash[string(c.Hash())] = l
		locs = append(locs, l)
	}
	sort.Slice(locs, func(i, j int) bool { return locs[i].off < locs[j].off })
	x.packs[pi.Pack] = locs
}

// following returns the blocks that follow l in its pack without a gap,
// as many as fit in limit bytes together with l.
func (x *index) following(l loc, limit int64) []loc {
	x.mu.Lock()
	defer x.mu.Unlock()
	locs := x.packs[l.pack]
	i := sort.Search(len(locs), func(i int) bool { return locs[i].off >= l.off })
	var out []loc
	end, size := l.off+l.length, l.length
	for i++; i < len(locs) && locs[i].off == end && size+locs[i].length <= limit; i++ {
		out = append(out, locs[i])
		end += locs[i].length
		size += locs[i].length
	}
	return out
}

// listPacks lists the pack IDs that have an index in the bucket.
func (t *Tier) listPacks(ctx context.Context) ([]string, error) {
	var ids []string
	prefix := t.loc.Prefix + "index/"
	t.st.getRequests.Add(1)
	for obj := range t.cl.ListObjects(ctx, t.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 %s: listing packs: %w", t.loc, obj.Err)
		}
		id := strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), ".idx")
		if isPackID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func isPackID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// ErrBadIndex means an index object in the bucket cannot be used.
var ErrBadIndex = errors.New("malformed pack index")

func (t *Tier) readIndex(ctx context.Context, id string) (packIndex, error) {
	b, err := t.getSmall(ctx, t.indexKey(id), maxIndexBytes)
	if err != nil {
		return packIndex{}, fmt.Errorf("s3: index of pack %s: %w", id, err)
	}
	var pi packIndex
	if err := json.Unmarshal(b, &pi); err != nil {
		return packIndex{}, fmt.Errorf("s3: index of pack %s: %w: %v", id, ErrBadIndex, err)
	}
	if pi.Pack != id {
		return packIndex{}, fmt.Errorf("s3: index of pack %s: %w: it names pack %q", id, ErrBadIndex, pi.Pack)
	}
	for _, e := range pi.Blocks {
		if _, err := cid.Decode(e.CID); err != nil || e.Offset < 0 || e.Length < 0 || e.Offset+e.Length > pi.Size {
			return packIndex{}, fmt.Errorf("s3: index of pack %s: %w: entry %+v", id, ErrBadIndex, e)
		}
	}
	return pi, nil
}

// errNoObject is a GET of a key that does not exist.
var errNoObject = errors.New("no such object")

// getSmall reads a whole object of at most limit bytes.
func (t *Tier) getSmall(ctx context.Context, key string, limit int64) ([]byte, error) {
	t.st.getRequests.Add(1)
	obj, err := t.cl.GetObject(ctx, t.loc.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, noObject(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		return nil, noObject(err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	return b, nil
}

func noObject(err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%w: %w", errNoObject, err)
	}
	return err
}
