package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// Storage compression of block payloads (the low nibble of the frame
// byte). CIDs are always of the uncompressed bytes: compression is invisible
// above this package. Byte grouping puts byte k of every element in plane k
// and Huffman-codes each plane (the idea of ZipNN and Xet's BG4): the
// exponent bytes of float weights take few values and compress well once
// separated from the near-random mantissa bytes. Other data gets zstd.
const (
	compZstd = 1 // plain zstd
	compBG2  = 2 // byte-grouped 2-byte elements: 2+phase
	compBG4  = 4 // byte-grouped 4-byte elements: 4+phase
	compBG8  = 9 // byte-grouped 8-byte elements (F64, I64), phase 0 only (8 is compDelta)
)

// minSaving: a compressed payload is kept only if it saves this fraction;
// otherwise the block stays raw and is read without a copy.
const minSaving = 0.03

// codec compresses and decompresses block payloads; one per store, safe for
// concurrent use.
type codec struct {
	once sync.Once
	enc  *zstd.Encoder
	dec  *zstd.Decoder
	bufs sync.Pool // *[]byte of decoded blocks
}

func (c *codec) init() {
	c.once.Do(func() {
		n := runtime.GOMAXPROCS(0)
		c.enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(n), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
		c.dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(n), zstd.WithDecoderMaxMemory(64<<20))
	})
}

// compTag names the compression for elements of elem bytes, data starting
// phase bytes into an element.
func compTag(elem, phase int) byte {
	switch elem {
	case 2:
		return byte(compBG2 + phase%2)
	case 4:
		return byte(compBG4 + phase%4)
	case 8:
		if phase%8 == 0 {
			return compBG8
		}
		return compZstd
	default:
		return compZstd
	}
}

func tagLayout(tag byte) (elem, phase int) {
	switch {
	case tag == compBG8:
		return 8, 0
	case tag >= compBG4 && tag < compBG4+4:
		return 4, int(tag - compBG4)
	case tag >= compBG2 && tag < compBG2+2:
		return 2, int(tag - compBG2)
	default:
		return 1, 0
	}
}

// group writes data's bytes plane by plane into dst: byte i goes to plane
// (i+phase) mod elem.
func group(dst, data []byte, elem, phase int) []byte {
	if phase%elem == 0 && (elem == 2 || elem == 4 && len(data)%4 == 0) {
		if cap(dst) < len(data) {
			dst = make([]byte, len(data))
		}
		dst = dst[:len(data)]
		if elem == 2 {
			group2(dst, data)
		} else {
			group4(dst, data)
		}
		return dst
	}
	dst = dst[:0]
	for k := range elem {
		for i := (k - phase%elem + elem) % elem; i < len(data); i += elem {
			dst = append(dst, data[i])
		}
	}
	return dst
}

// group2 is group of 2-byte elements at phase 0 (bf16, f16: most weights),
// eight bytes at a time.
func group2(dst, data []byte) {
	half := (len(data) + 1) / 2
	even, odd := dst[:half], dst[half:len(data)]
	i := 0
	for ; i+8 <= len(data); i += 8 {
		v := binary.LittleEndian.Uint64(data[i:])
		e, o := v&0x00ff00ff00ff00ff, v>>8&0x00ff00ff00ff00ff
		e = (e | e>>8) & 0x0000ffff0000ffff
		o = (o | o>>8) & 0x0000ffff0000ffff
		binary.LittleEndian.PutUint32(even[i/2:], uint32(e|e>>16))
		binary.LittleEndian.PutUint32(odd[i/2:], uint32(o|o>>16))
	}
	for ; i < len(data); i++ {
		if i%2 == 0 {
			even[i/2] = data[i]
		} else {
			odd[i/2] = data[i]
		}
	}
}

// group4 is group of whole 4-byte elements at phase 0 (f32).
func group4(dst, data []byte) {
	n := len(data) / 4
	p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
	for i := range n {
		e := data[4*i : 4*i+4 : 4*i+4]
		p0[i], p1[i], p2[i], p3[i] = e[0], e[1], e[2], e[3]
	}
}

