package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// weights returns n values like trained weights and the same values after a
// small update step, as the caller's dtype encodes them.
type dtypeCase struct {
	name string
	elem int
	enc  func(dst []byte, v float64) // little-endian element
}

var dtypeCases = []dtypeCase{
	{"BF16", 2, func(d []byte, v float64) {
		binary.LittleEndian.PutUint16(d, uint16(math.Float32bits(float32(v))>>16))
	}},
	{"F16", 2, func(d []byte, v float64) { binary.LittleEndian.PutUint16(d, toF16(float32(v))) }},
	{"F32", 4, func(d []byte, v float64) { binary.LittleEndian.PutUint32(d, math.Float32bits(float32(v))) }},
	{"F64", 8, func(d []byte, v float64) { binary.LittleEndian.PutUint64(d, math.Float64bits(v)) }},
	{"I64", 8, func(d []byte, v float64) { binary.LittleEndian.PutUint64(d, uint64(int64(v*1e6))) }},
}

// toF16 converts to IEEE half precision (truncating; normal range only,
// which is all these tests use).
func toF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	if exp <= 0 {
		return sign
	}
	return sign | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}

// checkpoints returns versions of a tensor of n elements, each one small
// training step after the last.
func checkpoints(dt dtypeCase, n, versions int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := make([]float64, n)
	for i := range w {
		w[i] = rng.NormFloat64() * 0.02
	}
	out := make([][]byte, versions)
	for v := range out {
		b := make([]byte, n*dt.elem)
		for i, x := range w {
			dt.enc(b[i*dt.elem:], x)
		}
		out[v] = b
		for i := range w {
			w[i] += rng.NormFloat64() * 1e-4
		}
	}
	return out
}

