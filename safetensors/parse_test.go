package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// rawFile builds a file from a literal header: the length prefix, the header
// bytes as given (no padding), then dataLen zero bytes.
func rawFile(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// withLen returns an 8-byte prefix claiming n header bytes, followed by rest.
func withLen(n uint64, rest string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

func TestParseMalformed(t *testing.T) {
	const f32x2 = `{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	tests := []struct {
		name string
		file []byte
		want string // substring of the error message
	}{
		{"empty file", nil, "empty file"},
		{"7-byte file", []byte{2, 0, 0, 0, 0, 0, 0}, "too short for the 8-byte header length"},
		{"header length past EOF", withLen(100, `{"a":1}`), "runs past the end"},
		{"huge header length", withLen(MaxHeaderSize+1, `{}`), "exceeds the maximum"},
		{"max uint64 header length", withLen(^uint64(0), `{}`), "exceeds the maximum"},
		{"zero header length", withLen(0, ``), "too small"},
		{"header starts with space", rawFile(` {}`, 0), `not '{'`},
		{"header not JSON", rawFile(`hello`, 0), `not '{'`},
		{"JSON array", rawFile(`[{"a":1}]`, 0), `not '{'`},
		{"invalid JSON", rawFile(`{"a":`, 0), "invalid JSON"},
		{"invalid JSON key", rawFile(`{a:1}`, 0), "invalid JSON"},
		{"garbage after object", rawFile(`{} {}`, 0), "after the JSON object"},
		{"NUL padding", rawFile("{}\x00\x00", 0), "invalid JSON"},
		{"invalid UTF-8", rawFile("{\"\xff\":1}", 0), "not valid UTF-8"},
		{"entry not an object", rawFile(`{"a":5}`, 0), "entry must be an object, got a number"},
		{"entry null", rawFile(`{"a":null}`, 0), "entry must be an object, got null"},
		{"missing dtype", rawFile(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, 8), "missing dtype"},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, 8), "missing shape"},
		{"missing data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[2]}}`, 8), "missing data_offsets"},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}`, 8), `unknown dtype "F128"`},
		{"lowercase dtype", rawFile(`{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}`, 8), `unknown dtype "f32"`},
		{"sub-byte dtype", rawFile(`{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}`, 1), `unknown dtype "F4"`},
		{"dtype not a string", rawFile(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, 8), "dtype must be a string"},
		{"shape not an array", rawFile(`{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, 8), "shape must be an array"},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8), "shape[0] is negative"},
		{"fractional dim", rawFile(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, 8), "shape[0] must be an integer"},
		{"string dim", rawFile(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, 8), "shape[0] must be an integer, got a string"},
		{"dim beyond int64", rawFile(`{"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,8]}}`, 8), "shape[0] is too large"},
		{"element count overflows int64", rawFile(`{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), "element count overflows int64"},
		{"byte size overflows int64", rawFile(`{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}}`, 8), "byte size overflows int64"},
		{"size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}`, 8), "is 16 bytes but data_offsets [0, 8] span 8"},
		{"overlapping offsets", rawFile(`{"a":`+f32x2+`,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "overlap the previous tensor"},
		{"same range twice", rawFile(`{"a":`+f32x2+`,"b":`+f32x2+`}`, 8), "overlap the previous tensor"},
		{"gapped offsets", rawFile(`{"a":`+f32x2+`,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`, 20), "leave a hole after offset 8"},
		{"offsets not starting at 0", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "must begin at 0"},
		{"begin after end", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}`, 8), "begin after they end"},
		{"trailing bytes after last tensor", rawFile(`{"a":`+f32x2+`}`, 9), "1 trailing bytes after the data ends at 70"},
		{"trailing bytes with no tensors", rawFile(`{}`, 1), "trailing bytes"},
		{"file shorter than last end", rawFile(`{"a":`+f32x2+`}`, 7), "shorter than the"},
		{"metadata non-string value", rawFile(`{"__metadata__":{"format":1}}`, 0), `__metadata__["format"] must be a string, got a number`},
		{"metadata nested object", rawFile(`{"__metadata__":{"format":{}}}`, 0), "must be a string, got an object"},
		{"metadata array", rawFile(`{"__metadata__":["pt"]}`, 0), "__metadata__ must be an object of strings"},
		{"metadata duplicate key", rawFile(`{"__metadata__":{"k":"a","k":"b"}}`, 0), `duplicate key "k" in __metadata__`},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), `duplicate key "__metadata__"`},
		{"duplicate names", rawFile(`{"a":`+f32x2+`,"a":`+f32x2+`}`, 8), `duplicate key "a"`},
		{"duplicate names via escape", rawFile(`{"a":`+f32x2+`,"\u0061":`+f32x2+`}`, 8), `duplicate key "a"`},
		{"duplicate field in entry", rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8), `duplicate field "dtype"`},
		{"data_offsets with 3 elements", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, 8), "data_offsets must have 2 elements"},
		{"data_offsets with 1 element", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}`, 8), "data_offsets must have 2 elements"},
		{"fractional offsets", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}`, 8), "data_offsets[1] must be an integer, got 8.0"},
		{"exponent offsets", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}`, 8), "data_offsets[1] must be an integer"},
		{"string offsets", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}}`, 8), "data_offsets[0] must be an integer, got a string"},
		{"negative offsets", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[-1,-1]}}`, 0), "data_offsets[0] is negative"},
		{"offsets object", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":{"begin":0}}}`, 8), "data_offsets must be an array"},
		{"unpaired surrogate in name", rawFile(`{"\ud800":`+f32x2+`}`, 8), "unpaired surrogate"},
		{"nested too deep", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":`+strings.Repeat("[", 130)+strings.Repeat("]", 130)+`}}`, 0), "nested deeper than 128"},
		{"control character in name", rawFile("{\"a\tb\":"+f32x2+"}", 8), "control character"},
		{"end beyond int64", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,99999999999999999999]}}`, 0), "data_offsets[1] is too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.file, int64(len(tc.file)))
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", tc.file, h)
			}
			if !errors.Is(err, ErrNotSafetensors) {
				t.Errorf("Parse error %q does not wrap ErrNotSafetensors", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse error %q does not contain %q", err, tc.want)
			}
			if _, err := Read(bytes.NewReader(tc.file), int64(len(tc.file))); !errors.Is(err, ErrNotSafetensors) {
				t.Errorf("Read error %v does not wrap ErrNotSafetensors", err)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name     string
		file     []byte
		metadata map[string]string
		tensors  []Tensor // offsets relative to the data start
	}{
		{"no tensors", rawFile(`{}`, 0), nil, []Tensor{}},
		{"unpadded", rawFile(`{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}`, 3), nil,
			[]Tensor{{Name: "a", DType: U8, Shape: []int64{3}, Begin: 0, End: 3}}},
		{"trailing whitespace", rawFile("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}} \n\t\r ", 3), nil,
			[]Tensor{{Name: "a", DType: U8, Shape: []int64{3}, Begin: 0, End: 3}}},
		{"whitespace inside", rawFile("{ \"a\" : { \"shape\" : [ 3 ] , \"data_offsets\" : [ 0 , 3 ] , \"dtype\" : \"U8\" } }", 3), nil,
			[]Tensor{{Name: "a", DType: U8, Shape: []int64{3}, Begin: 0, End: 3}}},
		{"unknown fields ignored", rawFile(`{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3],"extra":[{"x":null}]}}`, 3), nil,
			[]Tensor{{Name: "a", DType: U8, Shape: []int64{3}, Begin: 0, End: 3}}},
		{"null metadata", rawFile(`{"__metadata__":null}`, 0), nil, []Tensor{}},
		{"empty metadata", rawFile(`{"__metadata__":{}}`, 0), map[string]string{}, []Tensor{}},
		{"metadata anywhere", rawFile(`{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"__metadata__":{"format":"pt","k":"\u00e9"}}`, 1),
			map[string]string{"format": "pt", "k": "é"},
			[]Tensor{{Name: "a", DType: U8, Shape: []int64{}, Begin: 0, End: 1}}},
		{"offset order, not header order", rawFile(`{"b":{"dtype":"I16","shape":[1],"data_offsets":[4,6]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 6), nil,
			[]Tensor{{Name: "a", DType: F32, Shape: []int64{1}, Begin: 0, End: 4}, {Name: "b", DType: I16, Shape: []int64{1}, Begin: 4, End: 6}}},
		{"zero-size tensors share offsets", rawFile(`{"z2":{"dtype":"F64","shape":[0,5],"data_offsets":[2,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"z3":{"dtype":"BOOL","shape":[0],"data_offsets":[2,2]}}`, 2), nil,
			[]Tensor{
				{Name: "z1", DType: F32, Shape: []int64{0}, Begin: 0, End: 0},
				{Name: "a", DType: U8, Shape: []int64{2}, Begin: 0, End: 2},
				{Name: "z2", DType: F64, Shape: []int64{0, 5}, Begin: 2, End: 2},
				{Name: "z3", DType: Bool, Shape: []int64{0}, Begin: 2, End: 2},
			}},
		{"escaped name", rawFile(`{"\u00e9\ud83d\ude00\n\/":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), nil,
			[]Tensor{{Name: "é😀\n/", DType: U8, Shape: []int64{1}, Begin: 0, End: 1}}},
		{"empty name", rawFile(`{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), nil,
			[]Tensor{{Name: "", DType: U8, Shape: []int64{1}, Begin: 0, End: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.file, int64(len(tc.file)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			h2, err := Read(bytes.NewReader(tc.file), int64(len(tc.file)))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Errorf("Parse and Read differ:\n%+v\n%+v", h, h2)
			}
			n := int64(binary.LittleEndian.Uint64(tc.file))
			if h.HeaderLen != n || h.FileSize != int64(len(tc.file)) {
				t.Errorf("HeaderLen %d FileSize %d, want %d %d", h.HeaderLen, h.FileSize, n, len(tc.file))
			}
			if !reflect.DeepEqual(h.Metadata, tc.metadata) {
				t.Errorf("Metadata = %#v, want %#v", h.Metadata, tc.metadata)
			}
			want := make([]Tensor, len(tc.tensors))
			for i, tt := range tc.tensors {
				tt.Begin += 8 + n
				tt.End += 8 + n
				want[i] = tt
			}
			if !reflect.DeepEqual(h.Tensors, want) {
				t.Errorf("Tensors = %+v, want %+v", h.Tensors, want)
			}
		})
	}
}

