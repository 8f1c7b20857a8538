package gc

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/deltabase"
	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// trainingCheckpoints returns safetensors files of a model whose bf16
// weights take a small step between files.
func trainingCheckpoints(t *testing.T, n int) [][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := map[string][]int64{"a.weight": {1024, 1536}, "b.weight": {700, 1024}, "norm": {1024}}
	names := []string{"a.weight", "b.weight", "norm"}
	w := map[string][]float32{}
	for _, name := range names {
		k := int64(1)
		for _, d := range shapes[name] {
			k *= d
		}
		w[name] = make([]float32, k)
		for i := range w[name] {
			w[name][i] = float32(rng.NormFloat64() * 0.02)
		}
	}
	var out [][]byte
	for range n {
		var ts []safetensors.WriteTensor
		for _, name := range names {
			b := make([]byte, 2*len(w[name]))
			for i, v := range w[name] {
				binary.LittleEndian.PutUint16(b[2*i:], uint16(math.Float32bits(v)>>16))
				w[name][i] += float32(rng.NormFloat64() * 2e-4)
			}
			ts = append(ts, safetensors.WriteTensor{Name: name, DType: safetensors.BF16, Shape: shapes[name], Data: b})
		}
		var buf bytes.Buffer
		if err := safetensors.Write(&buf, ts, nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// importModel stores a model file as the mount does by default: tensors
// coded against their last stored version.
func importModel(t *testing.T, s *store.Badger, x *deltabase.Index, data []byte) cid.Cid {
	t.Helper()
	ctx := context.Background()
	b := s.NewBatch()
	im := &unixfs.Importer{Put: b, Layout: unixfs.DefaultLayout(), Cuts: x.Cuts, Encoder: s}
	n, err := im.ImportReader(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Record(ctx, n.CID); err != nil {
		t.Fatal(err)
	}
	return n.CID
}

// A base reachable only through the deltas of a live file is kept; once
// nothing needs the deltas, both go, and so do the delta records.
func TestGCKeepsBasesOfLiveDeltas(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	x := deltabase.New(s)
	files := trainingCheckpoints(t, 3)
	var roots []cid.Cid
	for _, f := range files {
		roots = append(roots, importModel(t, s, x, f))
	}
	deltas := 0
	if err := s.DeltaBases(ctx, func(_, _ cid.Cid) error { deltas++; return nil }); err != nil {
		t.Fatal(err)
	}
	if deltas == 0 {
		t.Fatal("no leaf of the later checkpoints was stored as a delta")
	}
	ps := pin.New(s)
	if _, err := ps.Add(ctx, roots[2], "latest", pin.Recursive); err != nil {
		t.Fatal(err)
	}
	rep, _ := run(t, collector(s), Options{})
	if rep.Removed == 0 {
		t.Fatal("nothing of the unpinned checkpoints was collected")
	}
	for _, r := range roots[:2] {
		if ok, _ := s.Has(ctx, r); ok {
			t.Fatalf("root %s of an unpinned checkpoint survived", r)
		}
	}
	got, err := readFile(ctx, s, roots[2])
	if err != nil {
		t.Fatalf("the pinned checkpoint after gc: %v", err)
	}
	if !bytes.Equal(got, files[2]) {
		t.Fatal("the pinned checkpoint reads back different bytes")
	}
	if _, again := run(t, collector(s), Options{}); len(again) != 0 {
		t.Fatalf("a second run removed %d blocks", len(again))
	}
	if _, err := ps.Remove(ctx, "latest"); err != nil {
		t.Fatal(err)
	}
	run(t, collector(s), Options{})
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 0 {
		t.Fatalf("%d blocks left with nothing pinned", st.Blocks)
	}
	deltas = 0
	if err := s.DeltaBases(ctx, func(_, _ cid.Cid) error { deltas++; return nil }); err != nil {
		t.Fatal(err)
	}
	if deltas != 0 {
		t.Fatalf("%d delta records outlive their blocks", deltas)
	}
}
