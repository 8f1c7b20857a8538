package s3tier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"

	"github.com/ipfrs/ipfrs-mount/store"
)

// ErrNoRef means the bucket has no such ref.
var ErrNoRef = errors.New("no such ref in the bucket")

// ErrLeased means another writer holds the branch in the bucket.
var ErrLeased = errors.New("branch is held by another writer")

func (t *Tier) putRef(ctx context.Context, kind, name string, c cid.Cid) error {
	return t.putRetrying(ctx, t.refKey(kind, name), []byte(c.String()+"\n"))
}

// Ref returns the CID the bucket's ref kind/name names.
func (t *Tier) Ref(ctx context.Context, kind, name string) (cid.Cid, error) {
	b, err := t.getSmall(ctx, t.refKey(kind, name), 1024)
	if errors.Is(err, errNoObject) {
		return cid.Undef, fmt.Errorf("s3: %s/%s: %w", kind, name, ErrNoRef)
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("s3: %s/%s: %w", kind, name, err)
	}
	c, err := cid.Decode(strings.TrimSpace(string(b)))
	if err != nil {
		return cid.Undef, fmt.Errorf("s3: %s/%s: %w", kind, name, err)
	}
	return c, nil
}

// Refs lists the bucket's refs of every kind: kind/name -> CID.
func (t *Tier) Refs(ctx context.Context) (map[string]cid.Cid, error) {
	out := map[string]cid.Cid{}
	prefix := t.loc.Prefix + "refs/"
	t.st.getRequests.Add(1)
	for obj := range t.cl.ListObjects(ctx, t.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 %s: listing refs: %w", t.loc, obj.Err)
		}
		kind, name, ok := strings.Cut(strings.TrimPrefix(obj.Key, prefix), "/")
		if !ok {
			continue
		}
		c, err := t.Ref(ctx, kind, name)
		if errors.Is(err, ErrNoRef) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		out[kind+"/"+name] = c
	}
	return out, nil
}

// follower moves the followed local branches to the bucket's commits.
func (t *Tier) follower(ctx context.Context) {
	tick := time.NewTicker(t.o.FollowInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, b := range t.o.Follow {
			if err := t.followOnce(ctx, b); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNoRef) {
				t.setErr(err)
				t.o.Logger.Warn("s3: following", "branch", b, "err", err)
			}
		}
	}
}

// Follow makes the local branch the bucket's branch of the same name now.
func (t *Tier) Follow(ctx context.Context, branch string) error { return t.followOnce(ctx, branch) }

// followOnce fetches the bucket's commit of branch (and the commits
// before it that are not here), then moves the local branch to it. The
// trees are read through when they are read.
func (t *Tier) followOnce(ctx context.Context, branch string) error {
	c, err := t.Ref(ctx, KindBranch, branch)
	if err != nil {
		return err
	}
	branches, err := t.hist.Branches(ctx)
	if err != nil {
		return err
	}
	if branches[branch] == c {
		return nil
	}
	if err := t.idx.refresh(ctx, 0); err != nil {
		return err
	}
	// Commits are kept locally, outside the cache: the history reads them
	// from the local store.
	stack := []cid.Cid{c}
	for len(stack) > 0 {
		cc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if ok, err := t.local.Has(ctx, cc); err != nil {
			return err
		} else if ok {
			continue
		}
		l, ok := t.idx.lookup(cc)
		if !ok {
			return fmt.Errorf("s3: branch %s: commit %s: %w (not in the bucket)", branch, cc, store.ErrNotFound)
		}
		b, err := t.fetchBlock(ctx, cc, l)
		if err != nil {
			return fmt.Errorf("s3: branch %s: %w", branch, err)
		}
		if err := t.local.Put(ctx, cc, b); err != nil {
			return err
		}
		cm, err := t.hist.Get(ctx, cc)
		if err != nil {
			return fmt.Errorf("s3: branch %s: %w", branch, err)
		}
		stack = append(stack, cm.Parents...)
	}
	if err := t.hist.SetBranch(ctx, branch, c); err != nil {
		return err
	}
	t.o.Logger.Info("s3: following", "branch", branch, "commit", c.String())
	return nil
}

// lease is the object that names a branch's writer.
type lease struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// leaseSet holds this writer's leases and renews them.
type leaseSet struct {
	t    *Tier
	mu   sync.Mutex
	held map[string]time.Time // branch -> last renewed
}

func newLeaseSet(t *Tier) *leaseSet { return &leaseSet{t: t, held: map[string]time.Time{}} }

// hold takes or renews the lease on branch; ErrLeased when another
// writer's lease has not expired.
func (ls *leaseSet) hold(ctx context.Context, branch string) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if at, ok := ls.held[branch]; ok && time.Since(at) < ls.t.o.LeaseTTL/3 {
		return nil
	}
	return ls.take(ctx, branch)
}

func (ls *leaseSet) take(ctx context.Context, branch string) error {
	t := ls.t
	cur, err := t.readLease(ctx, branch)
	switch {
	case errors.Is(err, errNoObject):
	case err != nil:
		return fmt.Errorf("s3: lease on branch %s: %w", branch, err)
	case cur.Owner != t.owner && time.Now().Before(cur.Expires):
		return fmt.Errorf("s3: branch %s: %w (%s, until %s); mount with --follow %s to read it",
			branch, ErrLeased, cur.Owner, cur.Expires.UTC().Format(time.RFC3339), branch)
	}
	now := time.Now()
	b, _ := json.Marshal(lease{Owner: t.owner, Expires: now.Add(t.o.LeaseTTL)})
	if err := t.putObject(ctx, t.leaseKey(branch), b, minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("s3: lease on branch %s: %w", branch, err)
	}
	// Two writers that both saw no lease both wrote one: the last write
	// wins, and the other sees it here.
	if got, err := t.readLease(ctx, branch); err == nil && got.Owner != t.owner {
		return fmt.Errorf("s3: branch %s: %w (%s)", branch, ErrLeased, got.Owner)
	}
	ls.held[branch] = now
	return nil
}

func (t *Tier) readLease(ctx context.Context, branch string) (lease, error) {
	b, err := t.getSmall(ctx, t.leaseKey(branch), 4096)
	if err != nil {
		return lease{}, err
	}
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return lease{}, fmt.Errorf("lease of %s: %w", branch, err)
	}
	return l, nil
}

// renewer keeps the held leases alive.
func (ls *leaseSet) renewer(ctx context.Context) {
	tick := time.NewTicker(ls.t.o.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ls.mu.Lock()
		for b := range ls.held {
			if err := ls.take(ctx, b); err != nil && ctx.Err() == nil {
				delete(ls.held, b)
				ls.t.setErr(err)
				ls.t.o.Logger.Warn("s3: renewing a lease", "branch", b, "err", err)
			}
		}
		ls.mu.Unlock()
	}
}

// releaseAll removes this writer's leases (a clean close); a writer that
// dies leaves them to expire.
func (ls *leaseSet) releaseAll() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for b := range ls.held {
		if cur, err := ls.t.readLease(ctx, b); err == nil && cur.Owner == ls.t.owner {
			_ = ls.t.cl.RemoveObject(ctx, ls.t.loc.Bucket, ls.t.leaseKey(b), minio.RemoveObjectOptions{})
		}
		delete(ls.held, b)
	}
}

// checkLeases refuses to open a writer on a HEAD branch another writer
// holds.
func (t *Tier) checkLeases(ctx context.Context) error {
	head, _, err := t.hist.Head(ctx)
	if err != nil {
		return err
	}
	if t.follow[head] {
		return nil
	}
	return t.leases.hold(ctx, head)
}
