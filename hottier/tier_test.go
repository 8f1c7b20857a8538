package hottier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fillWith(data []byte) func(context.Context, *os.File) error {
	return func(_ context.Context, f *os.File) error {
		_, err := f.Write(data)
		return err
	}
}

func TestAddOpenEvict(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tier, err := Open(dir, 3000, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), bytes.Repeat([]byte("c"), 1500)
	for _, x := range []struct {
		key  string
		data []byte
	}{{"a", a}, {"b", b}} {
		if err := tier.Add(ctx, x.key, int64(len(x.data)), fillWith(x.data)); err != nil {
			t.Fatal(err)
		}
	}
	f, ok, err := tier.OpenFile("a") // a is now the most recently used
	if err != nil || !ok {
		t.Fatalf("open a: %v %v", ok, err)
	}
	got, err := f.Bytes()
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("mapping of a: %v", err)
	}
	if err := tier.Add(ctx, "c", int64(len(c)), fillWith(c)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		want bool
	}{{"a", true}, {"b", false}, {"c", true}}
	for _, tc := range tests {
		if got := tier.Has(tc.key); got != tc.want {
			t.Errorf("Has(%s) = %v, want %v", tc.key, got, tc.want)
		}
	}
	if s := tier.Stats(); s.Bytes != 2500 || s.Files != 2 {
		t.Errorf("stats %+v", s)
	}
	// Evicting an open copy keeps its mapping readable until Close.
	tier.Remove("a")
	if got, _ := f.Bytes(); !bytes.Equal(got, a) {
		t.Error("mapping of an evicted open copy changed")
	}
	f.Close()
	if err := tier.Add(ctx, "big", 5000, fillWith(make([]byte, 5000))); !errors.Is(err, ErrTooBig) {
		t.Errorf("a copy over the budget: %v", err)
	}
	if err := tier.Add(ctx, "short", 10, fillWith([]byte("abc"))); err == nil {
		t.Error("a copy shorter than its size was kept")
	}
	if err := tier.Add(ctx, "../x", 1, fillWith([]byte("x"))); err == nil {
		t.Error("a key with a slash was accepted")
	}
}

func TestReopenChecksLeftovers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tier, err := Open(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"good", "bad"} {
		if err := tier.Add(ctx, k, 3, fillWith([]byte(k[:3]))); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("partial"), 0o600) // a crash mid-copy
	tier, err = Open(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Error("partial copy left in place")
	}
	if tier.Has("good") {
		t.Error("a copy from an earlier run is used before it is checked")
	}
	check := func(_ context.Context, f *os.File) error {
		b := make([]byte, 3)
		f.ReadAt(b, 0)
		if string(b) != "goo" {
			return errors.New("wrong bytes")
		}
		return nil
	}
	if !tier.Check(ctx, "good", check) || !tier.Has("good") {
		t.Error("good copy not usable after its check")
	}
	if tier.Check(ctx, "bad", check) || tier.Has("bad") {
		t.Error("bad copy usable")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad")); !os.IsNotExist(err) {
		t.Error("bad copy not deleted")
	}
}

func TestConcurrentAddsCopyOnce(t *testing.T) {
	tier, err := Open(t.TempDir(), 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fills atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := tier.Add(context.Background(), "k", 4, func(ctx context.Context, f *os.File) error {
				fills.Add(1)
				_, err := f.Write([]byte("data"))
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := fills.Load(); n != 1 {
		t.Errorf("copied %d times", n)
	}
}

// Prefetch reads a copy the page cache does not hold, and cached tells.
func TestPrefetchFillsThePageCache(t *testing.T) {
	ctx := context.Background()
	tier, err := Open(t.TempDir(), 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	if err := tier.Add(ctx, "k", int64(len(data)), fillWith(data)); err != nil {
		t.Fatal(err)
	}
	f, _, err := tier.OpenFile("k")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(f.Fd(), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if f.cached() {
		t.Skip("the page cache kept the copy despite FADV_DONTNEED")
	}
	f.Prefetch()
	for i := 0; !f.cached(); i++ {
		if i == 3000 {
			t.Fatal("copy not in the page cache 30 s after Prefetch")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
