package s3tier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/s3tier/s3test"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
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

func randomData(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// commitFile stores a tree holding one file and commits it on HEAD.
func commitFile(t *testing.T, s *store.Badger, name string, data []byte) (commit, file cid.Cid) {
	t.Helper()
	ctx := context.Background()
	layout := unixfs.DefaultLayout()
	im := &unixfs.Importer{Put: s, Layout: layout}
	n, err := im.ImportReader(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	root, err := layout.BuildDirectory(ctx, s, []unixfs.Entry{{Name: name, Node: n}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := versions.New(s).Create(ctx, versions.Commit{Tree: root.CID, Message: name}, false)
	if err != nil {
		t.Fatal(err)
	}
	return c.CID, n.CID
}

func location(t *testing.T, srv *s3test.Server, prefix string) Location {
	t.Helper()
	loc, err := ParseURL(srv.URL("models", prefix))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func openTier(t *testing.T, s *store.Badger, o Options) *Tier {
	t.Helper()
	o.Backoff = 20 * time.Millisecond
	tier, err := Open(context.Background(), s, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tier.Close)
	return tier
}

func drain(t *testing.T, tier *Tier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := tier.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, bs unixfs.BlockViewer, c cid.Cid) ([]byte, error) {
	t.Helper()
	f, err := unixfs.OpenFile(context.Background(), bs, c)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = f.WriteTo(context.Background(), &buf, 8)
	return buf.Bytes(), err
}

func TestParseURL(t *testing.T) {
	cases := []struct {
		in      string
		want    Location
		wantErr string
	}{
		{in: "s3://bkt/p/q?endpoint=http://127.0.0.1:9000", want: Location{Endpoint: "127.0.0.1:9000", Bucket: "bkt", Prefix: "p/q/", Region: "us-east-1"}},
		{in: "s3://bkt?endpoint=https://s3.example:443&region=eu-west-1", want: Location{Endpoint: "s3.example:443", Secure: true, Bucket: "bkt", Region: "eu-west-1"}},
		{in: "s3://bkt/", want: Location{Endpoint: "s3.amazonaws.com", Secure: true, Bucket: "bkt", Region: "us-east-1"}},
		{in: "http://bkt/p", wantErr: "want s3://"},
		{in: "s3:///p", wantErr: "want s3://"},
		{in: "s3://bkt?endpoint=ftp://x", wantErr: "endpoint"},
		{in: "s3://b/p", wantErr: "Bucket name cannot be shorter than 3 characters"},
		{in: "s3://Models/p", wantErr: "Bucket name contains invalid characters"},
	}
	t.Setenv("AWS_REGION", "")
	for _, tc := range cases {
		got, err := ParseURL(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// A writer pushes a commit in packs (one going multipart); a reader that
// follows the branch reads the file bit-exact through the bucket, then
// from its cache.
func TestPushFollowReadThrough(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	ctx := context.Background()
	a, b := openStore(t), openStore(t)
	data := randomData(1, 13<<20)
	commit, file := commitFile(t, a, "model.bin", data)
	ta := openTier(t, a, Options{Location: location(t, srv, "team"), Push: true, PackSize: 8 << 20, PartSize: 5 << 20})
	drain(t, ta)
	st := ta.Stats()
	if st.Packs < 2 || st.PushedBytes < int64(len(data)) || st.Queue != 0 {
		t.Fatalf("writer stats %+v: want >= 2 packs, >= %d bytes, empty queue", st, len(data))
	}

	tb := openTier(t, b, Options{Location: location(t, srv, "team"), Follow: []string{"main"}})
	branches, err := versions.New(b).Branches(ctx)
	if err != nil || branches["main"] != commit {
		t.Fatalf("reader's main = %v (%v), want %s", branches["main"], err, commit)
	}
	got, err := readAll(t, tb, file)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the bucket: %d bytes, %v; want %d identical bytes", len(got), err, len(data))
	}
	reads := tb.Stats().RemoteReads
	if reads == 0 {
		t.Fatal("no block came from the bucket")
	}
	tb.reads.running.Wait()
	got, err = readAll(t, tb, file)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second read: %v", err)
	}
	if s := tb.Stats(); s.RemoteReads != reads || s.CacheHits == 0 {
		t.Fatalf("second read went to the bucket again: %+v", s)
	}

	// A newer commit moves the follower.
	commit2, _ := commitFile(t, a, "model2.bin", randomData(2, 1<<20))
	drain(t, ta)
	if err := tb.Follow(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if branches, _ := versions.New(b).Branches(ctx); branches["main"] != commit2 {
		t.Fatalf("reader's main = %s after the second push, want %s", branches["main"], commit2)
	}
}

// A second writer on the same branch is refused while the first holds it.
func TestSecondWriterRefused(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	a, c := openStore(t), openStore(t)
	commitFile(t, a, "x", randomData(3, 1000))
	commitFile(t, c, "y", randomData(4, 1000))
	openTier(t, a, Options{Location: location(t, srv, "p"), Push: true})
	_, err := Open(context.Background(), c, Options{Location: location(t, srv, "p"), Push: true})
	if !errors.Is(err, ErrLeased) || !strings.Contains(err.Error(), "--follow main") {
		t.Fatalf("second writer: %v, want %v with a hint", err, ErrLeased)
	}
}

// packFile returns the path of the pack that holds c on the server's disk.
func packFile(t *testing.T, srv *s3test.Server, tier *Tier, c cid.Cid) (string, loc) {
	t.Helper()
	if err := tier.idx.refresh(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	l, ok := tier.idx.lookup(c)
	if !ok {
		t.Fatalf("%s is in no pack", c)
	}
	return filepath.Join(srv.DataDir(), "models", tier.packKey(l.pack)), l
}

// A pack altered in the bucket: the read fails, nothing is cached, and
// Verify names the pack.
func TestAlteredPack(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	ctx := context.Background()
	a, b := openStore(t), openStore(t)
	data := randomData(5, 3<<20)
	_, file := commitFile(t, a, "m", data)
	ta := openTier(t, a, Options{Location: location(t, srv, "alt"), Push: true})
	drain(t, ta)
	tb := openTier(t, b, Options{Location: location(t, srv, "alt"), Follow: []string{"main"}})
	// Flip a byte inside the first leaf of the file.
	var leaf cid.Cid
	if err := a.View(ctx, file, func(blk []byte) error {
		links, err := unixfs.Links(file, blk)
		if len(links) > 0 {
			leaf = links[0]
		}
		return err
	}); err != nil || !leaf.Defined() {
		t.Fatalf("no leaf: %v", err)
	}
	path, l := packFile(t, srv, tb, leaf)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := []byte{0}
	f.ReadAt(one, l.off+10)
	one[0] ^= 0xff
	f.WriteAt(one, l.off+10)
	f.Close()

	got, err := readAll(t, tb, file)
	if !errors.Is(err, ErrCorruptPack) {
		t.Fatalf("read of an altered pack: %d bytes, err %v; want %v", len(got), err, ErrCorruptPack)
	}
	tb.reads.running.Wait()
	if ok, _ := b.Has(ctx, leaf); ok {
		t.Fatal("the altered block was cached")
	}
	bt, err := OpenBucket(ctx, Options{Location: location(t, srv, "alt")})
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Close()
	rep, err := bt.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() || len(rep.BadPacks) != 1 || rep.BadPacks[0] != l.pack || len(rep.BadBlocks) != 1 || rep.BadBlocks[0].CID != leaf.String() {
		t.Fatalf("verify: %+v; want pack %s and block %s named", rep, l.pack, leaf)
	}
}

// The server dies in the middle of the upload: the queue waits, survives a
// restart of the writer, and drains when the server is back.
func TestQueueSurvivesOutageAndRestart(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	ctx := context.Background()
	dir := t.TempDir()
	a, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	commitFile(t, a, "first", randomData(6, 1<<20))
	ta, err := Open(ctx, a, Options{Location: location(t, srv, "out"), Push: true, Backoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, ta)
	srv.Kill()
	commit, file := commitFile(t, a, "second", randomData(7, 4<<20))
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = ta.Drain(short)
	cancel()
	if err == nil {
		t.Fatal("drained with the server down")
	}
	if q := ta.Stats().Queue; q == 0 {
		t.Fatal("queue empty with the server down")
	}
	ta.Close()
	a.Close()

	a, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ta, err = Open(ctx, a, Options{Location: location(t, srv, "out"), Push: true, Backoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("writer restarted with the server down: %v", err)
	}
	defer ta.Close()
	srv.Restart()
	drain(t, ta)

	b := openStore(t)
	tb := openTier(t, b, Options{Location: location(t, srv, "out"), Follow: []string{"main"}})
	if br, _ := versions.New(b).Branches(ctx); br["main"] != commit {
		t.Fatalf("reader's main = %s, want %s", br["main"], commit)
	}
	if got, err := readAll(t, tb, file); err != nil || !bytes.Equal(got, randomData(7, 4<<20)) {
		t.Fatalf("read after the outage: %v", err)
	}
	bt, err := OpenBucket(ctx, Options{Location: location(t, srv, "out")})
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Close()
	if rep, err := bt.Verify(ctx); err != nil || !rep.Clean() {
		t.Fatalf("verify after the outage: %+v, %v", rep, err)
	}
}

// The local cache stays within its budget: the oldest fetched blocks go,
// and reading them again fetches them again from the bucket.
func TestCacheBudget(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	a, b := openStore(t), openStore(t)
	data := randomData(8, 6<<20)
	_, file := commitFile(t, a, "m", data)
	ta := openTier(t, a, Options{Location: location(t, srv, "cache"), Push: true})
	drain(t, ta)
	const budget = 2 << 20
	tb := openTier(t, b, Options{Location: location(t, srv, "cache"), Follow: []string{"main"}, CacheBytes: budget})
	for round := range 2 {
		got, err := readAll(t, tb, file)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: %v", round, err)
		}
		tb.reads.running.Wait()
		st := tb.Stats()
		if st.CachedBytes > budget || st.Evicted == 0 {
			t.Fatalf("round %d: %+v; want at most %d bytes cached and evictions", round, st, budget)
		}
	}
	if st := tb.Stats(); st.RemoteBytes < 2*int64(len(data))-budget {
		t.Fatalf("second read did not go back to the bucket for evicted blocks: %+v", st)
	}
	// The budget is kept across a reopen (the cache list is in the repo).
	tb.Close()
	tb2 := openTier(t, b, Options{Location: location(t, srv, "cache"), CacheBytes: budget})
	if got := tb2.Stats().CachedBytes; got == 0 || got > budget {
		t.Fatalf("cached bytes after reopen: %d", got)
	}
}

// Wrong credentials: Drain says why instead of waiting forever, and what
// was queued stays queued.
func TestDrainStopsOnPermanentError(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	a := openStore(t)
	commitFile(t, a, "x", randomData(10, 1000))
	ta := openTier(t, a, Options{Location: location(t, srv, "creds"), Push: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := ta.Drain(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "Access Denied") || !strings.Contains(err.Error(), "1 refs queued") {
		t.Fatalf("drain with a wrong secret: %v", err)
	}
}
