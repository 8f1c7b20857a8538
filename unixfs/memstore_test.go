package unixfs

import (
	"context"
	"fmt"
	"sync"

	"github.com/ipfs/go-cid"
)

// memStore is an in-memory block store for tests.
type memStore struct {
	mu     sync.Mutex
	blocks map[string][]byte
}

func newMemStore() *memStore { return &memStore{blocks: map[string][]byte{}} }

func (m *memStore) Put(_ context.Context, c cid.Cid, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blocks[string(c.Hash())]; !ok {
		m.blocks[string(c.Hash())] = append([]byte(nil), data...)
	}
	return nil
}

func (m *memStore) View(_ context.Context, c cid.Cid, fn func([]byte) error) error {
	m.mu.Lock()
	b, ok := m.blocks[string(c.Hash())]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("block %s: not found", c)
	}
	return fn(b)
}
