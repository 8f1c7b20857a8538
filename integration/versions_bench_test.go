package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// BenchmarkCommitAfterOneChange measures a commit of the working tree after
// one file of it changed, for trees of 1,000 and 10,000 files (100 files a
// directory): the cost should follow the depth of the change, not the tree.
//
//	go test ./integration -run XXX -bench CommitAfterOneChange
func BenchmarkCommitAfterOneChange(b *testing.B) {
	for _, files := range []int{1000, 10000} {
		b.Run(fmt.Sprint(files), func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			s, err := store.Open(filepath.Join(dir, "blocks"), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tree, err := worktree.Open(ctx, s, worktree.Options{Layout: unixfs.DefaultLayout(), StagingDir: filepath.Join(dir, "staging")})
			if err != nil {
				b.Fatal(err)
			}
			defer tree.Close(ctx)
			var inos []uint64
			for d := 0; d < files/100; d++ {
				a, err := tree.Create(ctx, worktree.RootIno, fmt.Sprintf("dir%03d", d), worktree.NewNode{Mode: syscall.S_IFDIR | 0o755})
				if err != nil {
					b.Fatal(err)
				}
				for f := range 100 {
					fa, err := tree.Create(ctx, a.Ino, fmt.Sprintf("f%03d", f), worktree.NewNode{Mode: syscall.S_IFREG | 0o644})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := tree.WriteAt(ctx, fa.Ino, []byte(fmt.Sprintf("%d/%d", d, f)), 0); err != nil {
						b.Fatal(err)
					}
					inos = append(inos, fa.Ino)
				}
			}
			h := versions.New(s)
			commit := func(msg string) {
				root, err := tree.Root(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := h.Create(ctx, versions.Commit{Tree: root.CID, Message: msg}, false); err != nil {
					b.Fatal(err)
				}
			}
			commit("initial")
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if _, err := tree.WriteAt(ctx, inos[i%len(inos)], []byte(fmt.Sprintf("change %d", i)), 0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				commit(fmt.Sprint(i))
			}
		})
	}
}
