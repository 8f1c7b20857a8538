package safetensors

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
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

// Parse validates the header bytes (the 8-byte prefix followed by the N JSON
// bytes; bytes past 8+N are ignored) against a file of fileSize bytes (-1 skips
// the file-size check). The rules are the reference reader's: a JSON object
// starting with '{' (trailing whitespace padding allowed); every entry but
// __metadata__ is {dtype, shape, data_offsets} with a known dtype,
// non-negative dims and a byte size equal to end-begin; offsets tile the
// buffer from 0 with no holes or overlaps; __metadata__ is a string->string
// map; and the file is exactly 8+N+last end bytes. Duplicate keys are
// rejected (tensor names, __metadata__ keys, and a tensor's dtype, shape or
// data_offsets); unknown fields inside a tensor entry are ignored, as the
// reference reader does. JSON nested deeper than 128 levels or holding unpaired
// surrogate escapes is rejected, as serde_json does. Tensors are returned in
// offset order, ties (zero-size tensors) in header order.
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
	if h.Metadata, h.Tensors, err = parseHeaderJSON(js); err != nil {
		return nil, invalid("%w", err)
	}
	// Offsets are still relative here.
	slices.SortStableFunc(h.Tensors, func(a, b Tensor) int {
		if c := cmp.Compare(a.Begin, b.Begin); c != 0 {
			return c
		}
		return cmp.Compare(a.End, b.End)
	})
	var end int64
	for i := range h.Tensors {
		t := &h.Tensors[i]
		switch {
		case t.Begin < end:
			return nil, invalid("tensor %q: data_offsets [%d, %d] overlap the previous tensor, which ends at %d", t.Name, t.Begin, t.End, end)
		case t.Begin > end && i == 0:
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

// parseHeaderJSON reads the header object: __metadata__ and the tensor
// entries, in header order, with offsets relative to the byte buffer.
func parseHeaderJSON(js []byte) (map[string]string, []Tensor, error) {
	s := &jsonScanner{data: js}
	var md map[string]string
	tensors := []Tensor{}
	seen := make(map[string]struct{})
	err := s.object(func(rawKey []byte) error {
		key := string(rawKey)
		if _, dup := seen[key]; dup {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = struct{}{}
		if key == metadataKey {
			var err error
			md, err = s.metadata()
			return err
		}
		t, err := s.tensor(key)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		tensors = append(tensors, t)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if !s.atEnd() {
		return nil, nil, s.errorf("unexpected %s after the JSON object", s.found())
	}
	return md, tensors, nil
}

// metadata reads __metadata__: a string->string map, or null, which the
// reference reader treats as absent.
func (s *jsonScanner) metadata() (map[string]string, error) {
	switch k := s.kind(); k {
	case "null":
		return nil, s.literal("null")
	case "an object":
	default:
		return nil, s.typeError(fmt.Errorf("%s must be an object of strings, got %s", metadataKey, k))
	}
	md := make(map[string]string)
	err := s.object(func(rawKey []byte) error {
		key := string(rawKey)
		if _, dup := md[key]; dup {
			return fmt.Errorf("duplicate key %q in %s", key, metadataKey)
		}
		if k := s.kind(); k != "a string" {
			return s.typeError(fmt.Errorf("%s[%q] must be a string, got %s", metadataKey, key, k))
		}
		v, err := s.str()
		md[key] = v
		return err
	})
	return md, err
}

// tensor reads one tensor entry and checks it on its own. Unknown fields are
// skipped and repeated known ones rejected, as serde does for the reference
// reader.
func (s *jsonScanner) tensor(name string) (Tensor, error) {
	t := Tensor{Name: name}
	if k := s.kind(); k != "an object" {
		return t, s.typeError(fmt.Errorf("entry must be an object, got %s", k))
	}
	var offs []int64
	var haveDType, haveShape, haveOffsets bool
	err := s.object(func(rawKey []byte) error {
		var have *bool
		switch string(rawKey) {
		case "dtype":
			have = &haveDType
		case "shape":
			have = &haveShape
		case "data_offsets":
			have = &haveOffsets
		default:
			return s.skip()
		}
		if *have {
			return fmt.Errorf("duplicate field %q", rawKey)
		}
		*have = true
		var err error
		switch string(rawKey) {
		case "dtype":
			if k := s.kind(); k != "a string" {
				return s.typeError(fmt.Errorf("dtype must be a string, got %s", k))
			}
			var d []byte
			if d, err = s.strBytes(); err == nil {
				t.DType = knownDType(d)
			}
		case "shape":
			t.Shape, err = s.ints("shape")
		case "data_offsets":
			offs, err = s.ints("data_offsets")
		}
		return err
	})
	switch {
	case err != nil:
		return t, err
	case !haveDType:
		return t, errors.New("missing dtype")
	case !haveShape:
		return t, errors.New("missing shape")
	case !haveOffsets:
		return t, errors.New("missing data_offsets")
	case !t.DType.Valid():
		return t, fmt.Errorf("unknown dtype %q", string(t.DType))
	case len(offs) != 2:
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

// ints reads an array of non-negative integers that fit in int64. Fractions
// and exponents are rejected, as the reference reader's usize fields do.
func (s *jsonScanner) ints(field string) ([]int64, error) {
	if k := s.kind(); k != "an array" {
		return nil, s.typeError(fmt.Errorf("%s must be an array of integers, got %s", field, k))
	}
	out := make([]int64, 0, 4)
	err := s.array(func(i int) error {
		if k := s.kind(); k != "a number" {
			return s.typeError(fmt.Errorf("%s[%d] must be an integer, got %s", field, i, k))
		}
		lit, err := s.number()
		if err != nil {
			return err
		}
		if lit[0] == '-' {
			return fmt.Errorf("%s[%d] is negative: %s", field, i, lit)
		}
		var v int64
		for _, c := range lit {
			if c < '0' || c > '9' {
				return fmt.Errorf("%s[%d] must be an integer, got %s", field, i, lit)
			}
			if v > (math.MaxInt64-int64(c-'0'))/10 {
				return fmt.Errorf("%s[%d] is too large: %s", field, i, lit)
			}
			v = v*10 + int64(c-'0')
		}
		out = append(out, v)
		return nil
	})
	return out, err
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
