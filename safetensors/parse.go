package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header accepted, in bytes (the reference
// reader's limit).
const MaxHeaderSize = 100_000_000

// prefixLen is the size of the little-endian header length that starts a file.
const prefixLen = 8

// metadataKey is the header key holding the free-form string map.
const metadataKey = "__metadata__"

// ErrNotSafetensors is wrapped by every validation error, with a precise message.
var ErrNotSafetensors = errors.New("not a safetensors file")

// Tensor is one entry of the tensor table.
type Tensor struct {
	Name       string
	DType      DType
	Shape      []int64
	Begin, End int64 // absolute byte offsets in the file (8 + header length + data_offsets)
}

// Size returns the tensor's byte size, End-Begin.
func (t Tensor) Size() int64 { return t.End - t.Begin }

// Header is a parsed and validated safetensors header.
type Header struct {
	HeaderLen int64             // N: the JSON header's length
	Metadata  map[string]string // __metadata__ (nil if absent)
	Tensors   []Tensor          // sorted by Begin (file order)
	FileSize  int64             // 8 + N + last End (what the file's size must be)
}

// DataStart returns the absolute offset of the byte buffer, 8+N.
func (h *Header) DataStart() int64 { return prefixLen + h.HeaderLen }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotSafetensors}, args...)...)
}

// HeaderLen reads the 8-byte little-endian prefix; it fails (wrapping
// ErrNotSafetensors) when prefix is shorter than 8 bytes, the length exceeds
// MaxHeaderSize, or the length is below 2 (no JSON object fits).
func HeaderLen(prefix []byte) (int64, error) {
	if len(prefix) < prefixLen {
		return 0, invalid("%d bytes is too short for the 8-byte header length", len(prefix))
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n > MaxHeaderSize {
		return 0, invalid("header length %d exceeds the maximum %d", n, MaxHeaderSize)
	}
	if n < 2 {
		return 0, invalid("header length %d is too small for a JSON object", n)
	}
	return int64(n), nil
}

// Read reads and parses the header from r, a file of fileSize bytes (-1 when
// unknown, which skips the file-size checks). It reads only the 8+N header
// bytes and refuses N > MaxHeaderSize before allocating. I/O errors other than
// a short file are returned without wrapping ErrNotSafetensors.
func Read(r io.ReaderAt, fileSize int64) (*Header, error) {
	var prefix [prefixLen]byte
	if fileSize >= 0 && fileSize < prefixLen {
		return nil, invalid("file of %d bytes is too short for the 8-byte header length", fileSize)
	}
	if err := readFull(r, prefix[:], 0); err != nil {
		return nil, err
	}
	n, err := HeaderLen(prefix[:])
	if err != nil {
		return nil, err
	}
	if fileSize >= 0 && prefixLen+n > fileSize {
		return nil, invalid("header length %d runs past the end of a %d-byte file", n, fileSize)
	}
	head := make([]byte, prefixLen+n)
	copy(head, prefix[:])
	if err := readFull(r, head[prefixLen:], prefixLen); err != nil {
		return nil, err
	}
	return Parse(head, fileSize)
}

// readFull reads len(buf) bytes at off; running out of file is a format error.
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return invalid("file ends at byte %d, inside the header (need %d bytes)", off+int64(n), off+int64(len(buf)))
	}
	return fmt.Errorf("safetensors: read header: %w", err)
}

// rawTensor is a tensor entry before validation, in header order.
type rawTensor struct {
	name  string
	value json.RawMessage
}

