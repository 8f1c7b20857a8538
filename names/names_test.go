package names

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
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

var (
	tree1 = cid.MustParse("bafybeihm2fwylxiush5wrtgc2kxhfwffodhjhfdickb6qc6zufwiu6uwty")
	tree2 = cid.MustParse("bafybeickjmkb2boaikp7viixgwwitkhf4aa4gxxky6ezytqaqa2fxx77mq")
)

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKey(dir, false); err == nil {
		t.Fatal("loaded a key that does not exist")
	}
	k, err := LoadKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi.Mode(), err)
	}
	again, err := LoadKey(dir, true)
	if err != nil || !again.Name().Equal(k.Name()) {
		t.Fatalf("second load: %v, name %s want %s", err, again.Name(), k.Name())
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key others may read: %v", err)
	}
	junk := t.TempDir()
	if err := os.WriteFile(filepath.Join(junk, KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(junk, true); err == nil || !strings.Contains(err.Error(), "not a key") {
		t.Fatalf("a junk key file: %v", err)
	}
}

func TestPublishVerify(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	rs := New(s)
	k, err := LoadKey(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadKey(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	for i, tree := range []cid.Cid{tree1, tree2} {
		if _, err := rs.Publish(ctx, k, "main", tree, time.Minute, time.Hour); err != nil {
			t.Fatal(err)
		}
		raw, err := rs.Get(ctx, k.Name())
		if err != nil {
			t.Fatal(err)
		}
		rec, v, err := Verify(k.Name(), raw)
		if err != nil {
			t.Fatal(err)
		}
		if seq, _ := rec.Sequence(); seq != uint64(i) || v.String() != path.FromCid(tree).String() {
			t.Fatalf("publish %d: sequence %d, value %s", i, seq, v)
		}
		// The same bytes do not verify under another name.
		if _, _, err := Verify(other.Name(), raw); err == nil {
			t.Fatal("a record verified under another key's name")
		}
	}
	if b, err := rs.Branch(ctx); err != nil || b != "main" {
		t.Fatalf("branch %q %v", b, err)
	}
	if _, err := rs.Get(ctx, other.Name()); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("unpublished name: %v", err)
	}

	// Put keeps a record signed elsewhere, never an older one.
	dst := New(openStore(t))
	old, _ := ipns.NewRecord(k.priv, path.FromCid(tree1), 0, time.Now().Add(time.Hour), time.Minute, ipns.WithV1Compatibility(true))
	oldRaw, _ := ipns.MarshalRecord(old)
	newRaw, _ := rs.Get(ctx, k.Name())
	if _, err := dst.Put(ctx, k.Name(), newRaw); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Put(ctx, k.Name(), oldRaw); err == nil || !strings.Contains(err.Error(), "older") {
		t.Fatalf("older record kept: %v", err)
	}
	// Tampered bytes, an expired record and garbage are refused.
	bad := append([]byte(nil), newRaw...)
	bad[len(bad)-5] ^= 1
	expired, _ := ipns.NewRecord(k.priv, path.FromCid(tree1), 5, time.Now().Add(-time.Hour), time.Minute, ipns.WithV1Compatibility(true))
	expiredRaw, _ := ipns.MarshalRecord(expired)
	for name, raw := range map[string][]byte{"tampered": bad, "expired": expiredRaw, "garbage": []byte("not a record")} {
		if _, err := dst.Put(ctx, k.Name(), raw); err == nil {
			t.Errorf("%s record kept", name)
		}
	}
}
