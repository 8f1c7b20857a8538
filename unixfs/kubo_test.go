package unixfs

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// formula generates the test files of the Kubo-compatibility vectors.
func formula(name string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		switch name {
		case "lin":
			b[i] = byte((i*31 + 7) % 256)
		case "sq":
			j := uint64(i)
			b[i] = byte((j*j + j/7) % 256)
		}
	}
	return b
}

// CIDs from Kubo 0.44: `ipfs add --cid-version=1 --raw-leaves`, and with
// the unixfs-v1-2025 profile.
func TestKuboCompatibleCIDs(t *testing.T) {
	tests := []struct {
		name, profile string
		data          []byte
		want          string
	}{
		{"hello", "kubo", []byte("hello world\n"), "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"},
		{"empty", "kubo", nil, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
		{"lin-1048583", "kubo", formula("lin", 1048583), "bafybeihiungcesuy6au7fidtl7qv5pioopar6wlkahdklwhpykjoosgse4"},
		{"sq-5242880", "kubo", formula("sq", 5242880), "bafybeiagscg3exsat5ifrbt64ee5bokcndtrqi7tuisxxjd2ze6olwjjfu"},
		{"lin-175-leaves", "kubo", formula("lin", 45613057), "bafybeicwdxbb76mvui4baybplblhw2574qsiivkhtm3vdukwto3g4hd7vm"},
		{"v1-2025-lin", "unixfs-v1-2025", formula("lin", 1048583), "bafybeihgqjgiizoswyyylkqjbyewzozlvgddplz6xuagvgjysin5a5mrg4"},
		{"v1-2025-sq", "unixfs-v1-2025", formula("sq", 5242880), "bafybeiaayejzjf2lfjgc22ddrmlggtmymsmy5u5adco6t2qazh4p4tgqce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			layout, err := LayoutFor(tt.profile)
			if err != nil {
				t.Fatal(err)
			}
			bs := newMemStore()
			im := &Importer{Put: bs, Layout: layout}
			n, err := im.ImportReader(ctx, bytes.NewReader(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if got := n.CID.String(); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			f, err := OpenFile(ctx, bs, mustCID(t, tt.want))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if _, err := f.WriteTo(ctx, &out, 2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tt.data) {
				t.Fatal("read back differs")
			}
		})
	}
}

func TestKuboDirectory(t *testing.T) {
	ctx := context.Background()
	layout, _ := LayoutFor("kubo")
	bs := newMemStore()
	im := &Importer{Put: bs, Layout: layout}
	a, err := im.ImportReader(ctx, bytes.NewReader([]byte("a\n")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.ImportReader(ctx, bytes.NewReader(formula("lin", 1048583)))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := layout.BuildDirectory(ctx, bs, []Entry{{"b.bin", b}})
	if err != nil {
		t.Fatal(err)
	}
	root, err := layout.BuildDirectory(ctx, bs, []Entry{{"sub", sub}, {"a.txt", a}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "bafybeidug53rfakvmng7fiqs6ltit3przkr3ziyfo2oxeifqv4brbhdhrm"; root.CID.String() != want {
		t.Fatalf("got %s, want %s", root.CID, want)
	}
	c, err := Resolve(ctx, bs, root.CID, "sub/b.bin")
	if err != nil || !c.Equals(b.CID) {
		t.Fatalf("resolve: %v %v", c, err)
	}
	f, err := OpenFile(ctx, bs, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(readerAt{ctx, f}, 0, int64(f.Size())))
	if err != nil || !bytes.Equal(got, formula("lin", 1048583)) {
		t.Fatalf("read: %v", err)
	}
}

type readerAt struct {
	ctx context.Context
	f   *File
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(r.ctx, p, off) }
