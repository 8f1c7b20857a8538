package worktree

import (
	"context"
	"syscall"
	"testing"
)

// The tree's usage counts files once (hard links too) and agrees with what
// the records say after the tree is closed.
func TestUsage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	dir := e.create(RootIno, "d", syscall.S_IFDIR|0o755)
	a := e.create(dir, "a", syscall.S_IFREG|0o644)
	e.write(a, 0, make([]byte, 1000))
	b := e.create(RootIno, "b", syscall.S_IFREG|0o644)
	e.write(b, 0, []byte("hello"))
	if _, err := e.tree.Link(ctx, a, RootIno, "a-link"); err != nil {
		t.Fatal(err)
	}
	e.create(RootIno, "gone", syscall.S_IFREG|0o644)
	if err := e.tree.Remove(ctx, RootIno, "gone", false); err != nil {
		t.Fatal(err)
	}
	want := Usage{Files: 2, Bytes: 1005}
	if got := e.tree.Usage(); got != want {
		t.Fatalf("mounted usage %+v, want %+v", got, want)
	}
	e.close()
	e.open()
	if got, err := StoredUsage(ctx, e.s); err != nil || got != want {
		t.Fatalf("stored usage %+v %v, want %+v", got, err, want)
	}
}
