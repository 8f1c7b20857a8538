package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// randomTensor returns a tensor of the given dtype and shape filled with
// deterministic pseudo-random bytes.
func randomTensor(rng *rand.Rand, name string, d DType, shape ...int64) WriteTensor {
	size, err := byteSize(d, shape)
	if err != nil {
		panic(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return WriteTensor{Name: name, DType: d, Shape: shape, Data: data}
}

func allDTypeTensors(rng *rand.Rand) []WriteTensor {
	var ts []WriteTensor
	for i, d := range DTypes() {
		ts = append(ts, randomTensor(rng, "t."+string(d), d, int64(i%3+1), 3))
	}
	return ts
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name     string
		tensors  []WriteTensor
		metadata map[string]string
	}{
		{"no tensors", nil, nil},
		{"metadata only", nil, map[string]string{"format": "pt"}},
		{"all dtypes", allDTypeTensors(rng), nil},
		{"all dtypes with metadata", allDTypeTensors(rng), map[string]string{"format": "pt", "z": "last", "a": "first", "quote\"": "new\nline"}},
		{"scalar", []WriteTensor{randomTensor(rng, "s", F64)}, nil},
		{"zero-size", []WriteTensor{randomTensor(rng, "z", F32, 0, 4)}, nil},
		{"zero-size between others", []WriteTensor{
			randomTensor(rng, "a", I16, 3),
			randomTensor(rng, "z", F32, 4, 0),
			randomTensor(rng, "b", U8, 1),
			randomTensor(rng, "end", BF16, 0),
		}, map[string]string{"format": "pt"}},
		{"odd names", []WriteTensor{
			randomTensor(rng, `q"uote\back`, U8, 1),
			randomTensor(rng, "ctl\x00\x01\x1f\t\b\f\r\n", U8, 2),
			randomTensor(rng, "<html>&amp;", U8, 3),
			randomTensor(rng, "ünï\u2028code 🙂", U8, 4),
			randomTensor(rng, "", U8, 5),
		}, nil},
		{"empty metadata map", []WriteTensor{randomTensor(rng, "a", F16, 2, 2)}, map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tc.tensors, tc.metadata); err != nil {
				t.Fatalf("Write: %v", err)
			}
			file := buf.Bytes()
			n := int64(binary.LittleEndian.Uint64(file))
			if n%8 != 0 {
				t.Errorf("header length %d is not a multiple of 8", n)
			}
			if file[8] != '{' {
				t.Errorf("header starts with %q", file[8])
			}
			if strings.Contains(string(file[8:8+n]), `\u003c`) {
				t.Errorf("header escapes '<' unlike the reference writer: %s", file[8:8+n])
			}
			h, err := Parse(file, int64(len(file)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			h2, err := Read(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Errorf("Parse and Read differ")
			}
			wantMD := tc.metadata
			if len(wantMD) == 0 {
				wantMD = nil
			}
			if !reflect.DeepEqual(h.Metadata, wantMD) {
				t.Errorf("Metadata = %v, want %v", h.Metadata, wantMD)
			}
			if h.FileSize != int64(len(file)) || h.HeaderLen != n {
				t.Errorf("FileSize %d HeaderLen %d, want %d %d", h.FileSize, h.HeaderLen, len(file), n)
			}
			if len(h.Tensors) != len(tc.tensors) {
				t.Fatalf("%d tensors, want %d", len(h.Tensors), len(tc.tensors))
			}
			// Written in the given order, so the table (offset order) matches it.
			for i, w := range tc.tensors {
				got := h.Tensors[i]
				if got.Name != w.Name || got.DType != w.DType || !slices.Equal(got.Shape, w.Shape) {
					t.Errorf("tensor %d = %q %s %v, want %q %s %v", i, got.Name, got.DType, got.Shape, w.Name, w.DType, w.Shape)
				}
				if !bytes.Equal(file[got.Begin:got.End], w.Data) {
					t.Errorf("tensor %q data differs", w.Name)
				}
				if got.Begin%8 != 0 && i == 0 {
					t.Errorf("first tensor begins at %d, not 8-aligned", got.Begin)
				}
			}
		})
	}
}

func TestWriteExactBytes(t *testing.T) {
	data := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40} // float32 1, 2
	var buf bytes.Buffer
	err := Write(&buf, []WriteTensor{
		{Name: "a", DType: F32, Shape: []int64{2}, Data: data},
		{Name: "b", DType: Bool, Shape: []int64{}, Data: []byte{1}},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	js := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BOOL","shape":[],"data_offsets":[8,9]}}`
	padded := js + strings.Repeat(" ", (8-len(js)%8)%8)
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(padded)))
	want = append(want, padded...)
	want = append(want, data...)
	want = append(want, 1)
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("Write =\n%q\nwant\n%q", buf.Bytes(), want)
	}
}

