package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// GetMeta returns the value of a repo metadata key.
func (s *Badger) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(metaPrefix + key))
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("meta %q: %w", key, ErrNotFound)
	}
	return out, err
}

// SetMeta sets a repo metadata key.
func (s *Badger) SetMeta(ctx context.Context, key string, val []byte) error {
	s.writes.RLock()
	defer s.writes.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(metaPrefix+key), val) })
	if err != nil {
		return fmt.Errorf("store: set meta %q: %w", key, err)
	}
	return nil
}

// ScanMeta calls fn for every metadata key starting with prefix, in order.
func (s *Badger) ScanMeta(ctx context.Context, prefix string, fn func(key string, val []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(metaPrefix + prefix), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			key := string(item.Key()[len(metaPrefix):])
			if err := item.Value(func(v []byte) error { return fn(key, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// MetaTxn reads and writes metadata keys inside one Badger transaction, so
// that a multi-key change (a rename, say) is atomic.
type MetaTxn struct{ txn *badger.Txn }

// Get returns the value of key, or ErrNotFound.
func (t MetaTxn) Get(key string) ([]byte, error) {
	item, err := t.txn.Get([]byte(metaPrefix + key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("meta %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// Set sets key.
func (t MetaTxn) Set(key string, val []byte) error {
	return t.txn.Set([]byte(metaPrefix+key), val)
}

// Delete removes key.
func (t MetaTxn) Delete(key string) error {
	return t.txn.Delete([]byte(metaPrefix + key))
}

// UpdateMeta runs fn in a read-write transaction and commits it when fn
// returns nil. Callers serialise conflicting updates themselves (conflict
// detection is off).
func (s *Badger) UpdateMeta(ctx context.Context, fn func(MetaTxn) error) error {
	s.writes.RLock()
	defer s.writes.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error { return fn(MetaTxn{txn}) })
	if err != nil {
		return fmt.Errorf("store: update meta: %w", err)
	}
	return nil
}
