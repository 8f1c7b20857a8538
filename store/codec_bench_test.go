package store

import (
	"testing"

	"github.com/ipfs/go-cid"
)

func BenchmarkEncodeBF16(b *testing.B) {
	var c codec
	data := checkpoints(dtypeCases[0], 1<<19, 1, 1)[0]
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.Encode(data, 2, 0)
	}
}

func BenchmarkGroupBF16(b *testing.B) {
	data := checkpoints(dtypeCases[0], 1<<19, 1, 1)[0]
	dst := make([]byte, 0, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		group(dst, data, 2, 0)
	}
}

func BenchmarkDecodeBF16(b *testing.B) {
	var c codec
	data := checkpoints(dtypeCases[0], 1<<19, 1, 1)[0]
	p, tag, _ := c.Encode(data, 2, 0)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_, release, err := c.decode(p, tag)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

func BenchmarkEncodeWithBaseBF16(b *testing.B) {
	s := openTemp(b, Options{})
	vs := checkpoints(dtypeCases[0], 1<<19, 2, 1)
	base := blockOf(cid.Raw, vs[0]).CID
	p, tag, _ := s.Encode(vs[0], 2, 0) // stored compressed, as by default
	bt := s.NewBatch()
	if err := bt.PutEncoded(b.Context(), base, p, tag, len(vs[0])); err != nil {
		b.Fatal(err)
	}
	if err := bt.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(vs[1])))
	for b.Loop() {
		if _, tag, _ := s.EncodeWithBase(vs[1], base, 2, 0); tag != compDelta {
			b.Fatal("not a delta")
		}
	}
}

func BenchmarkViewDeltaBF16(b *testing.B) {
	s := openTemp(b, Options{})
	vs := checkpoints(dtypeCases[0], 1<<19, 2, 1)
	base := blockOf(cid.Raw, vs[0]).CID
	p, tag, _ := s.Encode(vs[0], 2, 0)
	bt := s.NewBatch()
	if err := bt.PutEncoded(b.Context(), base, p, tag, len(vs[0])); err != nil {
		b.Fatal(err)
	}
	if err := bt.Close(); err != nil {
		b.Fatal(err)
	}
	bt = s.NewBatch()
	d := blockOf(cid.Raw, vs[1]).CID
	p, tag, _ = s.EncodeWithBase(vs[1], base, 2, 0)
	if tag != compDelta {
		b.Fatal("not a delta")
	}
	if err := bt.PutEncoded(b.Context(), d, p, tag, len(vs[1])); err != nil {
		b.Fatal(err)
	}
	if err := bt.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(vs[1])))
	for b.Loop() {
		if err := s.View(b.Context(), d, func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
