package deltabase

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func model(t *testing.T, seed byte, shapes map[string][]int64) []byte {
	t.Helper()
	var ts []safetensors.WriteTensor
	for _, name := range []string{"a", "b", "c"} {
		shape, ok := shapes[name]
		if !ok {
			continue
		}
		n := int64(2)
		for _, d := range shape {
			n *= d
		}
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*31) ^ seed
		}
		ts = append(ts, safetensors.WriteTensor{Name: name, DType: safetensors.BF16, Shape: shape, Data: data})
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ts, map[string]string{"seed": fmt.Sprint(seed)}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func peekOf(b []byte) func(int) ([]byte, error) {
	return func(n int) ([]byte, error) {
		if n > len(b) {
			return nil, fmt.Errorf("short")
		}
		return b[:n], nil
	}
}

func TestRecordThenCuts(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := New(s)
	shapes := map[string][]int64{"a": {1024, 1500}, "b": {10, 10}, "c": {700, 1024}}
	first := model(t, 1, shapes)
	if segs := x.Cuts(peekOf(first)); len(segs) != 4 {
		t.Fatalf("segments %+v, want the header and three tensors", segs)
	} else {
		for _, sg := range segs {
			if sg.Bases != nil {
				t.Fatal("bases before anything was recorded")
			}
		}
	}
	b := s.NewBatch()
	im := &unixfs.Importer{Put: b, Layout: unixfs.DefaultLayout(), Cuts: x.Cuts}
	root, err := im.ImportReader(ctx, bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Record(ctx, root.CID); err != nil {
		t.Fatal(err)
	}
	f, err := unixfs.OpenFile(ctx, s, root.CID)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := f.Leaves(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := safetensors.Parse(first, int64(len(first)))
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	tensorOf := func(o int64) string {
		for _, tn := range h.Tensors {
			if o >= tn.Begin && o < tn.End {
				return tn.Name
			}
		}
		return ""
	}
	want := map[string][]cid.Cid{}
	for _, l := range leaves {
		if name := tensorOf(off); name != "" {
			want[name] = append(want[name], l.CID)
		}
		off += int64(l.Size)
	}

	// The next checkpoint: same names, b changes shape, a new header.
	shapes["b"] = []int64{20, 5}
	next := model(t, 2, shapes)
	segs := x.Cuts(peekOf(next))
	hn, _ := safetensors.Parse(next, int64(len(next)))
	got := map[string][]cid.Cid{}
	for i, tn := range hn.Tensors {
		got[tn.Name] = segs[i+1].Bases
	}
	for _, name := range []string{"a", "c"} {
		if fmt.Sprint(got[name]) != fmt.Sprint(want[name]) || len(want[name]) == 0 {
			t.Errorf("tensor %s: bases %v, want the %d leaves of the recorded file", name, got[name], len(want[name]))
		}
	}
	if got["b"] != nil {
		t.Errorf("tensor b changed shape but got bases %v", got["b"])
	}
	if segs := x.Cuts(peekOf([]byte("just some text, not a model at all............."))); segs != nil {
		t.Errorf("segments for a text file: %+v", segs)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	c1, _ := cid.Decode("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
	for _, bases := range [][]cid.Cid{nil, {c1}, {c1, c1, c1}} {
		fixed, got, err := decodeRecord(encodeRecord(1<<20, bases))
		if err != nil || fixed != 1<<20 || fmt.Sprint(got) != fmt.Sprint(bases) {
			t.Fatalf("round trip of %v: %d %v %v", bases, fixed, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 5}, {1, 1, 200}} {
		if _, _, err := decodeRecord(bad); err == nil {
			t.Errorf("malformed record %v decoded", bad)
		}
	}
}