func TestWriteRejects(t *testing.T) {
	ok := WriteTensor{Name: "a", DType: U8, Shape: []int64{2}, Data: []byte{1, 2}}
	tests := []struct {
		name     string
		tensors  []WriteTensor
		metadata map[string]string
		want     string
	}{
		{"short data", []WriteTensor{{Name: "a", DType: F32, Shape: []int64{2}, Data: make([]byte, 7)}}, nil, "needs 8 bytes, data has 7"},
		{"unknown dtype", []WriteTensor{{Name: "a", DType: "F128", Shape: []int64{1}, Data: make([]byte, 16)}}, nil, "unknown dtype"},
		{"negative dim", []WriteTensor{{Name: "a", DType: U8, Shape: []int64{-1}}}, nil, "negative"},
		{"overflow", []WriteTensor{{Name: "a", DType: U8, Shape: []int64{1 << 32, 1 << 32}}}, nil, "overflows"},
		{"duplicate names", []WriteTensor{ok, ok}, nil, `duplicate tensor name "a"`},
		{"reserved name", []WriteTensor{{Name: "__metadata__", DType: U8, Shape: []int64{0}}}, nil, "reserved"},
		{"invalid UTF-8 name", []WriteTensor{{Name: "\xff", DType: U8, Shape: []int64{0}}}, nil, "UTF-8"},
		{"invalid UTF-8 metadata", []WriteTensor{ok}, map[string]string{"k": "\xff"}, "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tc.tensors, tc.metadata)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write error = %v, want it to contain %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing validation", buf.Len())
			}
		})
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteError(t *testing.T) {
	boom := errors.New("boom")
	err := Write(failingWriter{boom}, []WriteTensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil)
	if !errors.Is(err, boom) {
		t.Errorf("Write = %v, want wrapped boom", err)
	}
}

// parsedFile writes tensors and parses the result.
func parsedFile(t *testing.T, tensors []WriteTensor, metadata map[string]string) ([]byte, *Header) {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, tensors, metadata); err != nil {
		t.Fatal(err)
	}
	h, err := Parse(buf.Bytes(), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), h
}

func TestCutPoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name    string
		tensors []WriteTensor
		want    func(ds int64) []int64 // ds is the data start, 8+N
	}{
		{"no tensors", nil, func(int64) []int64 { return nil }},
		{"only empty tensors", []WriteTensor{randomTensor(rng, "z", F32, 0)}, func(int64) []int64 { return nil }},
		{"one tensor", []WriteTensor{randomTensor(rng, "a", F32, 4)}, func(ds int64) []int64 { return []int64{ds} }},
		{"several", []WriteTensor{
			randomTensor(rng, "a", F32, 2),    // [0,8)
			randomTensor(rng, "z", F16, 0),    // [8,8)
			randomTensor(rng, "b", U8, 5),     // [8,13)
			randomTensor(rng, "c", I64, 1, 2), // [13,29)
			randomTensor(rng, "z2", U8, 0),    // [29,29)
		}, func(ds int64) []int64 { return []int64{ds, ds + 8, ds + 13} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, h := parsedFile(t, tc.tensors, nil)
			got := CutPoints(h)
			want := tc.want(h.DataStart())
			if len(got) != 0 || len(want) != 0 {
				if !slices.Equal(got, want) {
					t.Errorf("CutPoints = %v, want %v", got, want)
				}
			}
		})
	}
}

