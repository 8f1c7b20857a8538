package unixfs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Hand-encoded dag-pb and UnixFS, so that the tests can build nodes no
// importer would.

type testLink struct {
	c    cid.Cid
	name string
}

func pbField(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field<<3|2))
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func pbNodeBytes(links []testLink, ufs []byte) []byte {
	var out []byte
	for _, l := range links {
		var lb []byte
		lb = pbField(lb, 1, l.c.Bytes())
		lb = pbField(lb, 2, []byte(l.name))
		out = pbField(out, 2, lb)
	}
	return pbField(out, 1, ufs)
}

// ufsFile is the UnixFS data of a file: filesize, then block sizes.
func ufsFile(filesize uint64, sizes ...uint64) []byte {
	b := binary.AppendUvarint([]byte{0x08, 0x02, 0x18}, filesize)
	for _, s := range sizes {
		b = binary.AppendUvarint(append(b, 0x20), s)
	}
	return b
}

func ufsDir() []byte { return []byte{0x08, 0x01} }

// ufsShard is a HAMT shard's data with the given fanout (murmur3).
func ufsShard(fanout uint64) []byte {
	b := []byte{0x08, 0x05, 0x28, 0x22, 0x30}
	return binary.AppendUvarint(b, fanout)
}

func blockCID(codec uint64, b []byte) cid.Cid {
	sum := sha256.Sum256(b)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	return cid.NewCidV1(codec, h)
}

type testBlock struct {
	c cid.Cid
	b []byte
}

func pb(links []testLink, ufs []byte) testBlock {
	b := pbNodeBytes(links, ufs)
	return testBlock{blockCID(cid.DagProtobuf, b), b}
}

func raw(s string) testBlock { return testBlock{blockCID(cid.Raw, []byte(s)), []byte(s)} }

func TestDAGChecker(t *testing.T) {
	leafA, leafB := raw("aaaa"), raw("bbbbbb")
	goodFile := pb([]testLink{{leafA.c, ""}, {leafB.c, ""}}, ufsFile(10, 4, 6))
	inner := pb([]testLink{{leafA.c, ""}}, ufsFile(4, 4))
	nested := pb([]testLink{{inner.c, ""}, {leafB.c, ""}}, ufsFile(10, 4, 6))
	goodDir := pb([]testLink{{goodFile.c, "f"}, {leafA.c, "a"}}, ufsDir())
	sub := pb([]testLink{{leafA.c, "05a"}}, ufsShard(256))
	goodShard := pb([]testLink{{sub.c, "00"}, {leafB.c, "01b"}}, ufsShard(256))
	dupSub := pb([]testLink{{leafA.c, "05b"}}, ufsShard(256))
	dupShard := pb([]testLink{{dupSub.c, "00"}, {leafB.c, "01b"}}, ufsShard(256))
	unknown := testBlock{blockCID(0x3f0000, []byte("x")), []byte("x")}

	tests := []struct {
		name   string
		root   testBlock
		blocks []testBlock
		want   error // nil: accepted
	}{
		{"file", goodFile, []testBlock{leafA, leafB}, nil},
		{"nested file", nested, []testBlock{inner, leafA, leafB}, nil},
		{"directory", goodDir, []testBlock{goodFile, leafA, leafB}, nil},
		{"HAMT", goodShard, []testBlock{sub, leafA, leafB}, nil},
		{"missing leaf", goodFile, []testBlock{leafA}, ErrIncomplete},
		{"missing deep leaf", goodDir, []testBlock{goodFile, leafA}, ErrIncomplete},
		{"2^62 bytes without data", pb(nil, ufsFile(1<<62)), nil, ErrInconsistent},
		{"file size past its blocks", pb([]testLink{{leafA.c, ""}}, ufsFile(5, 4)), []testBlock{leafA}, ErrInconsistent},
		{"more links than block sizes", pb([]testLink{{leafA.c, ""}, {leafB.c, ""}}, ufsFile(4, 4)), []testBlock{leafA, leafB}, ErrMalformed},
		{"block size not the leaf's", pb([]testLink{{leafA.c, ""}, {leafB.c, ""}}, ufsFile(10, 6, 4)), []testBlock{leafA, leafB}, ErrInconsistent},
		{"block size not the child file's", pb([]testLink{{inner.c, ""}}, ufsFile(5, 5)), []testBlock{inner, leafA}, ErrInconsistent},
		{"file links a directory", pb([]testLink{{goodDir.c, ""}}, ufsFile(0, 0)), []testBlock{goodDir, goodFile, leafA, leafB}, ErrInconsistent},
		{"duplicate names", pb([]testLink{{leafA.c, "x"}, {leafB.c, "x"}}, ufsDir()), []testBlock{leafA, leafB}, ErrInconsistent},
		{"duplicate names across HAMT shards", dupShard, []testBlock{dupSub, leafA, leafB}, ErrInconsistent},
		{"HAMT fanout 3", pb([]testLink{{leafA.c, "0a"}}, ufsShard(3)), []testBlock{leafA}, ErrMalformed},
		{"HAMT link name not hex", pb([]testLink{{leafA.c, "zza"}}, ufsShard(256)), []testBlock{leafA}, ErrMalformed},
		{"garbage UnixFS data", pb(nil, []byte{0xff, 0xff, 0xff}), nil, ErrMalformed},
		{"unknown UnixFS type", pb(nil, []byte{0x08, 0x09}), nil, ErrUnsupported},
		{"unknown codec", unknown, nil, ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewDAGChecker()
			var err error
			for _, b := range append([]testBlock{tt.root}, tt.blocks...) {
				if err = v.Add(b.c, b.b); err != nil {
					break
				}
			}
			if err == nil {
				err = v.Finish(context.Background(), []cid.Cid{tt.root.c}, nil)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// A shared leaf reached from two files is checked against each parent's
// block size.
func TestDAGCheckerSharedLeaf(t *testing.T) {
	leaf := raw("abc")
	ok := pb([]testLink{{leaf.c, ""}}, ufsFile(3, 3))
	bad := pb([]testLink{{leaf.c, ""}}, ufsFile(4, 4))
	dir := pb([]testLink{{ok.c, "ok"}, {bad.c, "bad"}}, ufsDir())
	v := NewDAGChecker()
	for _, b := range []testBlock{dir, ok, bad, leaf} {
		if err := v.Add(b.c, b.b); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Finish(context.Background(), []cid.Cid{dir.c}, nil); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("err = %v, want %v", err, ErrInconsistent)
	}
}
