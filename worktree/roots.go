package worktree

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
)

// LiveRoots calls fn with every DAG root the working tree may still need:
// the published and the last flushed content of every file (open files
// unlinked included), the cached directory nodes and contents queued for
// publication. (The root recorded at the last close is not one: the open
// tree supersedes it, and Close records a new one.) Garbage collection
// marks from these; it must have begun (store.BeginGC) before the call, so
// that contents built meanwhile are recorded by their batches' pins.
func (t *Tree) LiveRoots(ctx context.Context, fn func(cid.Cid) error) error {
	var roots []cid.Cid
	var files []*fileData
	// Queued contents first: one leaves the queue only after it is
	// recorded in its inode, which is read next.
	t.pub.mu.Lock()
	for _, v := range t.pub.pending {
		roots = append(roots, v.cid)
	}
	for _, v := range t.pub.inflight {
		roots = append(roots, v.cid)
	}
	t.pub.mu.Unlock()
	t.mu.Lock()
	for _, in := range t.inodes {
		if c, err := cid.Decode(in.rec.Content); err == nil {
			roots = append(roots, c)
		}
		if in.dirNode != nil {
			roots = append(roots, in.dirNode.CID)
		}
		if in.f != nil {
			files = append(files, in.f)
		}
	}
	t.mu.Unlock()
	// A flush holds the file's lock from its batch to recording the new
	// base, so this sees the new base or a batch still pinned.
	for _, f := range files {
		f.mu.RLock()
		if f.baseCID.Defined() {
			roots = append(roots, f.baseCID)
		}
		f.mu.RUnlock()
	}
	for _, c := range roots {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// StoredRoots calls fn with the roots of the working tree as persisted: the
// content of every inode record and the root recorded at the last close.
// Use it when the tree is not open (no mount).
func StoredRoots(ctx context.Context, s *store.Badger, fn func(cid.Cid) error) error {
	err := s.ScanMeta(ctx, inodePrefix, func(key string, val []byte) error {
		r, err := decodeRecord(val)
		if err != nil {
			return err
		}
		if r.Content == "" {
			return nil
		}
		c, err := cid.Decode(r.Content)
		if err != nil {
			return fmt.Errorf("worktree: inode %d: bad content CID: %w", r.Ino, err)
		}
		return fn(c)
	})
	if err != nil {
		return err
	}
	return storedRoot(ctx, s, fn)
}

func storedRoot(ctx context.Context, s *store.Badger, fn func(cid.Cid) error) error {
	b, err := s.GetMeta(ctx, rootCIDKey)
	if err != nil {
		return nil // never closed cleanly yet: the records hold everything
	}
	c, err := cid.Decode(string(b))
	if err != nil {
		return nil
	}
	return fn(c)
}
