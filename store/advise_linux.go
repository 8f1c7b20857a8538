package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/sys/unix"
)

// WillNeed starts reading a block's stored bytes from disk in the
// background, so that a View soon after finds them in memory: one
// madvise(MADV_WILLNEED) over the block's range of the value-log mapping
// turns the page faults of a cold read (128 KiB each, one at a time) into
// one asynchronous read of the whole block. Blocks kept in the LSM tree and
// identity blocks are already in memory; for them it does nothing.
func (s *Badger) WillNeed(ctx context.Context, c cid.Cid) error {
	if c.Prefix().MhType == mh.IDENTITY {
		return nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(c.Hash()))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			adviseWillNeed(b)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("block %s: %w", c, ErrNotFound)
	}
	return err
}

// adviseWillNeed advises the pages under b; errors only mean no readahead.
func adviseWillNeed(b []byte) {
	if len(b) == 0 {
		return
	}
	pageSize := os.Getpagesize()
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	aligned := start &^ uintptr(pageSize-1)
	n := uintptr(len(b)) + start - aligned
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, aligned, n, unix.MADV_WILLNEED)
}
