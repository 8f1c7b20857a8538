package worktree

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

type env struct {
	t    *testing.T
	dir  string
	s    *store.Badger
	tree *Tree
	// fault, when set before open, fails metadata writes (Options.MetaFault).
	fault func() error
	// publishEvery, when set, is the publication interval (long: only
	// fsync, rename-over and close publish, so the writes are the same in
	// every run).
	publishEvery time.Duration
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(func() {
		if e.tree != nil {
			e.close()
		}
	})
	return e
}

func (e *env) open() {
	s, err := store.Open(filepath.Join(e.dir, "blocks"), store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	tree, err := Open(context.Background(), s, Options{Layout: unixfs.DefaultLayout(), StagingDir: filepath.Join(e.dir, "staging"), MetaFault: e.fault, PublishInterval: e.publishEvery})
	if err != nil {
		e.t.Fatal(err)
	}
	e.s, e.tree = s, tree
}

func (e *env) close() {
	if err := e.tree.Close(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.tree = nil
}

func (e *env) create(parent uint64, name string, mode uint32) uint64 {
	e.t.Helper()
	a, err := e.tree.Create(context.Background(), parent, name, NewNode{Mode: mode})
	if err != nil {
		e.t.Fatal(err)
	}
	return a.Ino
}

func (e *env) write(ino uint64, off int64, p []byte) {
	e.t.Helper()
	if _, err := e.tree.WriteAt(context.Background(), ino, p, off); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(ino uint64) []byte {
	e.t.Helper()
	a, err := e.tree.Getattr(ino)
	if err != nil {
		e.t.Fatal(err)
	}
	buf := make([]byte, a.Size)
	n, err := e.tree.ReadAt(context.Background(), ino, buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		e.t.Fatal(err)
	}
	return buf[:n]
}

func TestContentOperations(t *testing.T) {
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name string
		do   func(e *env, ino uint64)
		want []byte
	}{
		{"write past EOF leaves a hole of zeros", func(e *env, ino uint64) {
			e.write(ino, 10, []byte("x"))
		}, append(make([]byte, 10), 'x')},
		{"overwrite inside flushed content", func(e *env, ino uint64) {
			e.write(ino, 0, big)
			e.tree.Flush(ctx, ino)
			e.write(ino, 5, []byte("XY"))
		}, append(append(append([]byte(nil), big[:5]...), "XY"...), big[7:]...)},
		{"truncate shrinks, growing again reads zeros", func(e *env, ino uint64) {
			e.write(ino, 0, []byte("abcdef"))
			e.tree.Flush(ctx, ino)
			n := uint64(2)
			e.tree.Setattr(ctx, ino, SetAttr{Size: &n})
			n = 4
			e.tree.Setattr(ctx, ino, SetAttr{Size: &n})
		}, []byte("ab\x00\x00")},
		{"streamed write then a read then more writes", func(e *env, ino uint64) {
			e.write(ino, 0, big)
			e.read(ino)
			e.write(ino, int64(len(big)), []byte("tail"))
			e.write(ino, 1, []byte("!"))
		}, append(append(append([]byte{big[0]}, '!'), big[2:]...), "tail"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ino := e.create(RootIno, "f", syscall.S_IFREG|0o644)
			tt.do(e, ino)
			if got := e.read(ino); !bytes.Equal(got, tt.want) {
				t.Fatalf("before flush: got %d bytes %q..., want %d", len(got), got[:min(len(got), 16)], len(tt.want))
			}
			// And after flush, close and reopen.
			e.close()
			e.open()
			if got := e.read(ino); !bytes.Equal(got, tt.want) {
				t.Fatalf("after reopen: got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestNamespaceOperations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	d := e.create(RootIno, "d", syscall.S_IFDIR|0o755)
	f := e.create(d, "f", syscall.S_IFREG|0o600)
	e.write(f, 0, []byte("content"))
	g := e.create(RootIno, "g", syscall.S_IFREG|0o644)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"create existing", func() error { _, err := e.tree.Create(ctx, d, "f", NewNode{Mode: syscall.S_IFREG}); return err }(), ErrExist},
		{"rmdir non-empty", e.tree.Remove(ctx, RootIno, "d", true), ErrNotEmpty},
		{"unlink a directory", e.tree.Remove(ctx, RootIno, "d", false), ErrIsDir},
		{"rename dir below itself", e.tree.Rename(ctx, RootIno, "d", d, "sub", 0), ErrInvalid},
		{"rename noreplace onto existing", e.tree.Rename(ctx, RootIno, "g", d, "f", RenameNoReplace), ErrExist},
		{"rename file over dir", e.tree.Rename(ctx, RootIno, "g", RootIno, "d", 0), ErrIsDir},
		{"link a directory", func() error { _, err := e.tree.Link(ctx, d, RootIno, "d2"); return err }(), ErrPermission},
		{"bad name", func() error { _, err := e.tree.Create(ctx, d, "a/b", NewNode{Mode: syscall.S_IFREG}); return err }(), ErrInvalid},
		{"xattr outside user.", e.tree.Setxattr(ctx, f, "trusted.x", nil, 0), ErrNotSupported},
		{"write the cid xattr", e.tree.Setxattr(ctx, f, CIDXattr, nil, 0), ErrPermission},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.err, tt.want)
		}
	}
	// Hard link, rename over, then the state survives a reopen.
	if _, err := e.tree.Link(ctx, f, RootIno, "hard"); err != nil {
		t.Fatal(err)
	}
	if err := e.tree.Rename(ctx, RootIno, "g", d, "f", 0); err != nil { // replaces d/f
		t.Fatal(err)
	}
	if err := e.tree.Setxattr(ctx, f, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open()
	a, err := e.tree.Lookup(RootIno, "hard")
	if err != nil || a.Ino != f || a.Nlink != 1 || a.Mode != syscall.S_IFREG|0o600 {
		t.Fatalf("hard link after reopen: %+v %v", a, err)
	}
	if got := e.read(f); string(got) != "content" {
		t.Fatalf("content %q", got)
	}
	if a, err := e.tree.Lookup(d, "f"); err != nil || a.Ino != g {
		t.Fatalf("d/f after rename over: %+v %v", a, err)
	}
	if v, err := e.tree.Getxattr(ctx, f, "user.k"); err != nil || string(v) != "v" {
		t.Fatalf("xattr %q %v", v, err)
	}
}

func TestUnlinkedOpenFileStaysReadable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	f := e.create(RootIno, "f", syscall.S_IFREG|0o644)
	e.write(f, 0, []byte("still here"))
	e.tree.Opened(f)
	if err := e.tree.Remove(ctx, RootIno, "f", false); err != nil {
		t.Fatal(err)
	}
	if got := e.read(f); string(got) != "still here" {
		t.Fatalf("read after unlink: %q", got)
	}
	if a, _ := e.tree.Getattr(f); a.Nlink != 0 {
		t.Fatalf("nlink %d after unlink", a.Nlink)
	}
	e.tree.Flush(ctx, f)
	e.tree.Released(ctx, f)
	if _, err := e.tree.Getattr(f); !errors.Is(err, ErrNotExist) {
		t.Fatalf("inode still there after the last release: %v", err)
	}
}

// A file's new content reaches the persisted namespace only through a
// publication that follows a store sync; until then a reopened tree shows
// the old content, never a name pointing at missing blocks.
func TestPublishedContentSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	f := e.create(RootIno, "f", syscall.S_IFREG|0o644)
	e.write(f, 0, []byte("v1"))
	if err := e.tree.Fsync(ctx, f); err != nil {
		t.Fatal(err)
	}
	root1, err := e.tree.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open()
	if got := e.read(f); string(got) != "v1" {
		t.Fatalf("after fsync and reopen: %q", got)
	}
	root2, err := e.tree.Root(ctx)
	if err != nil || !root2.CID.Equals(root1.CID) {
		t.Fatalf("root changed across reopen: %s %s %v", root1.CID, root2.CID, err)
	}
}

// After one change, the root is recomputed along that path only: the
// cached directory nodes elsewhere stay.
func TestRootFollowsChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	var files []uint64
	for d := range 10 {
		dir := e.create(RootIno, string(rune('a'+d)), syscall.S_IFDIR|0o755)
		for i := range 10 {
			f := e.create(dir, string(rune('0'+i)), syscall.S_IFREG|0o644)
			e.write(f, 0, []byte{byte(d), byte(i)})
			files = append(files, f)
		}
	}
	r1, err := e.tree.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.write(files[55], 0, []byte("changed"))
	r2, err := e.tree.Root(ctx)
	if err != nil || r2.CID.Equals(r1.CID) {
		t.Fatalf("root after a change: %s (before %s) %v", r2.CID, r1.CID, err)
	}
	cached := 0
	e.tree.mu.Lock()
	for _, in := range e.tree.inodes {
		if in.rec.isDir() && in.dirNode != nil {
			cached++
		}
	}
	e.tree.mu.Unlock()
	if cached != 11 {
		t.Fatalf("%d directory nodes cached, want all 11", cached)
	}
	// The cached result equals a fresh computation.
	e.close()
	e.open()
	r3, err := e.tree.Root(ctx)
	if err != nil || !r3.CID.Equals(r2.CID) {
		t.Fatalf("fresh root %s, cached root %s, %v", r3.CID, r2.CID, err)
	}
	// Renames and removals invalidate too.
	if err := e.tree.Rename(ctx, RootIno, "a", RootIno, "z", 0); err != nil {
		t.Fatal(err)
	}
	r4, _ := e.tree.Root(ctx)
	e.close()
	e.open()
	r5, _ := e.tree.Root(ctx)
	if !r4.CID.Equals(r5.CID) || r4.CID.Equals(r3.CID) {
		t.Fatalf("after rename: cached %s, fresh %s, before %s", r4.CID, r5.CID, r3.CID)
	}
}

// Replacing the tree with an earlier root brings its content back; the
// recomputed root equals the earlier one.
func TestReplaceWithEarlierRoot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	d := e.create(RootIno, "d", syscall.S_IFDIR|0o755)
	f := e.create(d, "f", syscall.S_IFREG|0o644)
	e.write(f, 0, bytes.Repeat([]byte("abc"), 1<<20))
	if _, err := e.tree.Create(ctx, RootIno, "l", NewNode{Mode: syscall.S_IFLNK | 0o777, Target: "d/f"}); err != nil {
		t.Fatal(err)
	}
	r1, err := e.tree.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.write(f, 5, []byte("changed"))
	e.create(RootIno, "new", syscall.S_IFREG|0o644)
	changed, err := e.tree.Replace(ctx, "", r1.CID)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) == 0 {
		t.Fatal("no changed names reported")
	}
	r2, err := e.tree.Root(ctx)
	if err != nil || !r2.CID.Equals(r1.CID) {
		t.Fatalf("root after replace %s, want %s (%v)", r2.CID, r1.CID, err)
	}
	if _, err := e.tree.Lookup(RootIno, "new"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("new file still there: %v", err)
	}
	e.close()
	e.open()
	dd, err := e.tree.Lookup(RootIno, "d")
	if err != nil {
		t.Fatal(err)
	}
	ff, err := e.tree.Lookup(dd.Ino, "f")
	if err != nil || !bytes.Equal(e.read(ff.Ino), bytes.Repeat([]byte("abc"), 1<<20)) {
		t.Fatalf("d/f after replace and reopen: %v", err)
	}
	// One path only.
	if _, err := e.tree.Replace(ctx, "d/f", r1.CID); err != nil { // a directory over the file
		t.Fatal(err)
	}
	if a, err := e.tree.Lookup(dd.Ino, "f"); err != nil || a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("d/f is not the restored directory: %+v %v", a, err)
	}
}

// Newer safetensors writers extend the file with ftruncate, then write it
// from the start: the stream still applies, and a hole left at the end
// reads as zeros.
func TestStreamAfterFtruncate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	f := e.create(RootIno, "f", syscall.S_IFREG|0o644)
	size := uint64(3 << 20)
	if _, err := e.tree.Setattr(ctx, f, SetAttr{Size: &size}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("w"), 2<<20)
	e.write(f, 0, data[:1<<20])
	e.tree.mu.Lock()
	streaming := e.tree.inodes[f].f.stream != nil
	e.tree.mu.Unlock()
	if !streaming {
		t.Fatal("writes after ftruncate did not stream")
	}
	e.write(f, 1<<20, data[1<<20:])
	want := append(append([]byte(nil), data...), make([]byte, 1<<20)...)
	if got := e.read(f); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(want))
	}
	e.close()
	e.open()
	if got := e.read(f); !bytes.Equal(got, want) {
		t.Fatal("after reopen the content differs")
	}
}
