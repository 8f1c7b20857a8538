package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary header JSON (framed with its length and followed
// by dataLen zero bytes) and the same bytes as a raw file to Parse and Read.
// Neither may panic, they must agree, every rejection must wrap
// ErrNotSafetensors, and every accepted table must tile the buffer exactly.
func FuzzParse(f *testing.F) {
	seeds := []struct {
		header  string
		dataLen uint16
	}{
		{`{}`, 0},
		{`{"__metadata__":{"format":"pt"}}`, 0},
		{`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8},
		{`{"__metadata__":{"format":"pt"},"b":{"dtype":"I16","shape":[1],"data_offsets":[4,6]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}      `, 6},
		{`{"z":{"dtype":"BF16","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}}`, 4},
		{`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8},
		{`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8},
		{`{"a":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3],"x":[1,{"y":null}]}}`, 3},
	}
	for _, s := range seeds {
		f.Add([]byte(s.header), s.dataLen)
	}
	var buf bytes.Buffer
	if err := Write(&buf, []WriteTensor{
		{Name: "w", DType: F64, Shape: []int64{1, 2}, Data: make([]byte, 16)},
		{Name: "e\"s\\c\n", DType: Bool, Shape: []int64{3}, Data: []byte{0, 1, 0}},
	}, map[string]string{"format": "pt"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes()[8:], uint16(0)) // a whole file as the "header": exercises the raw path

	f.Fuzz(func(t *testing.T, header []byte, dataLen uint16) {
		file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		file = append(file, header...)
		file = append(file, make([]byte, dataLen)...)
		checkParse(t, file)
		checkParse(t, header)
	})
}

func checkParse(t *testing.T, file []byte) {
	size := int64(len(file))
	h, err := Parse(file, size)
	h2, err2 := Read(bytes.NewReader(file), size)
	if (err == nil) != (err2 == nil) {
		t.Fatalf("Parse error %v but Read error %v", err, err2)
	}
	if err != nil {
		if !errors.Is(err, ErrNotSafetensors) || !errors.Is(err2, ErrNotSafetensors) {
			t.Fatalf("errors %v / %v do not wrap ErrNotSafetensors", err, err2)
		}
		return
	}
	if !reflect.DeepEqual(h, h2) {
		t.Fatalf("Parse and Read disagree:\n%+v\n%+v", h, h2)
	}
	checkTable(t, h, size)

	// encoding/json must read the same names and metadata from the header.
	var ref map[string]json.RawMessage
	if err := json.Unmarshal(file[8:h.DataStart()], &ref); err != nil {
		t.Fatalf("accepted header is not JSON to encoding/json: %v", err)
	}
	names := make(map[string]bool)
	for _, tt := range h.Tensors {
		names[tt.Name] = true
	}
	for k, v := range ref {
		if k == metadataKey {
			var md map[string]string
			if err := json.Unmarshal(v, &md); err != nil || !reflect.DeepEqual(md, h.Metadata) {
				t.Fatalf("metadata %q (encoding/json: %v, %v), parsed %q", v, md, err, h.Metadata)
			}
		} else if !names[k] {
			t.Fatalf("encoding/json sees tensor %q, Parse does not: %+v", k, h.Tensors)
		}
	}
	if _, ok := ref[metadataKey]; len(ref)-btoi(ok) != len(h.Tensors) {
		t.Fatalf("encoding/json sees %d keys, Parse %d tensors", len(ref), len(h.Tensors))
	}

	// The table must survive a trip through the writer.
	data := make([]WriteTensor, len(h.Tensors))
	for i, tt := range h.Tensors {
		data[i] = WriteTensor{Name: tt.Name, DType: tt.DType, Shape: tt.Shape, Data: file[tt.Begin:tt.End]}
	}
	var buf bytes.Buffer
	if err := Write(&buf, data, h.Metadata); err != nil {
		t.Fatalf("Write of an accepted table: %v", err)
	}
	w, err := Parse(buf.Bytes(), int64(buf.Len()))
	if err != nil {
		t.Fatalf("re-written file does not parse: %v", err)
	}
	if len(w.Tensors) != len(h.Tensors) || (len(h.Metadata) > 0 && !reflect.DeepEqual(w.Metadata, h.Metadata)) {
		t.Fatalf("re-written table differs: %+v vs %+v", w, h)
	}
	for i := range w.Tensors {
		a, b := w.Tensors[i], h.Tensors[i]
		if a.Name != b.Name || a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || a.Size() != b.Size() {
			t.Fatalf("re-written tensor %d = %+v, want %+v", i, a, b)
		}
	}

	js, err := HeaderJSON(h)
	if err != nil || !json.Valid(js) {
		t.Fatalf("HeaderJSON = %q, %v", js, err)
	}
	for _, tt := range h.Tensors {
		head, err := SingleTensorHeader(tt)
		if err != nil {
			t.Fatalf("SingleTensorHeader(%+v): %v", tt, err)
		}
		single := append(head, file[tt.Begin:tt.End]...)
		if _, err := Parse(single, int64(len(single))); err != nil {
			t.Fatalf("single-tensor file for %q does not parse: %v", tt.Name, err)
		}
		if npy, ok := NpyHeader(tt); ok && len(npy)%64 != 0 {
			t.Fatalf("NpyHeader(%+v) is %d bytes", tt, len(npy))
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzJSONScanner checks the header's JSON scanner against encoding/json: it
// accepts only valid JSON, and rejects valid JSON only for the serde_json
// limits (unpaired surrogate escapes, nesting deeper than 128). Strings must
// decode to what encoding/json decodes.
func FuzzJSONScanner(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0.5e+7`, `true`, `null`, ` {"a" : [1, 2.5, "x", {"b": null}]} `,
		`"\u00e9\ud83d\ude00\n\"\\\/"`, `"\ud800"`, `"\udc00x"`, `01`, `1.`, `[1,]`, `{"a":1,}`,
		strings.Repeat("[", 128) + strings.Repeat("]", 128), strings.Repeat("[", 129) + strings.Repeat("]", 129),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // Parse checks UTF-8 before scanning
		}
		s := &jsonScanner{data: data}
		var err error
		var str string
		if s.kind() == "a string" {
			str, err = s.str()
		} else {
			err = s.skip()
		}
		if err == nil && !s.atEnd() {
			err = s.errorf("trailing data")
		}
		valid := json.Valid(data)
		switch {
		case err == nil && !valid:
			t.Fatalf("scanner accepts invalid JSON %q", data)
		case err != nil && valid:
			msg := err.Error()
			if !strings.Contains(msg, "surrogate") && !strings.Contains(msg, "nested deeper") {
				t.Fatalf("scanner rejects valid JSON %q: %v", data, err)
			}
		case err == nil && s.depth != 0:
			t.Fatalf("depth %d after %q", s.depth, data)
		}
		if err == nil && len(bytes.TrimSpace(data)) > 0 && bytes.TrimSpace(data)[0] == '"' {
			var ref string
			if jerr := json.Unmarshal(data, &ref); jerr != nil || ref != str {
				t.Fatalf("string %q decodes to %q, encoding/json %q (%v)", data, str, ref, jerr)
			}
		}
	})
}

// checkTable asserts the invariants every accepted header has.
func checkTable(t *testing.T, h *Header, size int64) {
	t.Helper()
	if h.FileSize != size || h.HeaderLen < 2 || h.HeaderLen > MaxHeaderSize {
		t.Fatalf("FileSize %d (file %d), HeaderLen %d", h.FileSize, size, h.HeaderLen)
	}
	end := h.DataStart()
	names := make(map[string]bool)
	for _, tt := range h.Tensors {
		if tt.Begin != end {
			t.Fatalf("tensor %q begins at %d, previous ends at %d", tt.Name, tt.Begin, end)
		}
		n, err := byteSize(tt.DType, tt.Shape)
		if err != nil || n != tt.End-tt.Begin {
			t.Fatalf("tensor %q: size %d (%v) for range [%d, %d)", tt.Name, n, err, tt.Begin, tt.End)
		}
		if names[tt.Name] || tt.Name == metadataKey {
			t.Fatalf("tensor name %q repeated or reserved", tt.Name)
		}
		names[tt.Name] = true
		end = tt.End
	}
	if end != h.FileSize {
		t.Fatalf("tensors end at %d, file at %d", end, h.FileSize)
	}
	cuts := CutPoints(h)
	for i, c := range cuts {
		if c <= 0 || c >= h.FileSize || (i > 0 && c <= cuts[i-1]) {
			t.Fatalf("CutPoints %v not strictly ascending inside (0, %d)", cuts, h.FileSize)
		}
	}
}
