package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// ErrNotFound is returned when a block or metadata key is not in the store.
var ErrNotFound = errors.New("not found")

// Key prefixes. Blocks live under "b/" + multihash; the repo's own records
// (roots, refs, configuration) live under "m/".
const (
	blockPrefix = "b/"
	metaPrefix  = "m/"
)

// Options configures the Badger database. Zero fields take the defaults of
// DefaultOptions.
type Options struct {
	// ValueThreshold: values larger than this go to the mmap'd value log,
	// which is what makes large blocks cheap to read (see DESIGN.md).
	ValueThreshold int64
	// ValueLogFileSize bounds one value-log file; smaller files make value-log
	// GC finer-grained.
	ValueLogFileSize int64
	MemTableSize     int64
	BlockCacheSize   int64
	IndexCacheSize   int64
	// BatchBytes is how much block payload a Batch gathers before it commits.
	BatchBytes int
	// ReadOnly opens the database without taking the write lock.
	ReadOnly bool
	// MinFreeBytes is the free space block writes leave on the repo's
	// filesystem: Badger writes through memory mappings, and a full disk
	// under a mapping kills the process (SIGBUS) instead of failing a call.
	MinFreeBytes int64
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// DefaultOptions are tuned for 64 KiB–1 MiB blocks on a small machine.
func DefaultOptions() Options {
	return Options{
		ValueThreshold:   4 << 10,
		ValueLogFileSize: 256 << 20,
		MemTableSize:     32 << 20,
		BlockCacheSize:   32 << 20,
		IndexCacheSize:   32 << 20,
		BatchBytes:       32 << 20,
		MinFreeBytes:     256 << 20,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.ValueThreshold == 0 {
		o.ValueThreshold = d.ValueThreshold
	}
	if o.ValueLogFileSize == 0 {
		o.ValueLogFileSize = d.ValueLogFileSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = d.MemTableSize
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = d.BlockCacheSize
	}
	if o.IndexCacheSize == 0 {
		o.IndexCacheSize = d.IndexCacheSize
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = d.BatchBytes
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = d.MinFreeBytes
	}
	return o
}

// Badger is a block store on a Badger v4 database.
type Badger struct {
	db       *badger.DB
	dir      string
	opts     Options
	prealloc *vlogPrealloc
	codec    codec
	counters counters
	track    tracker // temporary pins and the running GC
	clock    clock   // time markers for GC's minimum age
	// writes is held shared by every commit and exclusively by Reclaim's
	// DropPrefix, which makes Badger refuse writes (ErrBlockedWrites)
	// while it runs.
	writes sync.RWMutex

	hashReads atomic.Bool // ViewChecked vouches for nothing
}

// HashReads makes readers hash every block they read against its CID, as
// if the store had no checksums of its own (see ViewChecked).
func (s *Badger) HashReads(on bool) { s.hashReads.Store(on) }

// ErrInUse is returned by a writable Open of a store another process has
// open for writing (Badger allows one).
var ErrInUse = errors.New("in use by another process")

// ErrNeedsRecovery means a read-only open found what the last writer left
// when it stopped uncleanly (a value log or a memtable file to cut back):
// only a read-write open can recover the store.
var ErrNeedsRecovery = errors.New("the store was not closed cleanly and needs a writable open to recover")

// Open opens (creating if needed) the store in dir.
func Open(dir string, o Options) (*Badger, error) {
	o = o.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if !o.ReadOnly {
		if err := checkNewestValueLog(dir); err != nil {
			return nil, err
		}
	}
	bo := badger.DefaultOptions(dir).
		WithValueThreshold(o.ValueThreshold).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithCompression(options.None).
		WithNumCompactors(2).
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithReadOnly(o.ReadOnly).
		// Every read of a value-log entry checks its CRC32C (~10 GB/s), and
		// table blocks (keys, value pointers, small values) are checked
		// when loaded: see ViewChecked.
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(badgerLogger{o.Logger})
	db, err := badger.Open(bo)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "Cannot acquire directory lock"):
			return nil, fmt.Errorf("store %s: %w (is it mounted?): %v", dir, ErrInUse, err)
		case o.ReadOnly && (strings.Contains(msg, "truncate required") || strings.Contains(msg, "error while truncation")):
			return nil, fmt.Errorf("store: open %s: %w: %v", dir, ErrNeedsRecovery, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Badger{db: db, dir: dir, opts: o,
		// A file is written up to ValueLogFileSize plus the batch that
		// crosses it.
		prealloc: &vlogPrealloc{dir: dir, size: o.ValueLogFileSize + 2*int64(o.BatchBytes), done: map[string]bool{}}}
	return s, nil
}

// Close flushes and closes the database.
func (s *Badger) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Sync makes every write so far durable.
func (s *Badger) Sync() error {
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

func blockKey(h mh.Multihash) []byte {
	k := make([]byte, 0, len(blockPrefix)+len(h))
	return append(append(k, blockPrefix...), h...)
}

// Has reports whether the block is stored.
func (s *Badger) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if c.Prefix().MhType == mh.IDENTITY {
		return true, nil
	}
	return s.has(blockKey(c.Hash()))
}

func (s *Badger) has(key []byte) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("store: has: %w", err)
	}
}

