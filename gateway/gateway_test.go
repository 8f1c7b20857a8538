package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/ipfrs/ipfrs-mount/chunker"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// fixture is a store holding a few DAGs, served by a gateway.
type fixture struct {
	s                   *store.Badger
	url                 string
	file, small, dir    cid.Cid // a 20 KiB file of 1 KiB leaves, 4 links a node; "hello"; {a: file, b: small}
	hamt, zeros, absent cid.Cid // a HAMT of 40 small files; 8 KiB of zeros (one leaf 8 times); a CID not stored
	fileData            []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	l := unixfs.Layout{Chunker: chunker.FixedSpec(1024), MaxLinks: 4, HAMTThreshold: 256 << 10, HAMTFanout: 256}
	imp := func(b []byte) unixfs.Node {
		n, err := (&unixfs.Importer{Put: s, Layout: l}).ImportReader(ctx, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	f := &fixture{s: s}
	r := rand.New(rand.NewPCG(1, 2))
	f.fileData = make([]byte, 20000)
	for i := range f.fileData {
		f.fileData[i] = byte(r.Uint32())
	}
	file, small := imp(f.fileData), imp([]byte("hello"))
	f.file, f.small = file.CID, small.CID
	f.zeros = imp(make([]byte, 8192)).CID
	dir, err := l.BuildDirectory(ctx, s, []unixfs.Entry{{Name: "a", Node: file}, {Name: "b", Node: small}})
	if err != nil {
		t.Fatal(err)
	}
	f.dir = dir.CID
	var ents []unixfs.Entry
	for i := range 40 {
		ents = append(ents, unixfs.Entry{Name: fmt.Sprintf("entry-%02d", i), Node: imp([]byte(fmt.Sprint(i)))})
	}
	hl := l
	hl.HAMTThreshold, hl.HAMTFanout = 64, 8
	hamt, err := hl.BuildDirectory(ctx, s, ents)
	if err != nil {
		t.Fatal(err)
	}
	f.hamt = hamt.CID
	f.absent, _ = cid.Decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	srv := httptest.NewServer(New(s, Options{}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// dagBlocks lists every block under c, each once.
func (f *fixture) dagBlocks(t *testing.T, c cid.Cid) []cid.Cid {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		if seen[c] {
			return
		}
		seen[c] = true
		out = append(out, c)
		b, err := f.s.Get(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		links, err := unixfs.Links(c, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			walk(l)
		}
	}
	walk(c)
	return out
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func get(t *testing.T, method, url string, header ...string) response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the body: %v", url, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// carBlocks reads a CAR, checking every block against its CID.
func carBlocks(t *testing.T, body []byte) (roots []cid.Cid, blocks []cid.Cid, data map[cid.Cid][]byte) {
	t.Helper()
	br, err := carv2.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("not a CAR: %v", err)
	}
	if br.Version != 1 {
		t.Errorf("CAR version %d", br.Version)
	}
	data = map[cid.Cid][]byte{}
	for {
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := unixfs.CheckHash(blk.Cid(), blk.RawData()); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, blk.Cid())
		data[blk.Cid()] = blk.RawData()
	}
	return br.Roots, blocks, data
}

func TestRawBlocks(t *testing.T) {
	f := newFixture(t)
	want, _ := f.s.Get(context.Background(), f.file)
	cases := []struct {
		name   string
		method string
		path   string
		header []string
		code   int
		body   []byte
	}{
		{"format=raw", "GET", "/ipfs/" + f.file.String() + "?format=raw", nil, 200, want},
		{"Accept", "GET", "/ipfs/" + f.file.String(), []string{"Accept", TypeRaw}, 200, want},
		{"format wins over Accept", "GET", "/ipfs/" + f.file.String() + "?format=raw", []string{"Accept", "text/html"}, 200, want},
		{"HEAD", "HEAD", "/ipfs/" + f.file.String() + "?format=raw", nil, 200, nil},
		{"probe", "GET", "/ipfs/bafkqaaa?format=raw", []string{"Accept", TypeRaw}, 200, []byte{}},
		{"missing", "GET", "/ipfs/" + f.absent.String() + "?format=raw", nil, 404, nil},
		{"bad CID", "GET", "/ipfs/notacid?format=raw", nil, 400, nil},
		{"raw with a path", "GET", "/ipfs/" + f.dir.String() + "/a?format=raw", nil, 400, nil},
		{"no Accept, no format", "GET", "/ipfs/" + f.file.String(), nil, 400, nil},
		{"deserialized wanted", "GET", "/ipfs/" + f.file.String(), []string{"Accept", "text/html"}, 406, nil},
		{"format=tar", "GET", "/ipfs/" + f.file.String() + "?format=tar", nil, 406, nil},
		{"ipns", "GET", "/ipns/example.com?format=raw", nil, 501, nil},
		{"POST", "POST", "/ipfs/" + f.file.String() + "?format=raw", nil, 405, nil},
		{"only-if-cached, missing", "GET", "/ipfs/" + f.absent.String() + "?format=raw", []string{"Cache-Control", "only-if-cached"}, 412, nil},
		{"only-if-cached, present", "GET", "/ipfs/" + f.file.String() + "?format=raw", []string{"Cache-Control", "only-if-cached"}, 200, want},
		{"not modified", "GET", "/ipfs/" + f.file.String() + "?format=raw", []string{"If-None-Match", `"` + f.file.String() + `.raw"`}, 304, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, tc.method, f.url+tc.path, tc.header...)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if tc.code != 200 {
				return
			}
			if tc.body != nil && !bytes.Equal(r.body, tc.body) {
				t.Errorf("body %d bytes, want %d", len(r.body), len(tc.body))
			}
			if tc.method == "HEAD" && (len(r.body) != 0 || r.header.Get("Content-Length") != fmt.Sprint(len(want))) {
				t.Errorf("HEAD: %d body bytes, Content-Length %q", len(r.body), r.header.Get("Content-Length"))
			}
			for k, v := range map[string]string{
				"Content-Type":           TypeRaw,
				"Cache-Control":          "public, max-age=29030400, immutable",
				"X-Content-Type-Options": "nosniff",
			} {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if !strings.HasSuffix(r.header.Get("Etag"), `.raw"`) || r.header.Get("X-Ipfs-Roots") == "" {
				t.Errorf("Etag %q, X-Ipfs-Roots %q", r.header.Get("Etag"), r.header.Get("X-Ipfs-Roots"))
			}
		})
	}
}

func TestCARs(t *testing.T) {
	f := newFixture(t)
	fileBlocks := f.dagBlocks(t, f.file)
	hamtShards := 0
	for _, c := range f.dagBlocks(t, f.hamt) {
		if c.Prefix().Codec == cid.DagProtobuf {
			b, _ := f.s.Get(context.Background(), c)
			if d, err := unixfs.Decode(b); err == nil && d.HAMT {
				hamtShards++
			}
		}
	}
	if hamtShards < 2 {
		t.Fatalf("the fixture's HAMT has %d shards", hamtShards)
	}
	path := func(c cid.Cid, rest string) string { return "/ipfs/" + c.String() + rest }
	cases := []struct {
		name   string
		path   string
		header []string
		code   int
		roots  []cid.Cid // X-Ipfs-Roots
		blocks []cid.Cid // nil: check count only
		count  int
		// readable is a byte range of the file that the CAR's blocks alone
		// must serve; unreadable one they must not.
		readable, unreadable [2]int64
	}{
		{name: "all of a directory", path: path(f.dir, "?format=car"), code: 200, roots: []cid.Cid{f.dir},
			blocks: f.dagBlocks(t, f.dir)},
		{name: "Accept", path: path(f.dir, ""), header: []string{"Accept", TypeCAR + "; version=1; order=dfs"}, code: 200,
			roots: []cid.Cid{f.dir}, blocks: f.dagBlocks(t, f.dir)},
		{name: "path, entity", path: path(f.dir, "/a?format=car&dag-scope=entity"), code: 200, roots: []cid.Cid{f.dir, f.file},
			blocks: append([]cid.Cid{f.dir}, fileBlocks...)},
		{name: "path, block", path: path(f.dir, "/b?format=car&dag-scope=block"), code: 200, roots: []cid.Cid{f.dir, f.small},
			blocks: []cid.Cid{f.dir, f.small}},
		{name: "directory entity", path: path(f.dir, "?format=car&dag-scope=entity"), code: 200, roots: []cid.Cid{f.dir},
			blocks: []cid.Cid{f.dir}},
		{name: "HAMT entity: every shard, no entry", path: path(f.hamt, "?format=car&dag-scope=entity"), code: 200, count: hamtShards},
		{name: "HAMT path", path: path(f.hamt, "/entry-07?format=car&dag-scope=block"), code: 200, count: -1},
		{name: "first KiB", path: path(f.file, "?format=car&entity-bytes=0:1023"), code: 200,
			count: -1, readable: [2]int64{0, 1024}, unreadable: [2]int64{1024, 2048}},
		{name: "last KiB", path: path(f.file, "?format=car&entity-bytes=-1024:*"), code: 200,
			count: -1, readable: [2]int64{20000 - 1024, 20000}, unreadable: [2]int64{0, 1024}},
		{name: "middle", path: path(f.file, "?format=car&entity-bytes=5000:9000"), code: 200,
			count: -1, readable: [2]int64{5000, 9001}, unreadable: [2]int64{12000, 13000}},
		{name: "whole file by range", path: path(f.file, "?format=car&entity-bytes=0:*"), code: 200, blocks: fileBlocks},
		{name: "dups=n", path: path(f.zeros, "?format=car"), code: 200, count: 3}, // root, one inner node twice, one leaf 8 times
		{name: "dups=y", path: path(f.zeros, "?format=car"), header: []string{"Accept", TypeCAR + "; dups=y"}, code: 200, count: -1},
		{name: "probe", path: "/ipfs/bafkqaaa?format=car", code: 200, count: 0},
		{name: "range outside", path: path(f.file, "?format=car&entity-bytes=30000:*"), code: 400},
		{name: "bad range", path: path(f.file, "?format=car&entity-bytes=9:3"), code: 400},
		{name: "bad scope", path: path(f.file, "?format=car&dag-scope=most"), code: 400},
		{name: "CARv2", path: path(f.file, "?format=car&car-version=2"), code: 406},
		{name: "missing root", path: path(f.absent, "?format=car"), code: 404},
		{name: "missing entry", path: path(f.dir, "/nope?format=car"), code: 404},
		{name: "path through a file", path: path(f.dir, "/a/x?format=car"), code: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, "GET", f.url+tc.path, tc.header...)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if tc.code != 200 {
				return
			}
			ct := r.header.Get("Content-Type")
			if !strings.HasPrefix(ct, TypeCAR+"; version=1; order=dfs; dups=") {
				t.Errorf("Content-Type %q", ct)
			}
			if r.header.Get("Cache-Control") != cacheImmutable || !strings.HasPrefix(r.header.Get("Etag"), `W/"`) {
				t.Errorf("Cache-Control %q, Etag %q", r.header.Get("Cache-Control"), r.header.Get("Etag"))
			}
			if tc.roots != nil {
				var want []string
				for _, c := range tc.roots {
					want = append(want, c.String())
				}
				if got := r.header.Get("X-Ipfs-Roots"); got != strings.Join(want, ",") {
					t.Errorf("X-Ipfs-Roots %q, want %q", got, strings.Join(want, ","))
				}
			}
			roots, blocks, data := carBlocks(t, r.body)
			if len(roots) != 1 {
				t.Errorf("CAR roots %v", roots)
			}
			switch {
			case tc.blocks != nil:
				if !slices.Equal(blocks, tc.blocks) {
					t.Errorf("blocks %v,\nwant %v", blocks, tc.blocks)
				}
			case tc.count >= 0:
				if len(blocks) != tc.count {
					t.Errorf("%d blocks, want %d", len(blocks), tc.count)
				}
			}
			if tc.name == "dups=y" && len(blocks) != 1+2+8 {
				t.Errorf("dups=y: %d blocks, want every block each time it occurs (11)", len(blocks))
			}
			if tc.readable[1] > 0 {
				mv := mapViewer(data)
				file, err := unixfs.OpenFile(context.Background(), mv, f.file)
				if err != nil {
					t.Fatal(err)
				}
				p := make([]byte, tc.readable[1]-tc.readable[0])
				if _, err := file.ReadAt(context.Background(), p, tc.readable[0]); err != nil && !errors.Is(err, io.EOF) {
					t.Fatalf("reading the range from the CAR: %v", err)
				}
				if !bytes.Equal(p, f.fileData[tc.readable[0]:tc.readable[1]]) {
					t.Error("the range read from the CAR differs")
				}
				q := make([]byte, tc.unreadable[1]-tc.unreadable[0])
				if _, err := file.ReadAt(context.Background(), q, tc.unreadable[0]); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a range outside entity-bytes read: %v", err)
				}
			}
		})
	}
}

