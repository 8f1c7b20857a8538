package safetensors

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth is serde_json's recursion limit: the reference reader rejects
// headers nested deeper, and the limit keeps hostile headers off the stack.
const maxJSONDepth = 128

// jsonScanner reads the header JSON in one pass without reflection: headers
// can hold hundreds of thousands of entries, and encoding/json would also
// accept what serde_json rejects (lone surrogate escapes, deep nesting). The
// input must already be valid UTF-8.
type jsonScanner struct {
	data  []byte
	pos   int
	depth int
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", s.pos, fmt.Sprintf(format, args...))
}

// found describes what is at the current position, for error messages.
func (s *jsonScanner) found() string {
	if s.pos >= len(s.data) {
		return "end of input"
	}
	r, _ := utf8.DecodeRune(s.data[s.pos:])
	return fmt.Sprintf("%q", r)
}

func (s *jsonScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// atEnd reports whether only whitespace remains.
func (s *jsonScanner) atEnd() bool {
	s.skipSpace()
	return s.pos == len(s.data)
}

// kind names the JSON type of the value at the current position.
func (s *jsonScanner) kind() string {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return "nothing"
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '-' || ('0' <= c && c <= '9'):
		return "a number"
	}
	return "an invalid value"
}

// typeError returns err, a value of the wrong JSON type, unless there is no
// valid value here at all: then the syntax error is the better message.
func (s *jsonScanner) typeError(err error) error {
	if k := s.kind(); k == "nothing" || k == "an invalid value" {
		return s.errorf("expected a value, found %s", s.found())
	}
	return err
}

func (s *jsonScanner) consume(c byte) error {
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != c {
		return s.errorf("expected %q, found %s", c, s.found())
	}
	s.pos++
	return nil
}

func (s *jsonScanner) enter() error {
	s.depth++
	if s.depth > maxJSONDepth {
		return s.errorf("nested deeper than %d levels", maxJSONDepth)
	}
	return nil
}

// object reads an object, calling member for each key with the scanner at
// the value, which member must consume. key is only valid during the call.
func (s *jsonScanner) object(member func(key []byte) error) error {
	if err := s.consume('{'); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		s.skipSpace()
		key, err := s.strBytes()
		if err != nil {
			return err
		}
		if err := s.consume(':'); err != nil {
			return err
		}
		s.skipSpace()
		if err := member(key); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.errorf("expected ',' or '}', found end of input")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("expected ',' or '}', found %s", s.found())
		}
	}
}

// array reads an array, calling elem for each element with the scanner at
// the element, which elem must consume.
func (s *jsonScanner) array(elem func(i int) error) error {
	if err := s.consume('['); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for i := 0; ; i++ {
		s.skipSpace()
		if err := elem(i); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.errorf("expected ',' or ']', found end of input")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("expected ',' or ']', found %s", s.found())
		}
	}
}

// str reads a string and returns it unescaped. Like serde_json it rejects
// control characters and unpaired surrogate escapes.
func (s *jsonScanner) str() (string, error) {
	b, err := s.strBytes()
	return string(b), err
}

// strBytes is str without the copy when the string has no escapes: the
// result may alias the input and must not be modified.
func (s *jsonScanner) strBytes() ([]byte, error) {
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return nil, s.errorf("expected a string, found %s", s.found())
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; {
		case c == '"':
			s.pos++
			return s.data[start : s.pos-1], nil
		case c == '\\':
			return s.escapedStr(start)
		case c < 0x20:
			return nil, s.errorf("control character %q in string", c)
		}
		s.pos++
	}
	return nil, s.errorf("unterminated string")
}

// escapedStr finishes a string from its first backslash; start is where the
// string's contents began.
func (s *jsonScanner) escapedStr(start int) ([]byte, error) {
	buf := append([]byte(nil), s.data[start:s.pos]...)
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return buf, nil
		case c < 0x20:
			return nil, s.errorf("control character %q in string", c)
		case c != '\\':
			buf = append(buf, c)
			s.pos++
			continue
		}
		s.pos++ // the backslash
		if s.pos >= len(s.data) {
			break
		}
		e := s.data[s.pos]
		s.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || s.pos+1 >= len(s.data) || s.data[s.pos] != '\\' || s.data[s.pos+1] != 'u' {
					return nil, s.errorf("unpaired surrogate \\u%04x in string", r)
				}
				s.pos += 2
				low, err := s.hex4()
				if err != nil {
					return nil, err
				}
				if low < 0xdc00 || low > 0xdfff {
					return nil, s.errorf("unpaired surrogate \\u%04x in string", r)
				}
				r = utf16.DecodeRune(r, low)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			s.pos--
			return nil, s.errorf("invalid escape \\%s in string", s.found())
		}
	}
	return nil, s.errorf("unterminated string")
}

func (s *jsonScanner) hex4() (rune, error) {
	if s.pos+4 > len(s.data) {
		return 0, s.errorf("truncated \\u escape")
	}
	var r rune
	for _, c := range s.data[s.pos : s.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, s.errorf("invalid \\u escape")
		}
	}
	s.pos += 4
	return r, nil
}

// number reads a number and returns its literal text, aliasing the input.
func (s *jsonScanner) number() ([]byte, error) {
	s.skipSpace()
	start := s.pos
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && '0' <= s.data[s.pos] && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.pos < len(s.data) && s.data[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '0':
		s.pos++
	case digits() == 0:
		return nil, s.errorf("expected a number, found %s", s.found())
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if digits() == 0 {
			return nil, s.errorf("expected a digit after '.', found %s", s.found())
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return nil, s.errorf("expected a digit in the exponent, found %s", s.found())
		}
	}
	return s.data[start:s.pos], nil
}

func (s *jsonScanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.errorf("expected %s, found %s", word, s.found())
	}
	s.pos += len(word)
	return nil
}

// skip reads and discards any value.
func (s *jsonScanner) skip() error {
	switch s.kind() {
	case "an object":
		return s.object(func([]byte) error { return s.skip() })
	case "an array":
		return s.array(func(int) error { return s.skip() })
	case "a string":
		_, err := s.str()
		return err
	case "a number":
		_, err := s.number()
		return err
	case "null":
		return s.literal("null")
	case "a boolean":
		if s.data[s.pos] == 't' {
			return s.literal("true")
		}
		return s.literal("false")
	}
	return s.errorf("expected a value, found %s", s.found())
}
