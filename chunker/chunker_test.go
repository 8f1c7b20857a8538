package chunker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr bool
	}{
		{"fastcdc", DefaultSpec(), false},
		{"", DefaultSpec(), false},
		{"fastcdc-16384-65536-262144", Spec{FastCDC, 16384, 65536, 262144}, false},
		{"size-262144", FixedSpec(262144), false},
		{"size-1048576", FixedSpec(1 << 20), false},
		{"size-0", Spec{}, true},
		{"size-2097152", Spec{}, true}, // larger than a block may be
		{"size-x", Spec{}, true},
		{"fastcdc-1-2", Spec{}, true},
		{"fastcdc-65536-100000-1048576", Spec{}, true}, // avg not a power of two
		{"fastcdc-300000-262144-1048576", Spec{}, true},
		{"fastcdc-65536-262144-262144", Spec{}, true},
		{"rabin", Spec{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if err == nil {
				if back, _ := ParseSpec(got.String()); back != got {
					t.Fatalf("String() %q does not parse back", got.String())
				}
			}
		})
	}
}

func chunks(t *testing.T, s Spec, data []byte) [][]byte {
	t.Helper()
	sp, err := s.New(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		c, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), c...))
	}
}

func TestChunksCoverInputWithinBounds(t *testing.T) {
	data := make([]byte, 20<<20+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, s := range []Spec{DefaultSpec(), FixedSpec(256 << 10), {FastCDC, 8192, 32768, 131072}} {
		t.Run(s.String(), func(t *testing.T) {
			cs := chunks(t, s, data)
			if got := bytes.Join(cs, nil); !bytes.Equal(got, data) {
				t.Fatal("chunks do not reassemble the input")
			}
			for i, c := range cs {
				last := i == len(cs)-1
				if len(c) > s.Max || (!last && s.Kind == FastCDC && len(c) < s.Min) || (!last && s.Kind == Fixed && len(c) != s.Max) {
					t.Fatalf("chunk %d has %d bytes, outside %s", i, len(c), s)
				}
			}
			if s.Kind == FastCDC {
				avg := len(data) / len(cs)
				if avg < s.Avg/2 || avg > 2*s.Avg {
					t.Fatalf("average chunk %d far from %d", avg, s.Avg)
				}
			}
		})
	}
}

func TestEmptyInputYieldsNoChunk(t *testing.T) {
	for _, s := range []Spec{DefaultSpec(), FixedSpec(1024)} {
		if cs := chunks(t, s, nil); len(cs) != 0 {
			t.Fatalf("%s: %d chunks for empty input", s, len(cs))
		}
	}
}

// An insertion changes only the chunks around it: content-defined cut
// points resynchronise.
func TestFastCDCResynchronises(t *testing.T) {
	data := make([]byte, 16<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	edited := append(append(append([]byte(nil), data[:5<<20]...), 'x'), data[5<<20:]...)
	before := map[string]bool{}
	for _, c := range chunks(t, DefaultSpec(), data) {
		before[string(c)] = true
	}
	fresh := 0
	for _, c := range chunks(t, DefaultSpec(), edited) {
		if !before[string(c)] {
			fresh++
		}
	}
	if fresh > 3 {
		t.Fatalf("%d new chunks after a 1-byte insertion", fresh)
	}
}

func BenchmarkFastCDC(b *testing.B) {
	data := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	b.SetBytes(int64(len(data)))
	for range b.N {
		sp, _ := DefaultSpec().New(bytes.NewReader(data))
		for {
			if _, err := sp.Next(); err != nil {
				break
			}
		}
	}
}

func TestForcedCuts(t *testing.T) {
	data := make([]byte, 5<<20)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	cuts := []uint64{100, 1 << 20, 1<<20 + 1, 3 << 20, 9 << 20} // the last is past the end
	for _, s := range []Spec{DefaultSpec(), FixedSpec(256 << 10)} {
		sp, err := s.NewWithCuts(bytes.NewReader(data), cuts)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		ends := map[uint64]bool{}
		for {
			c, err := sp.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c) > s.Max {
				t.Fatalf("%s: chunk of %d bytes", s, len(c))
			}
			out = append(out, c...)
			ends[uint64(len(out))] = true
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("%s: chunks do not reassemble the input", s)
		}
		for _, c := range cuts[:4] {
			if !ends[c] {
				t.Errorf("%s: no cut at %d", s, c)
			}
		}
	}
}

// Segments with a fixed size are cut every that many bytes from their
// start; the others by the spec.
func TestFixedSegments(t *testing.T) {
	data := make([]byte, 6<<20+123)
	r := rand.New(rand.NewPCG(9, 10))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	tests := []struct {
		name  string
		cuts  []uint64
		fixed []int
		want  []uint64 // every chunk end inside [from, to) of a fixed segment
	}{
		{"header then one tensor", []uint64{777, 5<<20 + 777}, []int{0, 1 << 20},
			[]uint64{777 + 1<<20, 777 + 2<<20, 777 + 3<<20, 777 + 4<<20, 777 + 5<<20}},
		{"two tensors, the second shorter than a chunk", []uint64{100, 100 + 3<<20 + 5, 100 + 3<<20 + 1000}, []int{0, 1 << 20, 1 << 20},
			[]uint64{100 + 1<<20, 100 + 2<<20, 100 + 3<<20, 100 + 3<<20 + 5, 100 + 3<<20 + 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := DefaultSpec().NewWithFixed(bytes.NewReader(data), tt.cuts, tt.fixed)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			var ends []uint64
			for {
				c, err := sp.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, c...)
				ends = append(ends, uint64(len(out)))
			}
			if !bytes.Equal(out, data) {
				t.Fatal("chunks do not reassemble the input")
			}
			var inside []uint64
			for _, e := range ends {
				if e > tt.cuts[0] && e <= tt.cuts[len(tt.cuts)-1] {
					inside = append(inside, e)
				}
			}
			if fmt.Sprint(inside) != fmt.Sprint(tt.want) {
				t.Fatalf("chunk ends %v, want %v", inside, tt.want)
			}
		})
	}
	if _, err := DefaultSpec().NewWithFixed(bytes.NewReader(nil), []uint64{10}, []int{MaxChunk + 1}); err == nil {
		t.Fatal("fixed chunks above MaxChunk accepted")
	}
}
