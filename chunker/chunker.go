// Package chunker cuts byte streams into chunks: FastCDC 2020 with
// normalized chunking for deduplication, and fixed-size splitting for
// Kubo-compatible CIDs.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"

	"github.com/buildbuddy-io/fastcdc2020/fastcdc"
)

// Kind names a chunking algorithm.
type Kind int

// The chunking algorithms.
const (
	FastCDC Kind = iota
	Fixed
)

// Default FastCDC parameters: min 64 KiB, average 256 KiB, max 1 MiB.
const (
	DefaultMin = 64 << 10
	DefaultAvg = 256 << 10
	DefaultMax = 1 << 20
	// MaxChunk is the largest chunk any spec may produce: the largest block
	// IPFS peers exchange safely is 2 MiB, and the unixfs-v1-2025 profile
	// caps chunks at 1 MiB.
	MaxChunk = 1 << 20
)

// Spec describes how to cut a stream. Its string form is what `add
// --chunker` accepts: "fastcdc", "fastcdc-MIN-AVG-MAX" or "size-N".
type Spec struct {
	Kind          Kind
	Min, Avg, Max int // FastCDC bounds; Fixed uses Max as the chunk size
}

// DefaultSpec is FastCDC with the default bounds.
func DefaultSpec() Spec {
	return Spec{Kind: FastCDC, Min: DefaultMin, Avg: DefaultAvg, Max: DefaultMax}
}

// FixedSpec cuts n-byte chunks.
func FixedSpec(n int) Spec { return Spec{Kind: Fixed, Max: n} }

// ParseSpec parses "fastcdc", "fastcdc-MIN-AVG-MAX" or "size-N".
func ParseSpec(s string) (Spec, error) {
	switch {
	case s == "fastcdc" || s == "" || s == "default":
		return DefaultSpec(), nil
	case strings.HasPrefix(s, "fastcdc-"):
		parts := strings.Split(strings.TrimPrefix(s, "fastcdc-"), "-")
		if len(parts) != 3 {
			return Spec{}, fmt.Errorf("chunker %q: want fastcdc-MIN-AVG-MAX", s)
		}
		var n [3]int
		for i, p := range parts {
			v, err := strconv.Atoi(p)
			if err != nil {
				return Spec{}, fmt.Errorf("chunker %q: %q is not a number", s, p)
			}
			n[i] = v
		}
		sp := Spec{Kind: FastCDC, Min: n[0], Avg: n[1], Max: n[2]}
		return sp, sp.Validate()
	case strings.HasPrefix(s, "size-"):
		v, err := strconv.Atoi(strings.TrimPrefix(s, "size-"))
		if err != nil {
			return Spec{}, fmt.Errorf("chunker %q: want size-N", s)
		}
		sp := FixedSpec(v)
		return sp, sp.Validate()
	default:
		return Spec{}, fmt.Errorf("unknown chunker %q (want fastcdc, fastcdc-MIN-AVG-MAX or size-N)", s)
	}
}

// Validate checks the bounds.
func (s Spec) Validate() error {
	switch s.Kind {
	case Fixed:
		if s.Max < 1 || s.Max > MaxChunk {
			return fmt.Errorf("chunker size-%d: size must be 1..%d", s.Max, MaxChunk)
		}
	case FastCDC:
		switch {
		case s.Avg < 256 || bits.OnesCount(uint(s.Avg)) != 1:
			return fmt.Errorf("chunker %s: average must be a power of two ≥ 256", s)
		case s.Min < 64 || s.Min > s.Avg:
			return fmt.Errorf("chunker %s: need 64 ≤ min ≤ avg", s)
		case s.Max <= s.Avg || s.Max > MaxChunk:
			return fmt.Errorf("chunker %s: need avg < max ≤ %d", s, MaxChunk)
		}
	default:
		return errors.New("unknown chunker kind")
	}
	return nil
}

func (s Spec) String() string {
	if s.Kind == Fixed {
		return "size-" + strconv.Itoa(s.Max)
	}
	return fmt.Sprintf("fastcdc-%d-%d-%d", s.Min, s.Avg, s.Max)
}

// OneChunk reports whether a stream of n bytes is always cut into at most
// one chunk, so that it can be stored without running the splitter.
func (s Spec) OneChunk(n uint64) bool {
	if s.Kind == Fixed {
		return n <= uint64(s.Max)
	}
	return n <= uint64(s.Min) // FastCDC never cuts before Min
}

// Splitter yields consecutive chunks of a stream. The returned slice is
// valid until the next call; io.EOF ends the stream (an empty stream yields
// no chunk).
type Splitter interface {
	Next() ([]byte, error)
}