func TestParseFileSizeUnknown(t *testing.T) {
	file := rawFile(`{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}`, 3)
	head := file[:len(file)-3]
	h, err := Parse(head, -1)
	if err != nil {
		t.Fatalf("Parse(head, -1): %v", err)
	}
	if h.FileSize != int64(len(file)) {
		t.Errorf("FileSize = %d, want %d", h.FileSize, len(file))
	}
	// Extra bytes after the header, such as a file's first chunk, are ignored.
	if _, err := Parse(file, int64(len(file))); err != nil {
		t.Errorf("Parse(whole file): %v", err)
	}
	if _, err := Read(bytes.NewReader(file), -1); err != nil {
		t.Errorf("Read(-1): %v", err)
	}
	if _, err := Parse(head[:len(head)-1], -1); !errors.Is(err, ErrNotSafetensors) {
		t.Errorf("Parse(truncated header) = %v, want ErrNotSafetensors", err)
	}
	if _, err := Read(bytes.NewReader(head[:len(head)-1]), -1); !errors.Is(err, ErrNotSafetensors) {
		t.Errorf("Read(truncated header, -1) = %v, want ErrNotSafetensors", err)
	}
}

func TestHeaderLen(t *testing.T) {
	tests := []struct {
		prefix []byte
		want   int64
		ok     bool
	}{
		{withLen(2, ""), 2, true},
		{withLen(MaxHeaderSize, ""), MaxHeaderSize, true},
		{withLen(MaxHeaderSize+1, ""), 0, false},
		{withLen(1, ""), 0, false},
		{[]byte{8, 0, 0, 0, 0, 0, 0}, 0, false},
		{withLen(8, "{}      "), 8, true},
	}
	for _, tc := range tests {
		n, err := HeaderLen(tc.prefix)
		if tc.ok != (err == nil) || n != tc.want {
			t.Errorf("HeaderLen(%x) = %d, %v; want %d, ok=%v", tc.prefix, n, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNotSafetensors) {
			t.Errorf("HeaderLen(%x) error %v does not wrap ErrNotSafetensors", tc.prefix, err)
		}
	}
}

// failingReaderAt fails with a non-EOF error, which must not be mistaken for a format error.
type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// countingReaderAt records the furthest byte read.
type countingReaderAt struct {
	r   *bytes.Reader
	max int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.max = max(c.max, off+int64(n))
	return n, err
}

func TestReadIO(t *testing.T) {
	boom := errors.New("boom")
	_, err := Read(failingReaderAt{boom}, 100)
	if !errors.Is(err, boom) || errors.Is(err, ErrNotSafetensors) {
		t.Errorf("Read with failing reader = %v, want wrapped boom only", err)
	}

	file := rawFile(`{"a":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}}`, 1000)
	c := &countingReaderAt{r: bytes.NewReader(file)}
	h, err := Read(c, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if c.max != h.DataStart() {
		t.Errorf("Read read up to byte %d, want only the header (%d)", c.max, h.DataStart())
	}
}
