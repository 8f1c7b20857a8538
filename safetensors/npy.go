package safetensors

import (
	"encoding/binary"
	"strconv"
	"strings"
)

const (
	npyMagic = "\x93NUMPY"
	// npyAlign is the alignment numpy gives the data that follows the header.
	npyAlign = 64
	// npyGrowthDigits is numpy's GROWTH_AXIS_MAX_DIGITS: it leaves room for
	// the first dim to grow in place, and matching it reproduces np.save's bytes.
	npyGrowthDigits = 21
)

// NpyHeader returns the .npy v1.0 header for t: magic, version 1.0, the
// little-endian header length, and the dict with 'descr', 'fortran_order':
// False and 'shape', padded with spaces and a newline so that the data starts
// at a multiple of 64. The bytes are those np.save writes for the same array.
// It returns false when numpy lacks the dtype (BF16, F8_*), a dim is
// negative, or the dict does not fit a v1.0 header.
func NpyHeader(t Tensor) ([]byte, bool) {
	descr, ok := t.DType.NumpyDescr()
	if !ok {
		return nil, false
	}
	var dict strings.Builder
	dict.WriteString("{'descr': '")
	dict.WriteString(descr)
	dict.WriteString("', 'fortran_order': False, 'shape': (")
	for i, d := range t.Shape {
		if d < 0 {
			return nil, false
		}
		if i > 0 {
			dict.WriteString(", ")
		}
		dict.WriteString(strconv.FormatInt(d, 10))
	}
	if len(t.Shape) == 1 {
		dict.WriteByte(',')
	}
	dict.WriteString("), }")
	if len(t.Shape) > 0 {
		dict.WriteString(strings.Repeat(" ", npyGrowthDigits-len(strconv.FormatInt(t.Shape[0], 10))))
	}

	const fixed = len(npyMagic) + 2 + 2 // magic, version, uint16 length
	hlen := dict.Len() + 1              // the dict and its newline
	pad := npyAlign - (fixed+hlen)%npyAlign
	if hlen+pad > 0xffff {
		return nil, false
	}
	out := make([]byte, 0, fixed+hlen+pad)
	out = append(out, npyMagic...)
	out = append(out, 1, 0)
	out = binary.LittleEndian.AppendUint16(out, uint16(hlen+pad))
	out = append(out, dict.String()...)
	out = append(out, strings.Repeat(" ", pad)...)
	return append(out, '\n'), true
}
