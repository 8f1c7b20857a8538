package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Reclaim returns to the filesystem the space of deleted blocks. Badger's
// value-log GC rewrites a file only once a compaction has recorded how much
// of it is garbage, and deletes in a small LSM tree never trigger one
// (research notes §5.6): so flush the memtables with a sentinel key and
// DropPrefix, merge every level so that tombstones meet the values they
// delete, then rewrite value-log files while any is at least 30% garbage.
// Garbage in the value-log file being appended to is returned once Badger
// moves on to the next file (every ValueLogFileSize written, or at the next
// open). It returns the number of files rewritten.
func (s *Badger) Reclaim(ctx context.Context) (int, error) {
	const sentinel = "gcflush/"
	// DropPrefix refuses concurrent writes instead of waiting: hold them.
	s.writes.Lock()
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(sentinel+"x"), nil) })
	if err == nil {
		err = s.db.DropPrefix([]byte(sentinel))
	}
	s.writes.Unlock()
	if err != nil {
		return 0, fmt.Errorf("store: reclaim: flush: %w", err)
	}
	if err := s.db.Flatten(2); err != nil {
		return 0, fmt.Errorf("store: reclaim: compact: %w", err)
	}
	n := 0
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(0.3)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("store: value-log gc: %w", err)
		}
		n++
	}
	return n, ctx.Err()
}

// DiskBytes measures the space the database's files occupy.
func (s *Badger) DiskBytes() (int64, error) { return diskUsage(s.dir) }

// The clock: block writes leave time markers (a metadata key named by the
// wall time, written in the same transaction as the blocks, at most every
// clockEvery), so that GC can tell a block's age from its Badger version:
// a block whose version is below a marker's was committed before the
// marker's time.
const (
	clockPrefix = "gc/clock/"
	clockEvery  = 10 * time.Second
)

type clock struct {
	mu   sync.Mutex
	last time.Time
}

// mark returns the key of a marker to write now, or "" if one is recent.
func (c *clock) mark(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.last) < clockEvery {
		return ""
	}
	c.last = now
	return metaPrefix + clockPrefix + fmt.Sprintf("%020d", now.UnixNano())
}

// MarkClock writes a time marker if none was written for a while. Block
// writes leave markers themselves; a GC that keeps young blocks calls this
// so that what an idle store wrote last becomes old enough to collect once
// the marker is.
func (s *Badger) MarkClock(ctx context.Context) error {
	k := s.clock.mark(time.Now())
	if k == "" {
		return nil
	}
	s.writes.RLock()
	defer s.writes.RUnlock()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(k), nil) }); err != nil {
		return fmt.Errorf("store: clock: %w", err)
	}
	return nil
}

// VersionBefore returns a version such that every block with a smaller
// version was written before t (to within a commit's duration). ok is false
// when no marker that old exists: then no block is known to be that old.
func (s *Badger) VersionBefore(ctx context.Context, t time.Time) (version uint64, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(metaPrefix + clockPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ns, err := strconv.ParseInt(string(it.Item().Key()[len(metaPrefix+clockPrefix):]), 10, 64)
			if err != nil || time.Unix(0, ns).After(t) {
				break
			}
			version, ok = it.Item().Version(), true
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: clock: %w", err)
	}
	return version, ok, nil
}

// PruneClock deletes markers older than before except the newest of them.
func (s *Badger) PruneClock(ctx context.Context, before time.Time) error {
	var old [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(metaPrefix + clockPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ns, err := strconv.ParseInt(string(it.Item().Key()[len(metaPrefix+clockPrefix):]), 10, 64)
			if err != nil || !time.Unix(0, ns).Before(before) {
				break
			}
			old = append(old, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil || len(old) < 2 {
		return err
	}
	old = old[:len(old)-1]
	for len(old) > 0 {
		n := min(len(old), 4096)
		s.writes.RLock()
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, k := range old[:n] {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		s.writes.RUnlock()
		if err != nil {
			return fmt.Errorf("store: prune clock: %w", err)
		}
		old = old[n:]
	}
	return nil
}
