package s3tier

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Kinds of queued and published refs; they name the bucket's folders
// under refs/.
const (
	KindBranch = "branches"
	KindTag    = "tags"
	KindRoot   = "roots" // content added without a commit (add --s3); the name is the CID
)

// Enqueue queues c to be pushed and then published as ref kind/name. The
// queue is in the repo: it survives a restart.
func (t *Tier) Enqueue(ctx context.Context, kind, name string, c cid.Cid) error {
	if err := t.local.SetMeta(ctx, keyQueue+kind+"/"+name, c.Bytes()); err != nil {
		return fmt.Errorf("s3: queueing %s/%s: %w", kind, name, err)
	}
	t.kick()
	return nil
}

func (t *Tier) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Drain waits until everything queued when it was called, and every ref
// changed before it, is in the bucket and published.
func (t *Tier) Drain(ctx context.Context) error {
	if !t.o.Push {
		return errors.New("s3: drain: this tier does not push")
	}
	t.dmu.Lock()
	ch := t.drained
	t.dmu.Unlock()
	t.kick()
	// The pass that closes ch may have started before this call: wait for
	// the one after it too.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 2; {
		select {
		case <-ch:
			i++
		case <-tick.C:
			if e := t.fatal.Load(); e != nil {
				return fmt.Errorf("s3: drain: %w (%d refs queued; they stay queued)", *e, t.Stats().Queue)
			}
			continue
		case <-ctx.Done():
			st := t.Stats()
			return fmt.Errorf("s3: drain: %w (%d refs queued; last error: %s)", ctx.Err(), st.Queue, st.LastError)
		}
		t.dmu.Lock()
		ch = t.drained
		t.dmu.Unlock()
		t.kick()
	}
	return nil
}

