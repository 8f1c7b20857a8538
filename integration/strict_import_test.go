package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
)

// TestStrictImport feeds import CARs whose DAGs are incomplete or not
// consistent UnixFS: each is refused with one line naming the problem,
// stores nothing, and leaves verify clean; --allow-partial stores one
// anyway and says so.
func TestStrictImport(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	leaf := []byte("leaf\n")
	leafCID := cidOfBlock(cid.Raw, leaf)
	other := []byte("other\n")
	otherCID := cidOfBlock(cid.Raw, other)
	node := func(links []pbLink, data []byte) carBlock {
		b := encodePB(links, data)
		return carBlock{cidOfBlock(cid.DagProtobuf, b), b}
	}
	leafB, otherB := carBlock{leafCID, leaf}, carBlock{otherCID, other}
	file := node([]pbLink{{leafCID, "", 5}, {otherCID, "", 6}}, unixfsFile(5, 6))
	absent := []byte("absent!\n")
	absentCID := cidOfBlock(cid.Raw, absent)
	partial := node([]pbLink{{leafCID, "", 5}, {absentCID, "", 8}}, unixfsFile(5, 8))
	huge := node(nil, pbVarint([]byte{0x08, 0x02, 0x18}, 1<<62))
	dups := node([]pbLink{{leafCID, "x", 5}, {otherCID, "x", 6}}, unixfsDir())
	wrongSizes := node([]pbLink{{leafCID, "", 6}, {otherCID, "", 5}}, unixfsFile(6, 5))
	fanout3 := node([]pbLink{{leafCID, "0leaf", 5}}, pbVarint([]byte{0x08, 0x05, 0x28, 0x22, 0x30}, 3))
	garbage := node(nil, []byte{0xff, 0xff, 0xff, 0xff})
	h := cidOfBlock(cid.Raw, leaf).Hash()
	unknownCodec := carBlock{cid.NewCidV1(0x3f0000, h), leaf}
	dirOfUnknown := node([]pbLink{{unknownCodec.cid, "u", 5}}, unixfsDir())

	tests := []struct {
		name   string
		roots  []cid.Cid
		blocks []carBlock
		want   string
	}{
		{"missing leaf", []cid.Cid{partial.cid}, []carBlock{partial, leafB}, "incomplete DAG: block " + absentCID.String() + " (link 1 of " + partial.cid.String() + ") is missing"},
		{"2^62 bytes without data", []cid.Cid{huge.cid}, []carBlock{huge}, "file claims 4611686018427387904 bytes but its data and blocks hold 0"},
		{"duplicate names", []cid.Cid{dups.cid}, []carBlock{dups, leafB, otherB}, `directory names "x" twice`},
		{"block sizes not matching the leaves", []cid.Cid{wrongSizes.cid}, []carBlock{wrongSizes, leafB, otherB}, "block size 6 in its parent"},
		{"HAMT fanout 3", []cid.Cid{fanout3.cid}, []carBlock{fanout3, leafB}, "HAMT fanout 3"},
		{"garbage UnixFS data", []cid.Cid{garbage.cid}, []carBlock{garbage}, "malformed UnixFS node"},
		{"unknown codec", []cid.Cid{unknownCodec.cid}, []carBlock{unknownCodec}, "unsupported codec"},
		{"unknown codec below a directory", []cid.Cid{dirOfUnknown.cid}, []carBlock{dirOfUnknown, unknownCodec}, "unsupported codec"},
	}
	// A repo holding something already, which no refusal may disturb.
	base := filepath.Join(dir, "base.car")
	writeCAR(t, base, []cid.Cid{file.cid}, []carBlock{file, leafB, otherB})
	must(t, repo, "import", base)
	before := repoStat(t, repo)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			car := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".car")
			writeCAR(t, car, tt.roots, tt.blocks)
			r := ipfrs(t, repo, "import", car)
			checkRefused(t, r, tt.want)
			if after := repoStat(t, repo); after.Blocks != before.Blocks || after.Roots != before.Roots {
				t.Errorf("refused import changed the repo: %+v, was %+v", after, before)
			}
			must(t, repo, "verify")
		})
	}

	t.Run("CARv2 header on a v1 layout", func(t *testing.T) {
		v1 := filepath.Join(dir, "v1.car")
		writeCAR(t, v1, []cid.Cid{leafCID}, []carBlock{leafB})
		body, err := os.ReadFile(v1)
		if err != nil {
			t.Fatal(err)
		}
		// The CBOR header's version 1 made 2: go-car then reads the first
		// block's bytes as the CARv2 header's offsets.
		i := bytes.Index(body, []byte("version\x01"))
		if i < 0 {
			t.Fatalf("no version in the CAR header %x", body[:60])
		}
		body[i+len("version")] = 2
		car := filepath.Join(dir, "v2-on-v1.car")
		writeFile(t, car, body)
		checkRefused(t, ipfrs(t, repo, "import", car), "not a valid CAR: CARv2 header")
		// And a CARv2 header whose data offset lies past the file's end.
		var hdr bytes.Buffer
		hdr.Write(carv2.Pragma)
		if _, err := (carv2.Header{DataOffset: 1 << 62, DataSize: 100}).WriteTo(&hdr); err != nil {
			t.Fatal(err)
		}
		car = filepath.Join(dir, "v2-far.car")
		writeFile(t, car, append(hdr.Bytes(), body...))
		checkRefused(t, ipfrs(t, repo, "import", car), "CARv2 header puts 100 bytes of data at offset 4611686018427387904, past the end")
		must(t, repo, "verify")
	})

	t.Run("allow partial", func(t *testing.T) {
		fresh := filepath.Join(dir, "partial-repo")
		car := filepath.Join(dir, "missing-leaf-partial.car")
		writeCAR(t, car, []cid.Cid{partial.cid}, []carBlock{partial, leafB})
		r := ipfrs(t, fresh, "import", "--allow-partial", car)
		if r.err != nil {
			t.Fatalf("import --allow-partial: %v %s", r.err, r.stderr)
		}
		if strings.TrimSpace(r.stdout) != partial.cid.String() || !strings.Contains(r.stderr, "stored partial: incomplete DAG") {
			t.Errorf("stdout %q stderr %q: want the root and a warning", r.stdout, r.stderr)
		}
		if st := repoStat(t, fresh); st.Blocks != 2 || st.Roots != 1 {
			t.Errorf("stat %+v: want the 2 blocks and 1 root", st)
		}
		must(t, fresh, "verify")
	})
}

// checkRefused wants a failure printed as one line naming want.
func checkRefused(t *testing.T, r result, want string) {
	t.Helper()
	msg := strings.TrimRight(r.stderr, "\n")
	switch {
	case r.err == nil:
		t.Errorf("import succeeded (printed %q), want it refused with %q", r.stdout, want)
	case strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ipfrs-mount: ") || !strings.Contains(msg, want):
		t.Errorf("stderr %q, want one line mentioning %q", r.stderr, want)
	}
}
