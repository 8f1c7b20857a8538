package store

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Tensor deltas. A block may be stored as the XOR of its bytes with those
// of a base block (the same tensor chunk in an earlier checkpoint), coded by
// the codec of codec.go: most bits of a weight that moved a little are the
// same as before, so the XOR's byte planes are mostly zero bits and
// Huffman-code to a fraction of the raw size. The key stays the multihash of
// the block's own bytes; every read rebuilds them from the base (itself
// possibly a delta), and a base that cannot be read fails the read.
//
// Payload of a delta (frame compression compDelta):
//
//	[version 1][depth 1][inner tag 1][uvarint len][base multihash]
//	[CRC32C of the block's bytes, 4, little-endian][inner payload]
//
// depth is 1 for a delta of a plain block, and one more than its base's
// otherwise; it never exceeds MaxDeltaChain, so a read touches at most
// MaxDeltaChain+1 blocks. The inner payload is the XOR coded as by Encode
// (inner tag), or raw (tag 0). The CRC32C checks the rebuilt bytes, so that
// readers need not hash them against the CID (see ViewChecked): a base or
// delta damaged in a way their own checksums miss still fails the read.
//
// Every delta also has a small record "d/" + multihash -> base multihash,
// which garbage collection reads to keep a live delta's base (see
// DeltaBases) without reading the blocks themselves.
const (
	compDelta    = 8
	deltaVersion = 1
	deltaPrefix  = "d/"
)

// MaxDeltaChain bounds the deltas between a block and the plain block its
// rebuild starts from. A block whose base is at the bound is coded against
// the plain block at the start of the base's chain instead (a longer stride,
// still far smaller than a copy for slowly moving weights).
const MaxDeltaChain = 4

// deltaMinGain: a delta is kept over the plain encoding only when it is at
// least this much smaller (a delta costs a second block per read).
const deltaMinGain = 0.9

type deltaHeader struct {
	depth int
	tag   byte
	base  mh.Multihash
	crc   uint32
	inner []byte
}

func parseDelta(payload []byte) (deltaHeader, error) {
	if len(payload) < 4 || payload[0] != deltaVersion {
		return deltaHeader{}, fmt.Errorf("%w: bad delta header", ErrCorrupt)
	}
	h := deltaHeader{depth: int(payload[1]), tag: payload[2]}
	n, k := binary.Uvarint(payload[3:])
	if k <= 0 || n > 128 || uint64(len(payload)-3-k) < n+4 {
		return deltaHeader{}, fmt.Errorf("%w: bad delta base", ErrCorrupt)
	}
	base, err := mh.Cast(payload[3+k : 3+k+int(n)])
	if err != nil {
		return deltaHeader{}, fmt.Errorf("%w: delta base: %v", ErrCorrupt, err)
	}
	h.base = base
	rest := payload[3+k+int(n):]
	h.crc, h.inner = binary.LittleEndian.Uint32(rest), rest[4:]
	if h.depth < 1 || h.depth > MaxDeltaChain || h.tag == compDelta || h.tag > compBG8 {
		return deltaHeader{}, fmt.Errorf("%w: delta depth %d, tag %d", ErrCorrupt, h.depth, h.tag)
	}
	return h, nil
}

func deltaKey(h mh.Multihash) []byte {
	k := make([]byte, 0, len(deltaPrefix)+len(h))
	return append(append(k, deltaPrefix...), h...)
}

// baseCID names a delta's base in messages (bases are raw leaves).
func baseCID(h mh.Multihash) cid.Cid { return cid.NewCidV1(cid.Raw, h) }

