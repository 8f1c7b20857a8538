package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func rawCID(b []byte) cid.Cid {
	sum := sha256.Sum256(b)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	return cid.NewCidV1(cid.Raw, h)
}

func openStore(t *testing.T) *store.Badger {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// gateway serves blocks from a map, counting requests; answer may replace
// what it sends.
type gateway struct {
	blocks   map[string][]byte
	requests atomic.Int64
	answer   func(w http.ResponseWriter, r *http.Request, b []byte, ok bool)
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.requests.Add(1)
	b, ok := g.blocks[strings.TrimPrefix(r.URL.Path, "/ipfs/")]
	if g.answer != nil {
		g.answer(w, r, b, ok)
		return
	}
	if r.URL.Query().Get("format") != "raw" || r.Header.Get("Accept") != "application/vnd.ipld.raw" {
		http.Error(w, "want a raw block", http.StatusNotAcceptable)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(b)
}

func serve(t *testing.T, g *gateway) string {
	t.Helper()
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestViewFetchesVerifiesAndCaches(t *testing.T) {
	data := bytes.Repeat([]byte("block"), 1000)
	c := rawCID(data)
	good := func() *gateway { return &gateway{blocks: map[string][]byte{c.String(): data}} }
	wrong := &gateway{answer: func(w http.ResponseWriter, _ *http.Request, _ []byte, _ bool) {
		w.Write(append([]byte("x"), data[1:]...))
	}}
	huge := &gateway{answer: func(w http.ResponseWriter, _ *http.Request, _ []byte, _ bool) {
		chunk := make([]byte, 1<<20)
		for range 3 {
			w.Write(chunk)
		}
	}}
	missing := &gateway{blocks: map[string][]byte{}}
	broken := &gateway{answer: func(w http.ResponseWriter, _ *http.Request, _ []byte, _ bool) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}}
	cases := []struct {
		name      string
		gateways  []*gateway
		wantErr   []error // nil: the view succeeds
		wantCache bool
	}{
		{"one good gateway", []*gateway{good()}, nil, true},
		{"wrong bytes then good", []*gateway{wrong, good()}, nil, true},
		{"404 then good", []*gateway{missing, good()}, nil, true},
		{"503 then good", []*gateway{broken, good()}, nil, true},
		{"wrong bytes only", []*gateway{wrong}, []error{ErrUnavailable, unixfs.ErrHashMismatch}, false},
		{"too large", []*gateway{huge}, []error{ErrUnavailable, errTooLarge}, false},
		{"missing everywhere", []*gateway{missing, missing}, []error{ErrUnavailable, store.ErrNotFound}, false},
		{"always 503", []*gateway{broken}, []error{ErrUnavailable}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local := openStore(t)
			var urls []string
			for _, g := range tc.gateways {
				urls = append(urls, serve(t, g))
			}
			rs := New(local, Options{Gateways: urls, Backoff: time.Millisecond})
			defer rs.Close()
			var got []byte
			err := rs.View(context.Background(), c, func(b []byte) error { got = append([]byte(nil), b...); return nil })
			if tc.wantErr == nil {
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("View: %v, %d bytes", err, len(got))
				}
			} else {
				for _, want := range tc.wantErr {
					if !errors.Is(err, want) {
						t.Errorf("View error %v, want %v", err, want)
					}
				}
			}
			// Nothing but the right bytes is ever stored.
			rs.Wait()
			b, err := local.Get(context.Background(), c)
			switch {
			case tc.wantCache && (err != nil || !bytes.Equal(b, data)):
				t.Errorf("cached: %v, %d bytes", err, len(b))
			case !tc.wantCache && !errors.Is(err, store.ErrNotFound):
				t.Errorf("stored after a failed fetch: %v", err)
			}
		})
	}
}

// A second view is local; concurrent views and hints of one block make one
// request.
func TestFetchOnceThenLocal(t *testing.T) {
	data := []byte("hello, gateway")
	c := rawCID(data)
	release := make(chan struct{})
	g := &gateway{blocks: map[string][]byte{c.String(): data}}
	g.answer = func(w http.ResponseWriter, r *http.Request, b []byte, ok bool) {
		<-release
		w.Write(b)
	}
	rs := New(openStore(t), Options{Gateways: []string{serve(t, g)}})
	defer rs.Close()
	ctx := context.Background()
	if err := rs.WillNeed(ctx, c); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- rs.View(ctx, c, func(b []byte) error {
				if !bytes.Equal(b, data) {
					return errors.New("wrong bytes")
				}
				return nil
			})
		}()
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.View(ctx, c, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := g.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if st := rs.Stats(); st.Fetched != 1 || st.FetchedBytes != int64(len(data)) {
		t.Errorf("stats %+v", st)
	}
}

// A gateway that never answers fails the view after the timeout; the
// error is ErrUnavailable.
func TestTimeout(t *testing.T) {
	data := []byte("slow")
	c := rawCID(data)
	stop := make(chan struct{})
	defer close(stop)
	g := &gateway{answer: func(w http.ResponseWriter, r *http.Request, _ []byte, _ bool) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}}
	rs := New(openStore(t), Options{Gateways: []string{serve(t, g)}, Timeout: 50 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
	defer rs.Close()
	err := rs.View(context.Background(), c, func([]byte) error { return nil })
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("View: %v", err)
	}
	if n := g.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (one retry)", n)
	}
}

func TestParseGateways(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"http://127.0.0.1:8080", []string{"http://127.0.0.1:8080"}, true},
		{"http://a:1/, https://b", []string{"http://a:1", "https://b"}, true},
		{"ftp://a", nil, false},
		{"127.0.0.1:8080", nil, false},
		{"", nil, false},
	}
	for _, tc := range cases {
		got, err := ParseGateways(tc.in)
		if (err == nil) != tc.ok || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseGateways(%q) = %v, %v", tc.in, got, err)
		}
	}
}
