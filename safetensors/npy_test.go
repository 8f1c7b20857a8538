package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNpyHeaderExact(t *testing.T) {
	// What numpy 1.24 np.save writes for np.zeros((2, 3), "<f4").
	dict := "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
	want := "\x93NUMPY\x01\x00\x76\x00" + dict + strings.Repeat(" ", 128-10-len(dict)-1) + "\n"
	got, ok := NpyHeader(Tensor{DType: F32, Shape: []int64{2, 3}, Begin: 100, End: 124})
	if !ok || string(got) != want {
		t.Errorf("NpyHeader =\n%q\nwant\n%q", got, want)
	}

	tests := []struct {
		dtype DType
		shape []int64
		dict  string // the dict, before padding
	}{
		{Bool, []int64{5}, "{'descr': '|b1', 'fortran_order': False, 'shape': (5,), }"},
		{I64, []int64{}, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"},
		{U8, []int64{0, 7}, "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 7), }"},
		{F16, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), }"},
	}
	for _, tc := range tests {
		got, ok := NpyHeader(Tensor{DType: tc.dtype, Shape: tc.shape})
		if !ok {
			t.Errorf("NpyHeader(%s %v) not ok", tc.dtype, tc.shape)
			continue
		}
		if len(got)%64 != 0 {
			t.Errorf("NpyHeader(%s %v) is %d bytes, not a multiple of 64", tc.dtype, tc.shape, len(got))
		}
		if string(got[:8]) != "\x93NUMPY\x01\x00" {
			t.Errorf("NpyHeader(%s %v) magic/version = %q", tc.dtype, tc.shape, got[:8])
		}
		if hl := int(binary.LittleEndian.Uint16(got[8:10])); hl != len(got)-10 {
			t.Errorf("NpyHeader(%s %v) header length field %d, want %d", tc.dtype, tc.shape, hl, len(got)-10)
		}
		if !strings.HasPrefix(string(got[10:]), tc.dict) || got[len(got)-1] != '\n' ||
			strings.TrimRight(string(got[10+len(tc.dict):len(got)-1]), " ") != "" {
			t.Errorf("NpyHeader(%s %v) = %q, want dict %q then spaces and a newline", tc.dtype, tc.shape, got, tc.dict)
		}
	}

	for _, d := range []DType{BF16, F8E4M3, F8E5M2, F8E8M0, "nope"} {
		if _, ok := NpyHeader(Tensor{DType: d, Shape: []int64{1}}); ok {
			t.Errorf("NpyHeader(%s) ok, want false", d)
		}
	}
	if _, ok := NpyHeader(Tensor{DType: F32, Shape: []int64{-1}}); ok {
		t.Error("NpyHeader accepted a negative dim")
	}
	huge := make([]int64, 30000)
	if _, ok := NpyHeader(Tensor{DType: F32, Shape: huge}); ok {
		t.Error("NpyHeader accepted a dict too long for a v1.0 header")
	}
}

// numpyPython returns the interpreter to run, skipping (or failing under CI)
// when /usr/bin/python3 with numpy is not there.
func numpyPython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s with numpy is required under CI: %v", py, err)
		}
		t.Skipf("%s with numpy not available: %v", py, err)
	}
	return py
}

// npyValue fills element i of a dtype with a value that is exact in both Go's
// float64 and the dtype, so numpy's tolist() can be compared with it.
func npyValue(d DType, i int) (raw []byte, val float64) {
	v := float64(i*3 - 7)
	switch d {
	case Bool:
		b := byte(i % 2)
		return []byte{b}, float64(b)
	case U8:
		return []byte{byte(i * 37)}, float64(byte(i * 37))
	case I8:
		return []byte{byte(int8(v))}, v
	case I16:
		return binary.LittleEndian.AppendUint16(nil, uint16(int16(v))), v
	case U16:
		return binary.LittleEndian.AppendUint16(nil, uint16(i*1000)), float64(i * 1000)
	case F16:
		// Small integers are exact in binary16: sign, exponent, mantissa.
		return binary.LittleEndian.AppendUint16(nil, float16(v)), v
	case I32:
		return binary.LittleEndian.AppendUint32(nil, uint32(int32(v*1e6))), v * 1e6
	case U32:
		return binary.LittleEndian.AppendUint32(nil, uint32(i)*123456789), float64(uint32(i) * 123456789)
	case F32:
		return binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(v/4))), v / 4
	case F64:
		return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v/8)), v / 8
	case I64:
		return binary.LittleEndian.AppendUint64(nil, uint64(int64(v)<<40)), float64(int64(v) << 40)
	case U64:
		return binary.LittleEndian.AppendUint64(nil, uint64(i)<<50), float64(uint64(i) << 50)
	}
	panic("no values for " + d)
}

// float16 encodes a small integer-valued float as IEEE binary16.
func float16(v float64) uint16 {
	if v == 0 {
		return 0
	}
	var sign uint16
	if v < 0 {
		sign, v = 0x8000, -v
	}
	frac, exp := math.Frexp(v) // v = frac * 2^exp, frac in [0.5, 1)
	mant := uint16((frac*2 - 1) * 1024)
	return sign | uint16(exp-1+15)<<10 | mant
}

