package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A program that replaces a file by writing a temporary name and renaming it
// over the old one, without fsync, then crashes: the name holds the old
// content or the new one, never an empty or partial file.
func TestRenameOverWithoutFsyncSurvivesKill(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	old := randomBytes(41, 3<<20)
	mnt, stop := mountRepo(t, repo)
	writeFile(t, filepath.Join(mnt, "model.bin"), old)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		mnt, kill9 := mountRepoKill9(t, repo)
		fresh := randomBytes(uint64(100+round), 3<<20)
		tmp := filepath.Join(mnt, "model.bin.tmp")
		if err := os.WriteFile(tmp, fresh, 0o644); err != nil { // closed, not fsynced
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(mnt, "model.bin")); err != nil {
			t.Fatal(err)
		}
		kill9()
		if err := unmountDead(t, mnt); err != nil {
			t.Fatal(err)
		}
		mnt, stop := mountRepo(t, repo)
		got, err := os.ReadFile(filepath.Join(mnt, "model.bin"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, old) && !bytes.Equal(got, fresh) {
			t.Fatalf("round %d: model.bin holds %d bytes that are neither the old nor the new content", round, len(got))
		}
		old = got
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	must(t, repo, "verify")
}
