package torchzip

import (
	"archive/zip"
	"bytes"
	"fmt"
	"testing"
)

// archive builds a zip laid out like torch.save's: the pickle first, then
// the storages.
func archive(t *testing.T, pickle string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, e := range []struct{ name, data string }{{"opt/data.pkl", pickle}, {"opt/data/0", "0123456789abcdef"}, {"opt/version", "3\n"}} {
		f, err := w.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func peekOf(b []byte) func(int) ([]byte, error) {
	return func(n int) ([]byte, error) {
		if n > len(b) {
			return nil, fmt.Errorf("short")
		}
		return b[:n], nil
	}
}

func TestFindSegments(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		elem int // 0: not recognised
	}{
		{"fp32 optimizer state", archive(t, "ctorch\nFloatStorage\nq\x01 ctorch\nFloatStorage\n"), 4},
		{"bf16 weights", archive(t, "ctorch\nBFloat16Storage\n ctorch\nBFloat16Storage\n ctorch\nFloatStorage\n"), 2},
		{"fp16", archive(t, "ctorch\nHalfStorage\n"), 2},
		{"fp64", archive(t, "ctorch\nDoubleStorage\n"), 8},
		{"integer storages only", archive(t, "ctorch\nLongStorage\n"), 0},
		{"another zip", func() []byte {
			var buf bytes.Buffer
			w := zip.NewWriter(&buf)
			f, _ := w.Create("readme.txt")
			f.Write([]byte("FloatStorage"))
			w.Close()
			return buf.Bytes()
		}(), 0},
		{"not a zip", []byte("hello FloatStorage world, long enough to be looked at ......"), 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs := FindSegments(peekOf(tt.data))
			switch {
			case tt.elem == 0 && segs != nil:
				t.Fatalf("recognised: %+v", segs)
			case tt.elem != 0 && (len(segs) != 1 || segs[0].Elem != tt.elem || segs[0].End < uint64(len(tt.data))):
				t.Fatalf("segments %+v, want one of elements of %d bytes over the file", segs, tt.elem)
			}
		})
	}
}