// TestNpyNumpy writes .npy files from NpyHeader plus data and has numpy load
// them, comparing values, and compares the headers with np.save's.
func TestNpyNumpy(t *testing.T) {
	py := numpyPython(t)
	dir := t.TempDir()
	type file struct {
		Path  string    `json:"path"`
		Descr string    `json:"descr"`
		Shape []int64   `json:"shape"`
		want  []float64 // flattened values
		data  []byte
		head  []byte
	}
	shapes := [][]int64{{}, {5}, {2, 3}, {0, 4}, {3, 1, 2}, {1234567, 0}}
	var files []*file
	rng := rand.New(rand.NewPCG(9, 10))
	type npyCase struct {
		dtype DType
		shape []int64
	}
	var cases []npyCase
	for _, d := range DTypes() {
		if _, ok := d.NumpyDescr(); ok && d != C64 { // C64 has no exact tolist comparison; see below
			cases = append(cases, npyCase{d, shapes[rng.IntN(len(shapes))]})
		}
	}
	// Growing rank moves the dict across 64-byte boundaries, where numpy's
	// growth-axis padding decides the header length.
	for k := 2; k <= 32; k++ { // numpy's maximum rank
		for _, d1 := range []int64{1, 10, 100, 1000} {
			shape := make([]int64, k)
			for i := range shape {
				shape[i] = 1
			}
			shape[0] = int64(k%3 + 1)
			shape[1] = d1
			cases = append(cases, npyCase{F32, shape})
		}
	}
	for i, c := range cases {
		d, shape := c.dtype, c.shape
		descr, _ := d.NumpyDescr()
		f := &file{Path: filepath.Join(dir, fmt.Sprintf("%d.npy", i)), Descr: descr, Shape: shape}
		n := int64(1)
		for _, s := range shape {
			n *= s
		}
		for i := range int(n) {
			raw, v := npyValue(d, i)
			f.data = append(f.data, raw...)
			f.want = append(f.want, v)
		}
		head, ok := NpyHeader(Tensor{DType: d, Shape: shape, Begin: 0, End: int64(len(f.data))})
		if !ok {
			t.Fatalf("NpyHeader(%s) not ok", d)
		}
		f.head = head
		if err := os.WriteFile(f.Path, append(head, f.data...), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// C64: compare raw bytes only.
	c64 := &file{Path: filepath.Join(dir, "C64.npy"), Descr: "<c8", Shape: []int64{3}}
	for i := range 3 {
		c64.data = binary.LittleEndian.AppendUint32(c64.data, math.Float32bits(float32(i)))
		c64.data = binary.LittleEndian.AppendUint32(c64.data, math.Float32bits(float32(-i)/2))
	}
	c64.head, _ = NpyHeader(Tensor{DType: C64, Shape: c64.Shape})
	if err := os.WriteFile(c64.Path, append(c64.head, c64.data...), 0o644); err != nil {
		t.Fatal(err)
	}
	files = append(files, c64)

	manifest, err := json.Marshal(files)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
import io, json, sys
import numpy as np
out = []
for f in json.load(sys.stdin):
    a = np.load(f["path"], allow_pickle=False)
    assert a.dtype.str == f["descr"], (a.dtype.str, f["descr"])
    assert list(a.shape) == f["shape"], (a.shape, f["shape"])
    assert not np.isfortran(a) or a.ndim < 2
    ref = io.BytesIO()
    np.save(ref, a)
    ref = ref.getvalue()
    vals = None if a.dtype.kind == "c" else [float(x) for x in a.ravel().tolist()]
    out.append({"header": ref[:len(ref) - a.nbytes].hex(), "data": a.tobytes().hex(), "values": vals})
json.dump(out, sys.stdout)
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(manifest)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("numpy: %v\n%s", err, stderr.String())
	}
	var results []struct {
		Header string    `json:"header"`
		Data   string    `json:"data"`
		Values []float64 `json:"values"`
	}
	if err := json.Unmarshal(stdout, &results); err != nil {
		t.Fatalf("numpy output %q: %v", stdout, err)
	}
	if len(results) != len(files) {
		t.Fatalf("numpy returned %d results for %d files", len(results), len(files))
	}
	for i, f := range files {
		r := results[i]
		name := fmt.Sprintf("%s %v", f.Descr, f.Shape)
		if r.Header != hex.EncodeToString(f.head) {
			t.Errorf("%s: our header differs from np.save's:\n ours %q\nnumpy %s", name, f.head, r.Header)
		}
		if r.Data != hex.EncodeToString(f.data) {
			t.Errorf("%s: numpy loaded different bytes", name)
		}
		if f.want != nil && fmt.Sprint(r.Values) != fmt.Sprint(f.want) {
			t.Errorf("%s: numpy values %v, want %v", name, r.Values, f.want)
		}
	}
}