// viewDelta rebuilds a delta's bytes inside txn: hops counts the deltas
// already followed, so that a damaged depth cannot loop.
func (s *Badger) viewDelta(txn *badger.Txn, payload []byte, hops int, fn func([]byte) error) error {
	h, err := parseDelta(payload)
	if err != nil {
		return err
	}
	if hops+h.depth > MaxDeltaChain {
		return fmt.Errorf("%w: delta chain longer than %d", ErrCorrupt, MaxDeltaChain)
	}
	var (
		data    []byte
		release = func() {}
	)
	if h.tag == compressionNone {
		a := s.codec.buf()
		data = append((*a)[:0], h.inner...)
		*a = data[:0]
		release = func() { s.codec.bufs.Put(a) }
	} else if data, release, err = s.codec.decode(h.inner, h.tag); err != nil {
		return err
	}
	defer release()
	item, err := txn.Get(blockKey(h.base))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("delta base %s: %w (missing)", baseCID(h.base), ErrCorrupt)
	}
	if err != nil {
		return fmt.Errorf("delta base %s: %w", baseCID(h.base), err)
	}
	var called bool
	err = s.viewItemAt(txn, item, hops+1, func(base []byte) error {
		called = true
		if len(base) != len(data) {
			return fmt.Errorf("%w: delta of %d bytes against a base of %d", ErrCorrupt, len(data), len(base))
		}
		subtle.XORBytes(data, data, base)
		if crc32.Checksum(data, castagnoli) != h.crc {
			return fmt.Errorf("%w: the bytes rebuilt from the delta fail its checksum", ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		if !called || errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("delta base %s: %w", baseCID(h.base), err)
		}
		return err
	}
	return fn(data)
}

// EncodeWithBase codes data for PutEncoded, as a delta against the stored
// block base when that pays, else as Encode does (ok false: store it
// plainly). base must be a block of the same length (the same chunk of the
// same tensor in an earlier file); an undefined, absent or different-sized
// base just means no delta. Safe for concurrent use: the ingest pipeline
// calls it from its workers.
func (s *Badger) EncodeWithBase(data []byte, base cid.Cid, elem, phase int) (payload []byte, tag byte, ok bool) {
	plain := func() ([]byte, byte, bool) { return s.codec.Encode(data, elem, phase) }
	if !base.Defined() || len(data) < 512 {
		return plain()
	}
	s.codec.init()
	var (
		xor     []byte
		release = func() {}
		depth   int
		bh      = base.Hash()
	)
	defer func() { release() }()
	err := s.db.View(func(txn *badger.Txn) error {
		rebase := false
		for range MaxDeltaChain + 1 {
			item, err := txn.Get(blockKey(bh))
			if err != nil {
				return err
			}
			if frame(item.UserMeta()).compression() == compDelta {
				var h deltaHeader
				err := item.Value(func(p []byte) error {
					var err error
					h, err = parseDelta(p)
					return err
				})
				if err != nil {
					return err
				}
				if rebase || h.depth >= MaxDeltaChain {
					// The chain is at its bound: code against the
					// plain block it starts from.
					rebase, bh = true, h.base
					continue
				}
				depth = h.depth
			}
			return s.viewItemAt(txn, item, 0, func(b []byte) error {
				if len(b) != len(data) {
					return errSizeMismatch
				}
				xp := s.codec.buf()
				if cap(*xp) < len(data) {
					*xp = make([]byte, len(data))
				}
				xor = (*xp)[:len(data)]
				subtle.XORBytes(xor, data, b)
				release = func() { s.codec.bufs.Put(xp) }
				return nil
			})
		}
		return errSizeMismatch
	})
	if err != nil || xor == nil || !deltaLikely(xor) {
		return plain()
	}
	inner, itag, iok := s.codec.Encode(xor, elem, phase)
	if !iok {
		return plain()
	}
	if float64(len(inner)) > 0.5*float64(len(data)) {
		// A poor delta (Adam moments, retrained layers): keep the
		// plain encoding unless the delta clearly wins.
		if p, t, ok := plain(); ok && float64(len(inner)) > deltaMinGain*float64(len(p)) {
			return p, t, true
		} else if !ok && float64(len(inner)) > deltaMinGain*float64(len(data)) {
			return nil, 0, false
		}
	}
	out := make([]byte, 0, 8+len(bh)+len(inner))
	out = append(out, deltaVersion, byte(depth+1), itag)
	out = binary.AppendUvarint(out, uint64(len(bh)))
	out = append(out, bh...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(data, castagnoli))
	out = append(out, inner...)
	return out, compDelta, true
}

var errSizeMismatch = errors.New("base size differs")

// DeltaBase returns the base of a block stored as a delta, or ok false for
// a block stored whole.
func (s *Badger) DeltaBase(ctx context.Context, c cid.Cid) (base cid.Cid, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(deltaKey(c.Hash()))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			h, err := mh.Cast(v)
			if err != nil {
				return fmt.Errorf("store: delta record of %s: %w", c, err)
			}
			base, ok = baseCID(append(mh.Multihash(nil), h...)), true
			return nil
		})
	})
	return base, ok, err
}

// DeltaBases calls fn for every block stored as a delta, with its base, so
// that garbage collection keeps the bases of live deltas. It reads the
// small delta records only, not the blocks.
func (s *Badger) DeltaBases(ctx context.Context, fn func(delta, base cid.Cid) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(deltaPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			d, err := mh.Cast(item.KeyCopy(nil)[len(deltaPrefix):])
			if err != nil {
				return fmt.Errorf("store: bad delta record %x: %w", item.Key(), err)
			}
			var b mh.Multihash
			if err := item.Value(func(v []byte) error {
				b, err = mh.Cast(append([]byte(nil), v...))
				return err
			}); err != nil {
				return fmt.Errorf("store: delta record of %s: %w", baseCID(d), err)
			}
			if err := fn(baseCID(d), baseCID(b)); err != nil {
				return err
			}
		}
		return nil
	})
}

// deltaLikely looks at a sample of a XOR: a delta pays when most bytes of
// the elements did not change (a training step leaves the sign and
// exponent bytes of nearly every weight as they were). Below a quarter of
// zero bytes (a retrained or unrelated tensor) it is not worth coding.
func deltaLikely(xor []byte) bool {
	const sample = 16 << 10
	b := xor[:min(len(xor), sample)]
	zeros := 0
	for _, v := range b {
		if v == 0 {
			zeros++
		}
	}
	return zeros*4 >= len(b)
}
