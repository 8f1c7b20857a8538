package gateway

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/names"
)

// The points gateway-conformance's block and CAR specs check that the
// other tests do not: Accept-Ranges on CARs, ?filename=, paths through
// dag-cbor.
func TestConformanceDetails(t *testing.T) {
	f := newFixture(t)
	t.Run("CAR says Accept-Ranges: none", func(t *testing.T) {
		resp := get(t, http.MethodGet, f.url+"/ipfs/"+f.dir.String()+"?format=car")
		if got := resp.header.Get("Accept-Ranges"); got != "none" {
			t.Errorf("Accept-Ranges %q", got)
		}
	})
	for _, tt := range []struct{ query, want string }{
		{"", `attachment; filename="` + f.small.String() + `.bin"`},
		{"&filename=foobar.bin", `attachment; filename="foobar.bin"`},
		{"&filename=a%22b%5Cc", `attachment; filename="a_b_c"; filename*=UTF-8''a%22b%5Cc`},
		{"&filename=test%D1%82%D0%B5%D1%81%D1%82.bin", `attachment; filename="test____.bin"; filename*=UTF-8''test%D1%82%D0%B5%D1%81%D1%82.bin`},
	} {
		resp := get(t, http.MethodGet, f.url+"/ipfs/"+f.small.String()+"?format=raw"+tt.query)
		if got := resp.header.Get("Content-Disposition"); got != tt.want {
			t.Errorf("filename %q: Content-Disposition %q, want %q", tt.query, got, tt.want)
		}
	}

	t.Run("path through dag-cbor", func(t *testing.T) {
		// A commit-like dag-cbor block: {tree: {files: {single: <dir>}}}.
		n, err := qp.BuildMap(basicnode.Prototype.Any, 1, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "tree", qp.Map(1, func(ma datamodel.MapAssembler) {
				qp.MapEntry(ma, "files", qp.Map(1, func(ma datamodel.MapAssembler) {
					qp.MapEntry(ma, "single", qp.Link(cidlink.Link{Cid: f.dir}))
				}))
			}))
		})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := dagcbor.Encode(n, &buf); err != nil {
			t.Fatal(err)
		}
		c, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(buf.Bytes())
		if err := f.s.Put(context.Background(), c, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		resp := get(t, http.MethodGet, f.url+"/ipfs/"+c.String()+"/tree/files/single/b?format=car")
		if resp.code != http.StatusOK {
			t.Fatalf("status %d: %s", resp.code, resp.body)
		}
		br, err := carv2.NewBlockReader(bytes.NewReader(resp.body))
		if err != nil {
			t.Fatal(err)
		}
		var got []cid.Cid
		for {
			b, err := br.Next()
			if err != nil {
				break
			}
			got = append(got, b.Cid())
		}
		if len(got) != 3 || !got[0].Equals(c) || !got[1].Equals(f.dir) || !got[2].Equals(f.small) {
			t.Errorf("blocks %v, want %v %v %v", got, c, f.dir, f.small)
		}
		if r := resp.header.Get("X-Ipfs-Roots"); r != c.String()+","+f.dir.String()+","+f.small.String() {
			t.Errorf("X-Ipfs-Roots %q", r)
		}
		for _, p := range []string{"/tree/nothing", "/tree/files/single/nothing"} {
			if resp := get(t, http.MethodGet, f.url+"/ipfs/"+c.String()+p+"?format=car"); resp.code != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404", p, resp.code)
			}
		}
	})
}

func TestIPNSRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k, err := names.LoadKey(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	rs := names.New(f.s)
	if _, err := rs.Publish(ctx, k, "main", f.dir, 90*time.Second, time.Hour); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(f.s, Options{Records: rs}))
	t.Cleanup(srv.Close)
	name := k.Name().String()

	for _, tt := range []struct {
		name, url string
		header    []string
	}{
		{"format", "/ipns/" + name + "?format=ipns-record", nil},
		{"Accept", "/ipns/" + name, []string{"Accept", TypeIPNSRecord}},
	} {
		resp := get(t, http.MethodGet, srv.URL+tt.url, tt.header...)
		if resp.code != http.StatusOK || resp.header.Get("Content-Type") != TypeIPNSRecord ||
			resp.header.Get("Cache-Control") != "public, max-age=90" ||
			!strings.HasPrefix(resp.header.Get("Content-Disposition"), "attachment;") {
			t.Fatalf("%s: %d %v %s", tt.name, resp.code, resp.header, resp.body)
		}
		if _, v, err := names.Verify(k.Name(), resp.body); err != nil || v.String() != "/ipfs/"+f.dir.String() {
			t.Fatalf("%s: served record: %v %v", tt.name, v, err)
		}
	}
	// What the name points to, as a CAR, cached for the TTL only.
	resp := get(t, http.MethodGet, srv.URL+"/ipns/"+name+"/b?format=car")
	if resp.code != http.StatusOK || resp.header.Get("Cache-Control") != "public, max-age=90" {
		t.Fatalf("CAR through the name: %d %v", resp.code, resp.header)
	}
	if r := resp.header.Get("X-Ipfs-Roots"); r != f.dir.String()+","+f.small.String() {
		t.Errorf("X-Ipfs-Roots %q", r)
	}
	other, _ := names.LoadKey(t.TempDir(), true)
	for url, code := range map[string]int{
		"/ipns/" + other.Name().String() + "?format=ipns-record": http.StatusNotFound,
		"/ipns/not-a-name?format=ipns-record":                    http.StatusBadRequest,
		"/ipns/" + name + "/b?format=ipns-record":                http.StatusBadRequest,
	} {
		if resp := get(t, http.MethodGet, srv.URL+url); resp.code != code {
			t.Errorf("%s: %d, want %d", url, resp.code, code)
		}
	}
	// A gateway without records knows no name.
	if resp := get(t, http.MethodGet, f.url+"/ipns/"+name+"?format=ipns-record"); resp.code != http.StatusNotFound {
		t.Errorf("no records: %d", resp.code)
	}
}