// ungroup reverses group. Two-byte elements (bf16, f16: most weights)
// take a loop without modulo arithmetic.
func ungroup(dst, grouped []byte, elem, phase int) {
	if elem == 2 {
		// Byte i is in plane (i+phase)%2, and plane 0 comes first: with
		// phase 0 the even bytes, with phase 1 the odd ones.
		odd := len(dst) / 2
		if phase%2 == 0 {
			interleave(dst, grouped[:len(dst)-odd], grouped[len(dst)-odd:])
		} else {
			interleave(dst, grouped[odd:], grouped[:odd])
		}
		return
	}
	pos := 0
	for k := range elem {
		for i := (k - phase%elem + elem) % elem; i < len(dst); i += elem {
			dst[i] = grouped[pos]
			pos++
		}
	}
}

// interleave writes even[0], odd[0], even[1], odd[1], ... into dst.
func interleave(dst, even, odd []byte) {
	n := len(odd)
	even = even[:len(dst)-n]
	i := 0
	for ; i+8 <= n; i += 8 {
		d := dst[2*i : 2*i+16 : 2*i+16]
		e := even[i : i+8 : i+8]
		o := odd[i : i+8 : i+8]
		d[0], d[1], d[2], d[3] = e[0], o[0], e[1], o[1]
		d[4], d[5], d[6], d[7] = e[2], o[2], e[3], o[3]
		d[8], d[9], d[10], d[11] = e[4], o[4], e[5], o[5]
		d[12], d[13], d[14], d[15] = e[6], o[6], e[7], o[7]
	}
	for ; i < n; i++ {
		dst[2*i], dst[2*i+1] = even[i], odd[i]
	}
	if len(even) > n {
		dst[2*n] = even[n]
	}
}

// Encode compresses data, byte-grouped when elem is 2 or 4 (phase is how
// many bytes into an element data starts): each byte plane is Huffman-coded
// on its own (huff0, in pieces of 128 KiB), or kept raw when that does not
// pay, as the mantissa planes of weights rarely do. Other data gets zstd.
// It reports false when compression does not save enough.
func (c *codec) Encode(data []byte, elem, phase int) (payload []byte, tag byte, ok bool) {
	if len(data) < 512 {
		return nil, 0, false
	}
	c.init()
	tag = compTag(elem, phase)
	// Work in pooled buffers (fresh megabytes cost page faults and
	// zeroing); the payload is copied out at its final size.
	a, p := c.buf(), c.buf()
	defer c.bufs.Put(a)
	defer c.bufs.Put(p)
	if elem, phase := tagLayout(tag); elem > 1 {
		*a = group((*a)[:0], data, elem, phase)
		*p = encodePlanes((*p)[:0], *a)
	} else {
		*p = c.enc.EncodeAll(data, (*p)[:0])
	}
	if float64(len(*p)) > float64(len(data))*(1-minSaving) {
		return nil, 0, false
	}
	return append([]byte(nil), *p...), tag, true
}

// huffPiece is the size of the pieces planes are Huffman-coded in
// (huff0 blocks are below 256 KiB).
const huffPiece = 128 << 10

// encodePlanes appends each piece of each plane as [mode][raw len u32]
// [coded len u32][bytes]; mode 0 raw, 1 huff0 4X, 2 one byte repeated,
// 3 FSE (tANS, which codes a very frequent byte in under a bit).
func encodePlanes(dst, grouped []byte) []byte {
	s := huff0.Scratch{Reuse: huff0.ReusePolicyNone} // every piece carries its table
	var fs fse.Scratch
	for off := 0; off < len(grouped); off += huffPiece {
		piece := grouped[off:min(off+huffPiece, len(grouped))]
		mode, body := byte(0), piece
		// One byte value in four fifths of the piece or more (the mostly
		// zero planes of a delta): near Huffman's floor of one bit a
		// byte, where FSE goes below it. Otherwise Huffman, which
		// decodes faster.
		if top := topCount(piece); top == len(piece) {
			mode, body = 2, piece[:1] // one byte value throughout
		} else if 5*top >= 4*len(piece) {
			if f, err := fse.Compress(piece, &fs); err == nil && len(f) < len(piece) {
				mode, body = 3, f
			}
		}
		if mode == 0 {
			if out, _, err := huff0.Compress4X(piece, &s); err == nil && len(out) < len(piece) {
				mode, body = 1, out
			}
		}
		dst = append(dst, mode)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(piece)))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
		dst = append(dst, body...)
	}
	return dst
}

