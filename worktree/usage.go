package worktree

import (
	"context"
	"fmt"

	"github.com/ipfrs/ipfrs-mount/store"
)

// Usage is how much the working tree holds.
type Usage struct {
	Files int64  // regular files (hard links counted once)
	Bytes uint64 // their sizes: the tree's logical bytes
}

// Usage counts the tree's files and their bytes, from memory; nothing is
// flushed.
func (t *Tree) Usage() Usage {
	t.mu.Lock()
	defer t.mu.Unlock()
	var u Usage
	for _, in := range t.inodes {
		if !in.rec.isRegular() || in.rec.Nlink == 0 {
			continue
		}
		u.Files++
		if in.f != nil {
			u.Bytes += in.f.currentSize()
		} else {
			u.Bytes += in.rec.Size
		}
	}
	return u
}

// StoredUsage counts the files of the tree recorded in s, for a repo that is
// not mounted (opening the tree would need the repo writable).
func StoredUsage(ctx context.Context, s *store.Badger) (Usage, error) {
	var u Usage
	err := s.ScanMeta(ctx, inodePrefix, func(key string, val []byte) error {
		r, err := decodeRecord(val)
		if err != nil {
			return err
		}
		if r.isRegular() && r.Nlink > 0 {
			u.Files++
			u.Bytes += r.Size
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("worktree: usage: %w", err)
	}
	return u, nil
}
