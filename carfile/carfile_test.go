package carfile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func openStore(t *testing.T) *store.Badger {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addFile(t *testing.T, s *store.Badger, data []byte) cid.Cid {
	t.Helper()
	b := s.NewBatch()
	n, err := (&unixfs.Importer{Put: b, Layout: unixfs.DefaultLayout()}).ImportReader(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return n.CID
}

// writeCAR writes a CARv1 with the given roots and raw blocks, unchecked.
func writeCAR(t *testing.T, path string, roots []cid.Cid, blocks map[cid.Cid][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := carstorage.NewWritable(f, roots, carv2.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for c, b := range blocks {
		if err := w.Put(context.Background(), c.KeyString(), b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := openStore(t)
	data := bytes.Repeat([]byte("checkpoint "), 300000)
	root := addFile(t, src, data)
	for _, v := range []int{1, 2} {
		path := filepath.Join(t.TempDir(), "x.car")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		st, err := Export(ctx, src, []cid.Cid{root}, f, ExportOptions{Version: v})
		f.Close()
		if err != nil || st.Blocks < 2 {
			t.Fatalf("export v%d: %+v %v", v, st, err)
		}
		dst := openStore(t)
		b := dst.NewBatch()
		roots, _, err := Import(ctx, path, b, ImportOptions{Existing: dst})
		if err != nil || len(roots) != 1 || !roots[0].Equals(root) {
			t.Fatalf("import v%d: %v %v", v, roots, err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		file, err := unixfs.OpenFile(ctx, dst, root)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := file.WriteTo(ctx, &out, 2); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("read back v%d: %v", v, err)
		}
	}
}

func TestImportRefusesHostileCARs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	good := []byte("good block")
	goodCID, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(good)
	absent, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("absent"))
	h, err := mh.Encode(make([]byte, 32), 0x3a3a) // no hash function has this code
	if err != nil {
		t.Fatal(err)
	}
	unknownHash := cid.NewCidV1(cid.Raw, h)
	tests := []struct {
		name   string
		roots  []cid.Cid
		blocks map[cid.Cid][]byte
		want   string
	}{
		{"block does not match its CID", []cid.Cid{goodCID}, map[cid.Cid][]byte{goodCID: []byte("evil bytes")}, "integrity"},
		{"root absent", []cid.Cid{absent}, map[cid.Cid][]byte{goodCID: good}, "neither in the CAR nor in the repo"},
		{"no roots", nil, map[cid.Cid][]byte{goodCID: good}, "no roots"},
		{"unknown hash function", []cid.Cid{unknownHash}, map[cid.Cid][]byte{unknownHash: good}, "hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".car")
			writeCAR(t, path, tt.roots, tt.blocks)
			s := openStore(t)
			b := s.NewBatch()
			_, _, err := Import(ctx, path, b, ImportOptions{Existing: s})
			b.Cancel()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			st, _ := s.Stats(ctx)
			if st.Blocks != 0 {
				t.Fatalf("%d blocks stored from a refused CAR", st.Blocks)
			}
		})
	}
}

func TestExportNeedsEveryBlock(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	root := addFile(t, s, bytes.Repeat([]byte{1, 2, 3}, 1<<20))
	// Drop one leaf.
	var leaf cid.Cid
	_ = s.AllKeys(ctx, func(k store.KeyInfo) error {
		if k.CID.Prefix().Codec == cid.Raw {
			leaf = k.CID
		}
		return nil
	})
	if err := s.Delete(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := Export(ctx, s, []cid.Cid{root}, &out, ExportOptions{Version: 1}); err == nil {
		t.Fatal("export of an incomplete DAG succeeded")
	}
}
