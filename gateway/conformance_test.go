package gateway

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"
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