// uploader pushes the queue, pass after pass, until the tier closes.
func (t *Tier) uploader(ctx context.Context) {
	tick := time.NewTicker(t.o.PollInterval)
	defer tick.Stop()
	pause := t.o.Backoff
	for {
		err := t.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := t.o.PollInterval
		if err != nil {
			t.setErr(err)
			t.o.Logger.Warn("s3: push", "err", err, "retry_in", pause)
			wait, pause = pause, min(pause*2, 30*time.Second)
		} else {
			pause = t.o.Backoff
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-t.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// pass queues the local refs that changed, pushes the queue, and signals
// the drainers when it is empty.
func (t *Tier) pass(ctx context.Context) error {
	if err := t.ensureBucket(ctx); err != nil {
		return err
	}
	if !t.o.RootsOnly {
		if err := t.queueChangedRefs(ctx); err != nil {
			return err
		}
	}
	queue, err := t.queued(ctx)
	if err != nil {
		return err
	}
	t.st.queue.Store(int64(len(queue)))
	for _, q := range queue {
		if err := t.pushRef(ctx, q); err != nil {
			return err
		}
		t.st.queue.Add(-1)
	}
	if len(queue) > 0 {
		t.kick() // look again at once before saying it is drained
		return nil
	}
	t.setErr(nil)
	t.dmu.Lock()
	close(t.drained)
	t.drained = make(chan struct{})
	t.dmu.Unlock()
	return nil
}

type queuedRef struct {
	kind, name string
	c          cid.Cid
}

func (t *Tier) queued(ctx context.Context) ([]queuedRef, error) {
	var out []queuedRef
	err := t.local.ScanMeta(ctx, keyQueue, func(key string, v []byte) error {
		kind, name, ok := strings.Cut(key[len(keyQueue):], "/")
		c, err := cid.Cast(v)
		if !ok || err != nil {
			t.o.Logger.Warn("s3: dropping a malformed queue entry", "key", key)
			return nil
		}
		if t.o.RootsOnly && kind != KindRoot {
			return nil
		}
		out = append(out, queuedRef{kind: kind, name: name, c: c})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3: reading the queue: %w", err)
	}
	return out, nil
}

// pending counts what is queued plus the refs changed and not queued yet.
func (t *Tier) pending(ctx context.Context) (int, error) {
	n := 0
	queued := map[string]bool{}
	err := t.local.ScanMeta(ctx, keyQueue, func(key string, _ []byte) error {
		kind, _, _ := strings.Cut(key[len(keyQueue):], "/")
		if !t.o.RootsOnly || kind == KindRoot {
			queued[key[len(keyQueue):]] = true
			n++
		}
		return nil
	})
	if err != nil || t.o.RootsOnly {
		return n, err
	}
	changed, err := t.changedRefs(ctx)
	for _, r := range changed {
		if !queued[r.kind+"/"+r.name] {
			n++
		}
	}
	return n, err
}

// changedRefs returns the local branches and tags whose commit is not the
// one last published (followed branches excepted).
func (t *Tier) changedRefs(ctx context.Context) ([]queuedRef, error) {
	branches, err := t.hist.Branches(ctx)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	tags, err := t.hist.Tags(ctx)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	var out []queuedRef
	for kind, refs := range map[string]map[string]cid.Cid{KindBranch: branches, KindTag: tags} {
		for name, c := range refs {
			if kind == KindBranch && t.follow[name] {
				continue
			}
			pub, _ := t.local.GetMeta(ctx, keyPublished+kind+"/"+name)
			if !bytes.Equal(pub, c.Bytes()) {
				out = append(out, queuedRef{kind: kind, name: name, c: c})
			}
		}
	}
	return out, nil
}

// queueChangedRefs queues every local branch and tag whose commit is not
// the one last published (followed branches excepted).
func (t *Tier) queueChangedRefs(ctx context.Context) error {
	branches, err := t.hist.Branches(ctx)
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	tags, err := t.hist.Tags(ctx)
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	return t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		for kind, refs := range map[string]map[string]cid.Cid{KindBranch: branches, KindTag: tags} {
			for name, c := range refs {
				if kind == KindBranch && t.follow[name] {
					continue
				}
				pub, _ := txn.Get(keyPublished + kind + "/" + name)
				q, _ := txn.Get(keyQueue + kind + "/" + name)
				if bytes.Equal(pub, c.Bytes()) || bytes.Equal(q, c.Bytes()) {
					continue
				}
				if err := txn.Set(keyQueue+kind+"/"+name, c.Bytes()); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// pushRef uploads every block q.c reaches that the bucket lacks, then
// publishes the ref: a reader never sees a ref whose blocks are not all
// there.
func (t *Tier) pushRef(ctx context.Context, q queuedRef) error {
	if q.kind == KindBranch {
		if err := t.leases.hold(ctx, q.name); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		used, err := t.pushDAG(ctx, q.c)
		if err != nil {
			return fmt.Errorf("s3: pushing %s/%s (%s): %w", q.kind, q.name, q.c, err)
		}
		// gc --s3 may have removed a pack this DAG relied on (one that held
		// only garbage when it looked): forget such packs and push again.
		gone, err := t.missingPacks(ctx, used)
		if err != nil {
			return err
		}
		if len(gone) == 0 {
			break
		}
		if attempt == 2 {
			return fmt.Errorf("s3: pushing %s/%s: packs keep disappearing: %v", q.kind, q.name, gone)
		}
		if err := t.forgetPacks(ctx, gone); err != nil {
			return err
		}
	}
	if err := t.putRef(ctx, q.kind, q.name, q.c); err != nil {
		return err
	}
	err := t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		if err := txn.Set(keyPublished+q.kind+"/"+q.name, q.c.Bytes()); err != nil {
			return err
		}
		if err := txn.Set(keyDone+string(q.c.Hash()), nil); err != nil {
			return err
		}
		if v, _ := txn.Get(keyQueue + q.kind + "/" + q.name); bytes.Equal(v, q.c.Bytes()) {
			return txn.Delete(keyQueue + q.kind + "/" + q.name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	t.o.Logger.Info("s3: published", "ref", q.kind+"/"+q.name, "cid", q.c.String())
	return nil
}

// pushDAG uploads the blocks below root that the bucket lacks, in packs,
// and returns the packs the DAG's blocks are in.
func (t *Tier) pushDAG(ctx context.Context, root cid.Cid) (map[string]bool, error) {
	p := newPacker(t)
	defer p.wait()
	used := map[string]bool{}
	seen := map[string]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			p.wait()
			return nil, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := string(c.Hash())
		if seen[k] || unixfs.IsIdentity(c) {
			continue
		}
		seen[k] = true
		if _, err := t.local.GetMeta(ctx, keyDone+k); err == nil {
			continue // pushed whole before
		}
		var links []cid.Cid
		inBucket := false
		if v, err := t.local.GetMeta(ctx, keyPushed+k); err == nil {
			used[string(v)] = true
			inBucket = true
		}
		err := t.local.View(ctx, c, func(b []byte) error {
			if c.Prefix().Codec != cid.Raw {
				var err error
				if links, err = unixfs.Links(c, b); err != nil {
					return err
				}
			}
			if !inBucket {
				return p.add(ctx, c, b)
			}
			return nil
		})
		if errors.Is(err, store.ErrNotFound) {
			// Not here: fine if the bucket has it (a block read through).
			l, ok := t.idx.lookup(c)
			if !ok {
				if err := t.idx.refresh(ctx, 0); err != nil {
					return nil, err
				}
				l, ok = t.idx.lookup(c)
			}
			if !ok {
				return nil, fmt.Errorf("block %s: %w, locally and in the bucket", c, store.ErrNotFound)
			}
			used[l.pack] = true
			if c.Prefix().Codec != cid.Raw {
				err = t.View(ctx, c, func(b []byte) error {
					var err error
					links, err = unixfs.Links(c, b)
					return err
				})
			} else {
				err = nil
			}
		}
		if err != nil {
			p.wait()
			return nil, err
		}
		// Reversed onto the stack: packs then hold a file's blocks in file
		// order, which lets readers fetch runs of them in one GET.
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	ids, err := p.flush(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		used[id] = true
	}
	return used, nil
}

// missingPacks returns those of packs that have no index in the bucket.
func (t *Tier) missingPacks(ctx context.Context, packs map[string]bool) ([]string, error) {
	if len(packs) == 0 {
		return nil, nil
	}
	ids, err := t.listPacks(ctx)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, id := range ids {
		have[id] = true
	}
	condemned, err := t.condemned(ctx)
	if err != nil {
		return nil, err
	}
	for id := range condemned {
		delete(have, id)
	}
	var gone []string
	for id := range packs {
		if !have[id] {
			gone = append(gone, id)
		}
	}
	return gone, nil
}

// forgetPacks drops the local records of blocks in packs that are gone.
func (t *Tier) forgetPacks(ctx context.Context, packs []string) error {
	gone := map[string]bool{}
	for _, id := range packs {
		gone[id] = true
	}
	var keys []string
	err := t.local.ScanMeta(ctx, keyPushed, func(key string, v []byte) error {
		if gone[string(v)] {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var dones []string
	if err := t.local.ScanMeta(ctx, keyDone, func(key string, _ []byte) error {
		dones = append(dones, key)
		return nil
	}); err != nil {
		return err
	}
	t.o.Logger.Warn("s3: packs removed from the bucket; pushing their blocks again", "packs", packs)
	return t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		for _, k := range append(keys, dones...) {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// packer gathers blocks into packs and uploads each when it is full,
// while it gathers the next (at most uploadsInFlight at once).
type packer struct {
	t       *Tier
	buf     []byte
	entries []indexEntry
	blocks  []cid.Cid

	uploads sync.WaitGroup
	slots   chan struct{}
	mu      sync.Mutex
	ids     []string
	err     error
}

const uploadsInFlight = 2

func newPacker(t *Tier) *packer {
	return &packer{t: t, slots: make(chan struct{}, uploadsInFlight)}
}

func (p *packer) add(ctx context.Context, c cid.Cid, b []byte) error {
	if p.buf == nil {
		p.buf = make([]byte, 0, p.t.o.PackSize+len(b))
	}
	p.entries = append(p.entries, indexEntry{CID: c.String(), Offset: int64(len(p.buf)), Length: int64(len(b))})
	p.blocks = append(p.blocks, c)
	p.buf = append(p.buf, b...)
	if len(p.buf) >= p.t.o.PackSize {
		return p.send(ctx)
	}
	return nil
}

// send hands the pack gathered so far to an uploader goroutine.
func (p *packer) send(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := p.failed(); err != nil {
		<-p.slots
		return err
	}
	data, entries, blocks := p.buf, p.entries, p.blocks
	p.buf, p.entries, p.blocks = nil, nil, nil
	p.uploads.Add(1)
	go func() {
		defer p.uploads.Done()
		defer func() { <-p.slots }()
		id, err := p.upload(ctx, data, entries, blocks)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			if p.err == nil {
				p.err = err
			}
			return
		}
		p.ids = append(p.ids, id)
	}()
	return nil
}

func (p *packer) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait waits for the uploads in flight.
func (p *packer) wait() { p.uploads.Wait() }

func (p *packer) flush(ctx context.Context) ([]string, error) {
	if len(p.entries) > 0 {
		if err := p.send(ctx); err != nil {
			p.wait()
			return nil, err
		}
	}
	p.wait()
	if err := p.failed(); err != nil {
		return nil, err
	}
	return p.ids, nil
}

// upload puts the pack, then its index (so an index always names a pack
// that exists), then notes its blocks as pushed.
func (p *packer) upload(ctx context.Context, data []byte, entries []indexEntry, blocks []cid.Cid) (string, error) {
	t := p.t
	var rnd [32]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	if err := t.putRetrying(ctx, t.packKey(id), data); err != nil {
		return "", err
	}
	idx, err := json.Marshal(packIndex{Pack: id, Size: int64(len(data)), Blocks: entries})
	if err != nil {
		return "", err
	}
	if err := t.putRetrying(ctx, t.indexKey(id), idx); err != nil {
		return "", err
	}
	err = t.local.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		for _, c := range blocks {
			if err := txn.Set(keyPushed+string(c.Hash()), []byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("s3: recording pack %s: %w", id, err)
	}
	t.st.packs.Add(1)
	t.st.pushedBytes.Add(int64(len(data)))
	t.st.pushedBlocks.Add(int64(len(blocks)))
	t.o.Logger.Info("s3: pack uploaded", "pack", id, "blocks", len(blocks), "bytes", len(data))
	return id, nil
}

// putRetrying puts an object, retrying with a doubling pause (up to 30s)
// until it succeeds or ctx ends: a server that is down delays the upload,
// it does not lose it.
func (t *Tier) putRetrying(ctx context.Context, key string, data []byte) error {
	pause := t.o.Backoff
	for {
		err := t.putObject(ctx, key, data, minio.PutObjectOptions{})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t.setErr(err)
		t.o.Logger.Warn("s3: upload failed; retrying", "key", key, "err", err, "retry_in", pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return ctx.Err()
		}
		pause = min(pause*2, 30*time.Second)
	}
}

func (t *Tier) putObject(ctx context.Context, key string, data []byte, opts minio.PutObjectOptions) error {
	opts.PartSize = t.o.PartSize
	if opts.ContentType == "" {
		opts.ContentType = "application/octet-stream"
	}
	parts := int64(1)
	if uint64(len(data)) > t.o.PartSize {
		parts = int64((uint64(len(data))+t.o.PartSize-1)/t.o.PartSize) + 2 // create and complete
	}
	t.st.putRequests.Add(parts)
	_, err := t.cl.PutObject(ctx, t.loc.Bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	return nil
}

// Pending counts the refs and roots queued in a repo and not yet pushed,
// for status without an open tier.
func Pending(ctx context.Context, s *store.Badger) (int, error) {
	n := 0
	err := s.ScanMeta(ctx, keyQueue, func(string, []byte) error { n++; return nil })
	return n, err
}