// mapViewer serves blocks from a CAR read into memory.
type mapViewer map[cid.Cid][]byte

func (m mapViewer) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	b, ok := m[c]
	if !ok {
		return fmt.Errorf("block %s: %w", c, store.ErrNotFound)
	}
	return fn(b)
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		in       string
		size     uint64
		from     uint64
		end      uint64
		inside   bool
		parseErr bool
	}{
		{"0:*", 100, 0, 100, true, false},
		{"0:9", 100, 0, 10, true, false},
		{"10:1000", 100, 10, 100, true, false},
		{"-10:*", 100, 90, 100, true, false},
		{"-1000:*", 100, 0, 100, true, false},
		{"5:-10", 100, 5, 91, true, false},
		{"50:-60", 100, 0, 0, true, false}, // resolves empty: the root block only
		{"100:*", 100, 0, 0, false, false},
		{"9:3", 100, 0, 0, false, true},
		{"x:3", 100, 0, 0, false, true},
		{"3", 100, 0, 0, false, true},
	}
	for _, tc := range cases {
		from, to, err := parseRange(tc.in)
		if (err != nil) != tc.parseErr {
			t.Errorf("parseRange(%q): %v", tc.in, err)
			continue
		}
		if err != nil {
			continue
		}
		r, inside := resolveRange(from, to, tc.size)
		if inside != tc.inside {
			t.Errorf("%q of %d: inside %v", tc.in, tc.size, inside)
			continue
		}
		if inside && (r.from != tc.from || r.end != tc.end) {
			t.Errorf("%q of %d: [%d, %d), want [%d, %d)", tc.in, tc.size, r.from, r.end, tc.from, tc.end)
		}
	}
}