func TestSingleTensorHeader(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	tensors := append(allDTypeTensors(rng),
		randomTensor(rng, "scalar", F32),
		randomTensor(rng, "empty", I64, 3, 0),
		randomTensor(rng, `we"ird\name`, U8, 3))
	file, h := parsedFile(t, tensors, map[string]string{"format": "pt"})
	for _, tt := range h.Tensors {
		head, err := SingleTensorHeader(tt)
		if err != nil {
			t.Fatalf("SingleTensorHeader(%q): %v", tt.Name, err)
		}
		if len(head)%8 != 0 {
			t.Errorf("%q: header of %d bytes leaves the data unaligned", tt.Name, len(head))
		}
		single := append(slices.Clip(head), file[tt.Begin:tt.End]...)
		sh, err := Parse(single, int64(len(single)))
		if err != nil {
			t.Fatalf("%q: single-tensor file does not parse: %v", tt.Name, err)
		}
		if len(sh.Tensors) != 1 || sh.Metadata != nil {
			t.Fatalf("%q: got %d tensors, metadata %v", tt.Name, len(sh.Tensors), sh.Metadata)
		}
		got := sh.Tensors[0]
		if got.Name != tt.Name || got.DType != tt.DType || !slices.Equal(got.Shape, tt.Shape) ||
			got.Begin != int64(len(head)) || got.End != int64(len(single)) {
			t.Errorf("single-tensor table %+v, want %+v at [%d, %d)", got, tt, len(head), len(single))
		}
	}

	bad := h.Tensors[0]
	bad.End++
	if _, err := SingleTensorHeader(bad); err == nil {
		t.Error("SingleTensorHeader accepted a range that does not match the shape")
	}
	if _, err := SingleTensorHeader(Tensor{Name: "x", DType: "nope", Shape: []int64{1}, End: 1}); err == nil {
		t.Error("SingleTensorHeader accepted an unknown dtype")
	}
}

func TestHeaderJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	tensors := []WriteTensor{randomTensor(rng, "b", F32, 2), randomTensor(rng, "a", U8, 3, 1)}
	_, h := parsedFile(t, tensors, map[string]string{"format": "pt"})
	js, err := HeaderJSON(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "__metadata__": {
    "format": "pt"
  },
  "b": {
    "dtype": "F32",
    "shape": [
      2
    ],
    "data_offsets": [
      0,
      8
    ]
  },
  "a": {
    "dtype": "U8",
    "shape": [
      3,
      1
    ],
    "data_offsets": [
      8,
      11
    ]
  }
}
`
	if string(js) != want {
		t.Errorf("HeaderJSON =\n%s\nwant\n%s", js, want)
	}
	var v map[string]any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Errorf("HeaderJSON is not valid JSON: %v", err)
	}

	_, empty := parsedFile(t, nil, nil)
	js, err = HeaderJSON(empty)
	if err != nil || string(js) != "{}\n" {
		t.Errorf("HeaderJSON(empty) = %q, %v", js, err)
	}
}

func BenchmarkParse(b *testing.B) {
	tensors := make([]WriteTensor, 10000)
	for i := range tensors {
		tensors[i] = WriteTensor{Name: fmt.Sprintf("model.layers.%d.mlp.weight", i), DType: BF16, Shape: []int64{2, 2}, Data: make([]byte, 8)}
	}
	var buf bytes.Buffer
	if err := Write(&buf, tensors, map[string]string{"format": "pt"}); err != nil {
		b.Fatal(err)
	}
	file := buf.Bytes()
	b.SetBytes(int64(binary.LittleEndian.Uint64(file)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Parse(file, int64(len(file))); err != nil {
			b.Fatal(err)
		}
	}
}
