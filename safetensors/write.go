package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// headerAlign is the multiple the reference writer pads the JSON header to, so
// that the byte buffer starts 8-byte aligned.
const headerAlign = 8

// WriteTensor is one tensor to write: its little-endian, row-major bytes.
type WriteTensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// entry is a tensor as the header JSON records it: offsets relative to the
// byte buffer.
type entry struct {
	name       string
	dtype      DType
	shape      []int64
	begin, end int64
}

// Write writes a valid safetensors file: tensors in the given order,
// contiguous, the header JSON compact as the reference writer emits it
// (__metadata__ first when non-empty, then dtype, shape, data_offsets per
// tensor) and padded with spaces to a multiple of 8 bytes.
func Write(w io.Writer, tensors []WriteTensor, metadata map[string]string) error {
	entries := make([]entry, len(tensors))
	var off int64
	for i, t := range tensors {
		size, err := checkTensor(t.Name, t.DType, t.Shape)
		if err != nil {
			return fmt.Errorf("safetensors: write: %w", err)
		}
		if int64(len(t.Data)) != size {
			return fmt.Errorf("safetensors: write: tensor %q: shape %v of %s needs %d bytes, data has %d", t.Name, t.Shape, t.DType, size, len(t.Data))
		}
		if off > math.MaxInt64-size {
			return fmt.Errorf("safetensors: write: tensor %q: total size overflows int64", t.Name)
		}
		entries[i] = entry{t.Name, t.DType, t.Shape, off, off + size}
		off += size
	}
	head, err := frameHeader(entries, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, t := range tensors {
		if len(t.Data) == 0 {
			continue
		}
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// SingleTensorHeader returns the 8-byte prefix plus JSON header of a
// one-tensor file whose data (t.End-t.Begin bytes) follows: used to present
// one tensor of a model as its own .safetensors file without copying its data.
func SingleTensorHeader(t Tensor) ([]byte, error) {
	size, err := checkTensor(t.Name, t.DType, t.Shape)
	if err != nil {
		return nil, fmt.Errorf("safetensors: single-tensor header: %w", err)
	}
	if t.End-t.Begin != size {
		return nil, fmt.Errorf("safetensors: single-tensor header: tensor %q: shape %v of %s is %d bytes but [%d, %d) spans %d", t.Name, t.Shape, t.DType, size, t.Begin, t.End, t.End-t.Begin)
	}
	head, err := frameHeader([]entry{{t.Name, t.DType, t.Shape, 0, size}}, nil)
	if err != nil {
		return nil, fmt.Errorf("safetensors: single-tensor header: %w", err)
	}
	return head, nil
}

// HeaderJSON returns the file's header JSON re-encoded indented (for
// header.json): __metadata__ first, then the tensors in file order with their
// data_offsets relative to the byte buffer, as in the file.
func HeaderJSON(h *Header) ([]byte, error) {
	entries := make([]entry, len(h.Tensors))
	start := h.DataStart()
	for i, t := range h.Tensors {
		entries[i] = entry{t.Name, t.DType, t.Shape, t.Begin - start, t.End - start}
	}
	var out bytes.Buffer
	if err := json.Indent(&out, encodeHeader(entries, h.Metadata), "", "  "); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// checkTensor validates what a header entry needs and returns the byte size.
func checkTensor(name string, d DType, shape []int64) (int64, error) {
	if !utf8.ValidString(name) {
		return 0, fmt.Errorf("tensor name %q is not valid UTF-8", name)
	}
	if name == metadataKey {
		return 0, fmt.Errorf("tensor name %q is reserved", name)
	}
	size, err := byteSize(d, shape)
	if err != nil {
		return 0, fmt.Errorf("tensor %q: %w", name, err)
	}
	return size, nil
}

// frameHeader returns the 8-byte length prefix and the header JSON padded
// with spaces to a multiple of 8, after checking names and metadata.
func frameHeader(entries []entry, metadata map[string]string) ([]byte, error) {
	seen := make(map[string]struct{}, len(entries))
	for _, e := range entries {
		if _, dup := seen[e.name]; dup {
			return nil, fmt.Errorf("duplicate tensor name %q", e.name)
		}
		seen[e.name] = struct{}{}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
		}
	}
	js := encodeHeader(entries, metadata)
	n := (len(js) + headerAlign - 1) / headerAlign * headerAlign
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds the maximum %d", n, MaxHeaderSize)
	}
	out := make([]byte, prefixLen, prefixLen+n)
	binary.LittleEndian.PutUint64(out, uint64(n))
	out = append(out, js...)
	for len(out) < prefixLen+n {
		out = append(out, ' ')
	}
	return out, nil
}

// encodeHeader returns the compact header JSON in the reference writer's
// layout. Metadata keys are sorted so the output is deterministic.
func encodeHeader(entries []entry, metadata map[string]string) []byte {
	var b []byte
	b = append(b, '{')
	if len(metadata) > 0 {
		b = appendString(b, metadataKey)
		b = append(b, ':', '{')
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, metadata[k])
		}
		b = append(b, '}')
	}
	for i, e := range entries {
		if i > 0 || len(metadata) > 0 {
			b = append(b, ',')
		}
		b = appendString(b, e.name)
		b = append(b, `:{"dtype":`...)
		b = appendString(b, string(e.dtype))
		b = append(b, `,"shape":[`...)
		for j, d := range e.shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendInt(b, e.begin, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, e.end, 10)
		b = append(b, ']', '}')
	}
	return append(b, '}')
}

// appendString appends s as a JSON string escaped the way serde_json does
// (only '"', '\\' and control characters), so synthesized headers match the
// reference writer's bytes. s must be valid UTF-8.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c >= 0x20:
			b = append(b, c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	return append(b, '"')
}