// New returns a Splitter reading r.
func (s Spec) New(r io.Reader) (Splitter, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.Kind == Fixed {
		return &fixed{r: r, buf: make([]byte, s.Max)}, nil
	}
	c, err := fastcdc.NewChunker(r, s.Avg,
		fastcdc.WithMinSize(s.Min), fastcdc.WithMaxSize(s.Max),
		fastcdc.WithNormalization(2), fastcdc.WithBufferSize(4*s.Max))
	if err != nil {
		return nil, fmt.Errorf("chunker %s: %w", s, err)
	}
	return cdc{c}, nil
}

type cdc struct{ c *fastcdc.Chunker }

func (c cdc) Next() ([]byte, error) {
	ch, err := c.c.Next()
	if err != nil {
		return nil, err
	}
	return ch.Data, nil
}

type fixed struct {
	r   io.Reader
	buf []byte
	eof bool
}

func (f *fixed) Next() ([]byte, error) {
	if f.eof {
		return nil, io.EOF
	}
	n, err := io.ReadFull(f.r, f.buf)
	switch {
	case err == io.EOF:
		f.eof = true
		return nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		f.eof = true
		return f.buf[:n], nil
	case err != nil:
		return nil, err
	}
	return f.buf[:n], nil
}

// NewWithCuts returns a Splitter that always cuts at the given absolute
// offsets (ascending) and runs the spec's splitter inside each segment
// between them: content-defined chunks inside each tensor of a model, say,
// so that identical tensors dedup even when everything around them moves.
func (s Spec) NewWithCuts(r io.Reader, cuts []uint64) (Splitter, error) {
	return s.NewWithFixed(r, cuts, nil)
}

// NewWithFixed is NewWithCuts where the segment ending at cuts[i] is cut
// into fixed[i]-byte chunks from its start (the last one shorter) instead
// of by the spec, when fixed[i] > 0: chunk k of a tensor then covers the
// same elements as chunk k of the same tensor in another file, which is
// what a delta against it needs. fixed may be shorter than cuts; the
// segment after the last cut always uses the spec.
func (s Spec) NewWithFixed(r io.Reader, cuts []uint64, fixed []int) (Splitter, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	for _, n := range fixed {
		if n < 0 || n > MaxChunk {
			return nil, fmt.Errorf("chunker: fixed chunks of %d bytes: must be 1..%d", n, MaxChunk)
		}
	}
	return &cutSplitter{spec: s, r: r, cuts: cuts, fixed: fixed}, nil
}

type cutSplitter struct {
	spec  Spec
	r     io.Reader
	cuts  []uint64
	fixed []int  // per cut: fixed chunk size of the segment it ends, or 0
	pos   uint64 // bytes returned so far
	inner Splitter
	got   bool // the current segment returned bytes
	cdc   *fastcdc.Chunker
	buf   []byte // fixed-size chunks
}

func (c *cutSplitter) Next() ([]byte, error) {
	for {
		if c.inner == nil {
			for len(c.cuts) > 0 && c.cuts[0] <= c.pos {
				c.cuts = c.cuts[1:]
				if len(c.fixed) > 0 {
					c.fixed = c.fixed[1:]
				}
			}
			var seg io.Reader = c.r
			fixedSize := 0
			if len(c.cuts) > 0 {
				seg = io.LimitReader(c.r, int64(c.cuts[0]-c.pos))
				if len(c.fixed) > 0 {
					fixedSize = c.fixed[0]
				}
			}
			c.inner, c.got = c.segment(seg, fixedSize), false
		}
		b, err := c.inner.Next()
		if errors.Is(err, io.EOF) {
			last := len(c.cuts) == 0 || !c.got
			c.inner = nil
			if last {
				return nil, io.EOF // the input ended
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		c.pos += uint64(len(b))
		c.got = true
		return b, nil
	}
}

// segment returns the spec's splitter over r, reusing its buffers.
func (c *cutSplitter) segment(r io.Reader, fixedSize int) Splitter {
	if fixedSize == 0 && c.spec.Kind == Fixed {
		fixedSize = c.spec.Max
	}
	if fixedSize > 0 {
		if cap(c.buf) < fixedSize {
			c.buf = make([]byte, fixedSize)
		}
		return &fixed{r: r, buf: c.buf[:fixedSize]}
	}
	if c.cdc == nil {
		sp, _ := c.spec.New(r) // the spec was validated
		c.cdc = sp.(cdc).c
		return sp
	}
	c.cdc.Reset(r)
	return cdc{c.cdc}
}