// Parse validates the header bytes (the 8-byte prefix followed by the N JSON
// bytes; bytes past 8+N are ignored) against a file of fileSize bytes (-1 skips
// the file-size check). The rules are the reference reader's: a JSON object
// starting with '{' (trailing whitespace padding allowed); every entry but
// __metadata__ is {dtype, shape, data_offsets} with a known dtype,
// non-negative dims and a byte size equal to end-begin; offsets tile the
// buffer from 0 with no holes or overlaps; __metadata__ is a string->string
// map; and the file is exactly 8+N+last end bytes. Duplicate keys are
// rejected. Tensors are returned in offset order, ties in header order.
func Parse(head []byte, fileSize int64) (*Header, error) {
	if len(head) == 0 {
		return nil, invalid("empty file")
	}
	n, err := HeaderLen(head)
	if err != nil {
		return nil, err
	}
	if int64(len(head)) < prefixLen+n {
		if fileSize >= 0 && prefixLen+n > fileSize {
			return nil, invalid("header length %d runs past the end of a %d-byte file", n, fileSize)
		}
		return nil, invalid("header length %d needs %d bytes, have %d", n, prefixLen+n, len(head))
	}
	if fileSize >= 0 && prefixLen+n > fileSize {
		return nil, invalid("header length %d runs past the end of a %d-byte file", n, fileSize)
	}
	js := head[prefixLen : prefixLen+n]
	if !utf8.Valid(js) {
		return nil, invalid("header is not valid UTF-8")
	}
	if js[0] != '{' {
		return nil, invalid("header starts with %q, not '{'", js[0])
	}

	h := &Header{HeaderLen: n}
	var raws []rawTensor
	err = decodeObject(js, func(key string, value json.RawMessage) error {
		if key == metadataKey {
			md, err := parseMetadata(value)
			h.Metadata = md
			return err
		}
		raws = append(raws, rawTensor{key, value})
		return nil
	})
	if err != nil {
		return nil, invalid("header: %w", err)
	}

	h.Tensors = make([]Tensor, 0, len(raws))
	for _, r := range raws {
		t, err := parseTensor(r.name, r.value)
		if err != nil {
			return nil, invalid("tensor %q: %w", r.name, err)
		}
		h.Tensors = append(h.Tensors, t)
	}
	// Offsets are still relative here.
	slices.SortStableFunc(h.Tensors, func(a, b Tensor) int {
		if c := cmpInt64(a.Begin, b.Begin); c != 0 {
			return c
		}
		return cmpInt64(a.End, b.End)
	})
	var end int64
	for i := range h.Tensors {
		t := &h.Tensors[i]
		switch {
		case t.Begin < end:
			return nil, invalid("tensor %q: data_offsets [%d, %d] overlap the previous tensor, which ends at %d", t.Name, t.Begin, t.End, end)
		case t.Begin > end && end == 0:
			return nil, invalid("tensor %q: data_offsets [%d, %d]: the first tensor must begin at 0", t.Name, t.Begin, t.End)
		case t.Begin > end:
			return nil, invalid("tensor %q: data_offsets [%d, %d] leave a hole after offset %d", t.Name, t.Begin, t.End, end)
		}
		end = t.End
	}
	dataStart := prefixLen + n
	if end > math.MaxInt64-dataStart {
		return nil, invalid("data ends at offset %d, too large", end)
	}
	h.FileSize = dataStart + end
	if fileSize >= 0 && fileSize != h.FileSize {
		if fileSize < h.FileSize {
			return nil, invalid("file is %d bytes, shorter than the %d bytes the header describes", fileSize, h.FileSize)
		}
		return nil, invalid("file is %d bytes: %d trailing bytes after the data ends at %d", fileSize, fileSize-h.FileSize, h.FileSize)
	}
	for i := range h.Tensors {
		h.Tensors[i].Begin += dataStart
		h.Tensors[i].End += dataStart
	}
	return h, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeObject walks the JSON object in data and calls fn for each member in
// order. It rejects anything but one object (plus whitespace) and duplicate keys.
func decodeObject(data []byte, fn func(key string, value json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("expected a JSON object, got %s", describeToken(tok))
	}
	seen := make(map[string]struct{})
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("expected an object key, got %s", describeToken(tok))
		}
		if _, dup := seen[key]; dup {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = struct{}{}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return jsonErr(err)
		}
		if err := fn(key, value); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return jsonErr(err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return jsonErr(err)
		}
		return fmt.Errorf("unexpected %s after the JSON object", describeToken(tok))
	}
	return nil
}

func jsonErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("invalid JSON: unexpected end of input")
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("string %q", v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return fmt.Sprintf("%t", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// jsonKind names the JSON type of a raw value, for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// parseMetadata accepts a string->string map, or null (the reference reader
// treats it as absent).
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	if jsonKind(raw) != "an object" {
		return nil, fmt.Errorf("%s must be an object of strings, got %s", metadataKey, jsonKind(raw))
	}
	md := make(map[string]string)
	err := decodeObject(raw, func(key string, value json.RawMessage) error {
		if jsonKind(value) != "a string" {
			return fmt.Errorf("%s[%q] must be a string, got %s", metadataKey, key, jsonKind(value))
		}
		var s string
		if err := json.Unmarshal(value, &s); err != nil {
			return fmt.Errorf("%s[%q]: %w", metadataKey, key, err)
		}
		md[key] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return md, nil
}

// parseTensor checks one tensor entry; the returned offsets are relative to
// the byte buffer. Unknown fields are ignored, as the reference reader does.
func parseTensor(name string, raw json.RawMessage) (Tensor, error) {
	t := Tensor{Name: name}
	if jsonKind(raw) != "an object" {
		return t, fmt.Errorf("entry must be an object, got %s", jsonKind(raw))
	}
	var dtype, shape, offsets json.RawMessage
	err := decodeObject(raw, func(key string, value json.RawMessage) error {
		switch key {
		case "dtype":
			dtype = value
		case "shape":
			shape = value
		case "data_offsets":
			offsets = value
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	switch {
	case dtype == nil:
		return t, errors.New("missing dtype")
	case shape == nil:
		return t, errors.New("missing shape")
	case offsets == nil:
		return t, errors.New("missing data_offsets")
	}

	if jsonKind(dtype) != "a string" {
		return t, fmt.Errorf("dtype must be a string, got %s", jsonKind(dtype))
	}
	var ds string
	if err := json.Unmarshal(dtype, &ds); err != nil {
		return t, fmt.Errorf("dtype: %w", err)
	}
	t.DType = DType(ds)
	if !t.DType.Valid() {
		return t, fmt.Errorf("unknown dtype %q", ds)
	}

	dims, err := parseInts(shape, "shape")
	if err != nil {
		return t, err
	}
	t.Shape = dims
	offs, err := parseInts(offsets, "data_offsets")
	if err != nil {
		return t, err
	}
	if len(offs) != 2 {
		return t, fmt.Errorf("data_offsets must have 2 elements [begin, end], got %d", len(offs))
	}
	t.Begin, t.End = offs[0], offs[1]
	if t.Begin > t.End {
		return t, fmt.Errorf("data_offsets [%d, %d] begin after they end", t.Begin, t.End)
	}
	size, err := byteSize(t.DType, t.Shape)
	if err != nil {
		return t, err
	}
	if size != t.End-t.Begin {
		return t, fmt.Errorf("shape %v of %s is %d bytes but data_offsets [%d, %d] span %d", t.Shape, t.DType, size, t.Begin, t.End, t.End-t.Begin)
	}
	return t, nil
}

// parseInts decodes an array of non-negative JSON integers (no fraction or
// exponent, as the reference reader's usize fields demand) that fit in int64.
func parseInts(raw json.RawMessage, field string) ([]int64, error) {
	if jsonKind(raw) != "an array" {
		return nil, fmt.Errorf("%s must be an array of integers, got %s", field, jsonKind(raw))
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	out := make([]int64, len(elems))
	for i, e := range elems {
		e = bytes.TrimSpace(e)
		if jsonKind(e) != "a number" {
			return nil, fmt.Errorf("%s[%d] must be an integer, got %s", field, i, jsonKind(e))
		}
		if e[0] == '-' {
			return nil, fmt.Errorf("%s[%d] is negative: %s", field, i, e)
		}
		v, err := strconv.ParseInt(string(e), 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Errorf("%s[%d] is too large: %s", field, i, e)
			}
			return nil, fmt.Errorf("%s[%d] must be an integer, got %s", field, i, e)
		}
		out[i] = v
	}
	return out, nil
}

// byteSize returns the product of shape times the dtype size, failing on
// negative dims or int64 overflow.
func byteSize(d DType, shape []int64) (int64, error) {
	size := uint64(d.Size())
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %q", string(d))
	}
	n := uint64(1)
	for i, dim := range shape {
		if dim < 0 {
			return 0, fmt.Errorf("shape[%d] is negative: %d", i, dim)
		}
		hi, lo := bits.Mul64(n, uint64(dim))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v: element count overflows int64", shape)
		}
		n = lo
	}
	hi, lo := bits.Mul64(n, size)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("shape %v of %s: byte size overflows int64", shape, d)
	}
	return int64(lo), nil
}

// CutPoints returns the byte offsets a content-defined chunker should cut
// at: the end of the header (8+N), then the end of every tensor, ascending,
// without duplicates, excluding 0 and the file size. It needs only the header.
func CutPoints(h *Header) []int64 {
	cuts := make([]int64, 0, len(h.Tensors)+1)
	add := func(off int64) {
		if off <= 0 || off >= h.FileSize {
			return
		}
		if len(cuts) > 0 && cuts[len(cuts)-1] >= off {
			return
		}
		cuts = append(cuts, off)
	}
	add(h.DataStart())
	for _, t := range h.Tensors {
		add(t.End)
	}
	return cuts
}