// topCount returns how often the most frequent byte value occurs in b.
func topCount(b []byte) int {
	var h [4][256]uint32 // four tables: fewer stalls on repeated values
	i := 0
	for ; i+4 <= len(b); i += 4 {
		h[0][b[i]]++
		h[1][b[i+1]]++
		h[2][b[i+2]]++
		h[3][b[i+3]]++
	}
	for ; i < len(b); i++ {
		h[0][b[i]]++
	}
	top := uint32(0)
	for v := range 256 {
		top = max(top, h[0][v]+h[1][v]+h[2][v]+h[3][v])
	}
	return int(top)
}

// decodePlanes reverses encodePlanes into dst.
func decodePlanes(dst, payload []byte) ([]byte, error) {
	var s huff0.Scratch
	for len(payload) > 0 {
		if len(payload) < 9 {
			return nil, errors.New("store: truncated plane")
		}
		mode := payload[0]
		rawLen := int(binary.LittleEndian.Uint32(payload[1:]))
		n := int(binary.LittleEndian.Uint32(payload[5:]))
		payload = payload[9:]
		if n > len(payload) || rawLen > huffPiece {
			return nil, errors.New("store: bad plane length")
		}
		body := payload[:n]
		payload = payload[n:]
		switch mode {
		case 0:
			dst = append(dst, body...)
		case 1:
			if cap(dst)-len(dst) < rawLen {
				dst = append(make([]byte, 0, 2*cap(dst)+rawLen), dst...)
			}
			sc, rest, err := huff0.ReadTable(body, &s)
			if err != nil {
				return nil, err
			}
			out, err := sc.Decoder().Decompress4X(dst[len(dst):len(dst)+rawLen:len(dst)+rawLen], rest)
			if err != nil || len(out) != rawLen {
				return nil, fmt.Errorf("store: plane: %v", err)
			}
			dst = dst[:len(dst)+rawLen]
		case 3:
			if cap(dst)-len(dst) < rawLen {
				dst = append(make([]byte, 0, 2*cap(dst)+rawLen), dst...)
			}
			// Decoded in place, into dst's spare room.
			fs := fse.Scratch{DecompressLimit: rawLen, Out: dst[len(dst) : len(dst) : len(dst)+rawLen]}
			out, err := fse.Decompress(body, &fs)
			if err != nil || len(out) != rawLen {
				return nil, fmt.Errorf("store: plane: %d bytes of %d: %v", len(out), rawLen, err)
			}
			if &out[0] != &dst[len(dst):cap(dst)][0] {
				copy(dst[len(dst):len(dst)+rawLen], out)
			}
			dst = dst[:len(dst)+rawLen]
		case 2:
			if n != 1 {
				return nil, errors.New("store: bad repeated plane")
			}
			for range rawLen {
				dst = append(dst, body[0])
			}
		default:
			return nil, fmt.Errorf("store: unknown plane mode %d", mode)
		}
	}
	return dst, nil
}

// decode restores a compressed payload into pooled buffers; release
// returns them.
func (c *codec) decode(payload []byte, tag byte) (data []byte, release func(), err error) {
	c.init()
	a := c.buf()
	elem, phase := tagLayout(tag)
	var plain []byte
	if elem == 1 {
		plain, err = c.dec.DecodeAll(payload, (*a)[:0])
	} else {
		plain, err = decodePlanes((*a)[:0], payload)
	}
	if plain != nil {
		*a = plain[:0]
	}
	if err != nil {
		c.bufs.Put(a)
		return nil, nil, fmt.Errorf("store: decompress: %w", err)
	}
	if elem == 1 {
		return plain, func() { c.bufs.Put(a) }, nil
	}
	b := c.buf()
	out := append((*b)[:0], make([]byte, len(plain))...)
	*b = out[:0]
	ungroup(out, plain, elem, phase)
	c.bufs.Put(a)
	return out, func() { c.bufs.Put(b) }, nil
}

func (c *codec) buf() *[]byte {
	if bp, ok := c.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 1<<20)
	return &b
}
