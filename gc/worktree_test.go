package gc

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// The open working tree's files are roots: flushed but unpublished content,
// an unlinked file still open; a removed file's content is not.
func TestWorkingTreeRoots(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(filepath.Join(dir, "blocks"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tree, err := worktree.Open(ctx, s, worktree.Options{Layout: unixfs.DefaultLayout(), StagingDir: filepath.Join(dir, "staging"),
		PublishInterval: time.Hour}) // contents stay unpublished unless synced
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close(ctx)
	write := func(name string, data []byte) uint64 {
		t.Helper()
		a, err := tree.Create(ctx, worktree.RootIno, name, worktree.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tree.WriteAt(ctx, a.Ino, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := tree.Flush(ctx, a.Ino); err != nil { // flushed, not yet published
			t.Fatal(err)
		}
		return a.Ino
	}
	kept, openGone, removed := randomBytes(51, 3<<20), randomBytes(52, 3<<20), randomBytes(53, 3<<20)
	keptIno := write("kept", kept)
	openIno := write("open", openGone)
	write("removed", removed)
	if err := tree.Opened(openIno); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"open", "removed"} {
		if err := tree.Remove(ctx, worktree.RootIno, name, false); err != nil {
			t.Fatal(err)
		}
	}
	col := &Collector{Store: s, History: versions.New(s), Tree: tree.LiveRoots}
	rep, _ := run(t, col, Options{})
	if rep.Removed == 0 {
		t.Fatal("the removed file's blocks survived")
	}
	read := func(ino uint64, want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		if n, err := tree.ReadAt(ctx, ino, got, 0); err != nil || n != len(want) || !bytes.Equal(got, want) {
			t.Fatalf("inode %d after gc: %d bytes, %v", ino, n, err)
		}
	}
	read(keptIno, kept)
	read(openIno, openGone)
	if err := tree.Released(ctx, openIno); err != nil {
		t.Fatal(err)
	}
	if rep, _ := run(t, col, Options{}); rep.Removed == 0 {
		t.Fatal("the released unlinked file's blocks survived")
	}
	read(keptIno, kept)
}