// View calls fn with the block's bytes. For blocks in the value log the
// slice points into Badger's mapping: it is valid only during fn and must
// not be modified or retained.
func (s *Badger) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	return s.ViewChecked(ctx, c, func(b []byte, _ bool) error { return fn(b) })
}

// ViewChecked is View for readers that check what they read: checked
// tells fn that the bytes have just passed Badger's CRC32C of the stored
// entry (an uncompressed block in the value log), or, for a block stored
// as a delta, the CRC32C of the rebuilt bytes that the delta carries, which
// makes them the bytes that were stored under c, so that a SHA-256 of them
// adds nothing but CPU. Blocks are hashed against their CID before they are
// stored (import, fetch), and verify hashes everything; small blocks in the
// LSM tree and other compressed ones come with checked false.
func (s *Badger) ViewChecked(ctx context.Context, c cid.Cid, fn func(b []byte, checked bool) error) error {
	if c.Prefix().MhType == mh.IDENTITY { // the data is the CID itself
		dec, err := mh.Decode(c.Hash())
		if err != nil {
			return fmt.Errorf("block %s: %w", c, err)
		}
		return fn(dec.Digest, true)
	}
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(c.Hash()))
		if err != nil {
			return err
		}
		// An entry in the value log reports a size beyond its key and
		// value (its header and CRC); an inline value does not.
		inLog := item.EstimatedSize() != item.KeySize()+item.ValueSize()
		// A delta's rebuilt bytes are checked by its CRC32C of them.
		comp := frame(item.UserMeta()).compression()
		checked := (inLog && comp == compressionNone || comp == compDelta) && !s.hashReads.Load()
		return s.viewItem(txn, item, func(b []byte) error {
			s.counters.gets.Add(1)
			s.counters.getBytes.Add(int64(len(b)))
			return fn(b, checked)
		})
	})
	return blockErr(c, err)
}

// viewItem hands fn the block's bytes: a slice of Badger's mapping for raw
// blocks, a pooled buffer for compressed ones.
func (s *Badger) viewItem(txn *badger.Txn, item *badger.Item, fn func([]byte) error) error {
	return s.viewItemAt(txn, item, 0, fn)
}

// viewItemAt is viewItem for a block reached through hops deltas.
func (s *Badger) viewItemAt(txn *badger.Txn, item *badger.Item, hops int, fn func([]byte) error) error {
	// Badger logs a value it cannot read, checksum failures included, and
	// hands out an empty one: never pass that on as the block.
	want := item.ValueSize()
	tag := frame(item.UserMeta()).compression()
	return item.Value(func(payload []byte) error {
		if len(payload) == 0 && want > 0 {
			return fmt.Errorf("%w (%d bytes expected; the log says why)", ErrCorrupt, want)
		}
		switch tag {
		case compressionNone:
			return fn(payload)
		case compDelta:
			return s.viewDelta(txn, payload, hops, fn)
		}
		data, release, err := s.codec.decode(payload, tag)
		if err != nil {
			return err
		}
		defer release()
		return fn(data)
	})
}

// blockErr names the block in the store's own errors.
func blockErr(c cid.Cid, err error) error {
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("block %s: %w", c, ErrNotFound)
	case errors.Is(err, ErrCorrupt):
		return fmt.Errorf("block %s: %w", c, err)
	}
	return err
}

// ErrCorrupt means a block's stored bytes could not be read back: they fail
// the store's checksum (damaged on disk) or lie outside the value log.
var ErrCorrupt = errors.New("stored bytes fail their checksum or cannot be read")

// Encode compresses a block's bytes for PutEncoded: byte-grouped for
// elements of 2 or 4 bytes (float tensors), phase bytes into an element at
// its start. ok is false when compression would not pay.
func (s *Badger) Encode(data []byte, elem, phase int) (payload []byte, tag byte, ok bool) {
	return s.codec.Encode(data, elem, phase)
}

