package remote

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/names"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// ResolveName takes the newest record that verifies under the name, from
// any gateway, and keeps it; a gateway sending another key's record, or
// none, is passed over.
func TestResolveName(t *testing.T) {
	ctx := context.Background()
	tree1 := cid.MustParse("bafybeihm2fwylxiush5wrtgc2kxhfwffodhjhfdickb6qc6zufwiu6uwty")
	tree2 := cid.MustParse("bafybeickjmkb2boaikp7viixgwwitkhf4aa4gxxky6ezytqaqa2fxx77mq")
	sign := func(k *names.Key, trees ...cid.Cid) []byte {
		rs := names.New(openStore(t))
		for _, tr := range trees {
			if _, err := rs.Publish(ctx, k, "main", tr, time.Minute, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := rs.Get(ctx, k.Name())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	k, _ := names.LoadKey(t.TempDir(), true)
	liar, _ := names.LoadKey(t.TempDir(), true)
	serve := func(raw []byte) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if raw == nil || r.URL.Path != "/ipns/"+k.Name().String() || r.Header.Get("Accept") != TypeIPNSRecord {
				http.NotFound(w, r)
				return
			}
			w.Write(raw)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	old, newer, forged := serve(sign(k, tree1)), serve(sign(k, tree1, tree2)), serve(sign(liar, tree2))
	none := serve(nil)
	tests := []struct {
		name     string
		gateways []string
		want     cid.Cid // Undef: no valid record
	}{
		{"one", []string{old}, tree1},
		{"newest wins", []string{old, newer}, tree2},
		{"forged passed over", []string{forged, none, old}, tree1},
		{"only forged", []string{forged}, cid.Undef},
		{"none", []string{none}, cid.Undef},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := openStore(t)
			s := New(local, Options{Gateways: tt.gateways, Retries: -1})
			defer s.Close()
			p, err := s.ResolveName(ctx, k.Name())
			if !tt.want.Defined() {
				if err == nil {
					t.Fatalf("resolved to %s, want an error", p)
				}
				return
			}
			if err != nil || p.String() != "/ipfs/"+tt.want.String() {
				t.Fatalf("resolved to %v (%v), want %s", p, err, tt.want)
			}
			if _, err := names.New(local).Get(ctx, k.Name()); err != nil {
				t.Errorf("record not kept: %v", err)
			}
		})
	}
}

// A block that hashes to its CID but is not a consistent node (a file
// claiming 2^62 bytes it does not hold) is refused before anyone sees its
// size, and not cached.
func TestViewRefusesInconsistentNode(t *testing.T) {
	// dag-pb: Data = UnixFS {Type: File, filesize: 2^62}.
	ufs := binary.AppendUvarint([]byte{0x08, 0x02, 0x18}, 1<<62)
	node := append([]byte{0x0a, byte(len(ufs))}, ufs...)
	sum := sha256.Sum256(node)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	c := cid.NewCidV1(cid.DagProtobuf, h)
	local := openStore(t)
	s := New(local, Options{Gateways: []string{serve(t, &gateway{blocks: map[string][]byte{c.String(): node}})}, Retries: -1})
	defer s.Close()
	_, err := unixfs.Stat(context.Background(), s, c)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, unixfs.ErrInconsistent) {
		t.Fatalf("stat of a 2^62-byte claim: %v", err)
	}
	s.Wait()
	if ok, _ := local.Has(context.Background(), c); ok {
		t.Fatal("the inconsistent block was cached")
	}
}