// putWithBase stores data the way the importer does: coded against base
// where that pays.
func putWithBase(t *testing.T, s *Badger, data []byte, base cid.Cid, elem int) (cid.Cid, byte) {
	t.Helper()
	ctx := context.Background()
	c := blockOf(cid.Raw, data).CID
	b := s.NewBatch()
	payload, tag, ok := s.EncodeWithBase(data, base, elem, 0)
	var err error
	if ok {
		err = b.PutEncoded(ctx, c, payload, tag, len(data))
	} else {
		tag = compressionNone
		err = b.Put(ctx, c, data)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return c, tag
}

func storedSize(t *testing.T, s *Badger, c cid.Cid) int64 {
	t.Helper()
	var n int64 = -1
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(c.Hash()))
		if err == nil {
			n = item.ValueSize()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeltaRoundTripByDType(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	for _, dt := range dtypeCases {
		for _, n := range []int{0, 1, 1000, (1 << 20) / dt.elem} {
			name := dt.name
			switch n {
			case 0:
				name += "/empty"
			case 1:
				name += "/0-d"
			}
			t.Run(name, func(t *testing.T) {
				vs := checkpoints(dt, n, 2, uint64(n*dt.elem+dt.elem))
				base, _ := putWithBase(t, s, vs[0], cid.Undef, dt.elem)
				c, tag := putWithBase(t, s, vs[1], base, dt.elem)
				got, err := s.Get(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if tag == compDelta {
					var checked bool
					if err := s.ViewChecked(ctx, c, func(_ []byte, ok bool) error { checked = ok; return nil }); err != nil || !checked {
						t.Fatalf("a delta's rebuilt bytes come unchecked (%v)", err)
					}
				}
				if !bytes.Equal(got, vs[1]) {
					t.Fatalf("read back %d bytes differ from the %d written", len(got), len(vs[1]))
				}
				if err := s.View(ctx, base, func(b []byte) error {
					if !bytes.Equal(b, vs[0]) {
						return errors.New("base changed")
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if size := storedSize(t, s, c); size > int64(len(vs[1])) {
					t.Fatalf("stored %d bytes for %d", size, len(vs[1]))
				}
				if n*dt.elem >= 1<<20 && dt.elem <= 4 {
					// Weights a small step apart: the delta must be
					// far smaller than the block, and than its plain
					// encoding. (A step of 1e-4 changes most of an
					// F64's mantissa bytes: there the plain coding
					// may win, and is kept.)
					if tag != compDelta {
						t.Fatalf("stored with tag %d, want a delta", tag)
					}
					size := storedSize(t, s, c)
					plain, _, ok := s.Encode(vs[1], dt.elem, 0)
					if !ok {
						plain = vs[1]
					}
					t.Logf("%s: delta %.3f of raw, plain coding %.3f", dt.name,
						float64(size)/float64(len(vs[1])), float64(len(plain))/float64(len(vs[1])))
					if float64(size) > 0.9*float64(len(plain)) {
						t.Fatalf("delta of %d bytes is no better than the plain coding (%d)", size, len(plain))
					}
				}
			})
		}
	}
}

// A long run of checkpoints: every version reads back, and no read
// follows more than MaxDeltaChain deltas.
func TestDeltaChainIsBounded(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	dt := dtypeCases[0]
	const versions = 3*MaxDeltaChain + 2
	vs := checkpoints(dt, 256<<10, versions, 7)
	cids := make([]cid.Cid, versions)
	base := cid.Undef
	deltas := 0
	for i, v := range vs {
		var tag byte
		cids[i], tag = putWithBase(t, s, v, base, dt.elem)
		if tag == compDelta {
			deltas++
		}
		base = cids[i]
	}
	if deltas < versions-3 {
		t.Fatalf("%d of %d versions stored as deltas", deltas, versions)
	}
	for i, c := range cids {
		got, err := s.Get(ctx, c)
		if err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		if !bytes.Equal(got, vs[i]) {
			t.Fatalf("version %d reads back different bytes", i)
		}
		if d := chainDepth(t, s, c); d > MaxDeltaChain {
			t.Fatalf("version %d is %d deltas from a whole block (bound %d)", i, d, MaxDeltaChain)
		}
	}
}

// chainDepth follows c's bases to a block stored whole.
func chainDepth(t *testing.T, s *Badger, c cid.Cid) int {
	t.Helper()
	d := 0
	for {
		base, ok, err := s.DeltaBase(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return d
		}
		d++
		if d > 2*MaxDeltaChain {
			t.Fatal("delta chain loops")
		}
		c = base
	}
}

// A damaged base fails every read that depends on it with ErrCorrupt,
// naming the base; AllBlocks (what verify runs) reports the base and each
// delta on it.
func TestDamagedBaseFailsDependentReads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dt := dtypeCases[0]
	vs := checkpoints(dt, 256<<10, 3, 11)
	base := blockOf(cid.Raw, vs[0]).CID // stored whole, so that its bytes can be found
	if err := s.Put(ctx, base, vs[0]); err != nil {
		t.Fatal(err)
	}
	d1, tag1 := putWithBase(t, s, vs[1], base, dt.elem)
	d2, tag2 := putWithBase(t, s, vs[2], d1, dt.elem)
	if tag1 != compDelta || tag2 != compDelta {
		t.Fatalf("tags %d %d, want deltas", tag1, tag2)
	}
	var seen []cid.Cid
	if err := s.DeltaBases(ctx, func(d, b cid.Cid) error { seen = append(seen, d, b); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 4 {
		t.Fatalf("delta records %v, want 2", seen)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	probe := vs[0][5000:5064]
	flipped := false
	for _, v := range vlogs {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, probe); i >= 0 {
			b[i+3] ^= 0x01
			if err := os.WriteFile(v, b, 0o644); err != nil {
				t.Fatal(err)
			}
			flipped = true
			break
		}
	}
	if !flipped {
		t.Fatal("base not found in the value log")
	}
	s, err = Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []cid.Cid{base, d1, d2} {
		called := false
		err := s.View(ctx, c, func([]byte) error { called = true; return nil })
		if !errors.Is(err, ErrCorrupt) || called {
			t.Fatalf("read of %s: err %v, callback called %v", c, err, called)
		}
		if c != base && !strings.Contains(err.Error(), base.String()) {
			t.Errorf("error of a dependent read does not name the damaged base: %v", err)
		}
	}
	bad := map[cid.Cid]string{}
	if err := s.AllBlocks(ctx, func(c cid.Cid, _ []byte, readErr error) error {
		if readErr != nil {
			bad[c] = readErr.Error()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 {
		t.Fatalf("AllBlocks reported %v, want the base and both deltas", bad)
	}
	if !strings.Contains(bad[d2], d2.String()) || !strings.Contains(bad[d2], base.String()) {
		t.Errorf("report of the delta names not both blocks: %s", bad[d2])
	}
}

func TestDeltaRecordGoesWithTheBlock(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	dt := dtypeCases[0]
	vs := checkpoints(dt, 256<<10, 2, 3)
	base, _ := putWithBase(t, s, vs[0], cid.Undef, dt.elem)
	d, _ := putWithBase(t, s, vs[1], base, dt.elem)
	if b, ok, err := s.DeltaBase(ctx, d); err != nil || !ok || b != base {
		t.Fatalf("DeltaBase: %v %v %v", b, ok, err)
	}
	if err := s.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.DeltaBase(ctx, d); err != nil || ok {
		t.Fatalf("delta record outlives its block: %v %v", ok, err)
	}
}

// A base that is a different tensor (retrained, or unrelated) is not used:
// the block is stored by itself.
func TestUnrelatedBaseIsNotUsed(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	dt := dtypeCases[0]
	a := checkpoints(dt, 512<<10, 1, 1)[0]
	b := checkpoints(dt, 512<<10, 1, 2)[0]
	base, _ := putWithBase(t, s, a, cid.Undef, dt.elem)
	c, tag := putWithBase(t, s, b, base, dt.elem)
	if tag == compDelta {
		t.Fatal("stored as a delta of an unrelated block")
	}
	if got, err := s.Get(ctx, c); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("read back: %v", err)
	}
}

// A delta whose coded bytes rebuild something else (damage its own
// checksums cannot see) fails the read instead of returning other bytes.
func TestDeltaChecksumCatchesAWrongRebuild(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	dt := dtypeCases[0]
	vs := checkpoints(dt, 256<<10, 2, 5)
	base, _ := putWithBase(t, s, vs[0], cid.Undef, dt.elem)
	payload, tag, ok := s.EncodeWithBase(vs[1], base, dt.elem, 0)
	if !ok || tag != compDelta {
		t.Fatal("not coded as a delta")
	}
	h, err := parseDelta(payload)
	if err != nil {
		t.Fatal(err)
	}
	h.crc ^= 1 // as if the XOR rebuilt other bytes
	bad := append([]byte(nil), payload[:len(payload)-len(h.inner)-4]...)
	bad = binary.LittleEndian.AppendUint32(bad, h.crc)
	bad = append(bad, h.inner...)
	c := blockOf(cid.Raw, vs[1]).CID
	b := s.NewBatch()
	if err := b.PutEncoded(ctx, c, bad, compDelta, len(vs[1])); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	called := false
	err = s.View(ctx, c, func([]byte) error { called = true; return nil })
	if !errors.Is(err, ErrCorrupt) || called {
		t.Fatalf("err %v, callback called %v", err, called)
	}
}