// Get returns a copy of the block's bytes.
func (s *Badger) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	var out []byte
	err := s.View(ctx, c, func(b []byte) error {
		out = append(make([]byte, 0, len(b)), b...)
		return nil
	})
	return out, err
}

// Size returns the size in bytes of the stored block.
func (s *Badger) Size(ctx context.Context, c cid.Cid) (int, error) {
	n := 0
	err := s.View(ctx, c, func(b []byte) error { n = len(b); return nil })
	return n, err
}

// Put stores one block unless it is already present. The caller vouches
// that data hashes to c.
func (s *Badger) Put(ctx context.Context, c cid.Cid, data []byte) error {
	return s.PutMany(ctx, []Block{{CID: c, Data: data}})
}

// Block is a CID and the bytes it names.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// PutMany stores blocks that are not yet present and waits until they are
// committed.
func (s *Badger) PutMany(ctx context.Context, blocks []Block) error {
	b := s.NewBatch()
	for _, blk := range blocks {
		if err := b.Put(ctx, blk.CID, blk.Data); err != nil {
			b.Cancel()
			return err
		}
	}
	return b.Close()
}

// Delete removes a block. Deleting an absent block is not an error.
func (s *Badger) Delete(ctx context.Context, c cid.Cid) error {
	s.writes.RLock()
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(deltaKey(c.Hash())); err != nil {
			return err
		}
		return txn.Delete(blockKey(c.Hash()))
	})
	s.writes.RUnlock()
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", c, err)
	}
	return nil
}

// KeyInfo describes one stored block during iteration.
type KeyInfo struct {
	CID     cid.Cid // CIDv1 with the codec the block was first stored under
	Size    int64   // approximate stored size
	Version uint64  // Badger's commit version: orders writes (see VersionBefore)
}

// AllKeys calls fn for every stored block, in key order.
func (s *Badger) AllKeys(ctx context.Context, fn func(KeyInfo) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(blockPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			c, err := itemCID(item)
			if err != nil {
				return err
			}
			if err := fn(KeyInfo{CID: c, Size: item.ValueSize(), Version: item.Version()}); err != nil {
				return err
			}
		}
		return nil
	})
}

// AllBlocks calls fn with every stored block's bytes (valid only during fn).
// A block whose value cannot be read comes with readErr ErrCorrupt instead
// of failing the walk.
func (s *Badger) AllBlocks(ctx context.Context, fn func(c cid.Cid, data []byte, readErr error) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(blockPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			c, err := itemCID(item)
			if err != nil {
				return err
			}
			called := false
			err = s.viewItem(txn, item, func(b []byte) error {
				called = true
				return fn(c, b, nil)
			})
			if !called && errors.Is(err, ErrCorrupt) {
				err = fn(c, nil, fmt.Errorf("block %s: %w", c, err))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func itemCID(item *badger.Item) (cid.Cid, error) {
	h, err := mh.Cast(item.Key()[len(blockPrefix):])
	if err != nil {
		return cid.Undef, fmt.Errorf("store: bad block key %x: %w", item.Key(), err)
	}
	return cid.NewCidV1(frame(item.UserMeta()).codec(), h), nil
}

// Stats summarises the store.
type Stats struct {
	Blocks     int64 // number of stored blocks
	BlockBytes int64 // sum of stored block sizes (approximate by a few bytes each)
	DiskBytes  int64 // disk space the database's files occupy
}

// Stats counts blocks and their bytes and measures the database on disk.
func (s *Badger) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.AllKeys(ctx, func(k KeyInfo) error {
		st.Blocks++
		st.BlockBytes += k.Size
		return nil
	})
	if err != nil {
		return st, err
	}
	st.DiskBytes, err = diskUsage(s.dir)
	return st, err
}

// ErrNoSpace wraps syscall.ENOSPC: the repo's filesystem is too full to
// take more blocks safely.
var ErrNoSpace = fmt.Errorf("store: %w", syscall.ENOSPC)

// checkSpace refuses a write of need bytes that would leave less than
// MinFreeBytes free.
func (s *Badger) checkSpace(need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return nil // cannot tell: let the write try
	}
	free := int64(st.Bavail) * st.Bsize
	if free-need < s.opts.MinFreeBytes {
		return fmt.Errorf("%w: %d bytes free, %d to write, %d kept in reserve", ErrNoSpace, free, need, s.opts.MinFreeBytes)
	}
	return nil
}

// diskUsage sums the allocated size of the files in dir (value-log files
// are sparse while being filled, so their length would overstate it).
func diskUsage(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile by a compaction
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
	}
	return n, nil
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
	}
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
