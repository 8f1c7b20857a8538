package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/store"
)

// History as a user drives it: commit, modify, commit, read the old bytes
// under .versions, copy them out, fail to write there; branches, switch,
// tags (also by mkdir), diff, restore, reset and merge; all of it mounted,
// and again unmounted, and it survives a remount.
func TestVersionsMounted(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	v1 := randomBytes(31, 2<<20+3)
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), v1)
	writeFile(t, filepath.Join(mnt, "notes.txt"), []byte("one\n"))
	first := strings.TrimSpace(must(t, repo, "commit", "-m", "first"))
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), randomBytes(32, 2<<20+3))
	second := strings.TrimSpace(must(t, repo, "commit", "-m", "second"))
	if r := ipfrs(t, repo, "commit", "-m", "again"); r.err == nil || !strings.Contains(r.stderr, "nothing to commit") {
		t.Fatalf("commit of an unchanged tree: %v %q", r.err, r.stderr)
	}

	old := filepath.Join(mnt, ".versions", "commits", first)
	got, err := os.ReadFile(filepath.Join(old, "ckpt", "model.bin"))
	if err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("old bytes under .versions: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if b, err := exec.Command("cp", "-a", old, out).CombinedOutput(); err != nil {
		t.Fatalf("cp -a out of .versions: %v %s", err, b)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "ckpt", "model.bin")); !bytes.Equal(got, v1) {
		t.Fatal("cp -a copied other bytes")
	}
	err = os.WriteFile(filepath.Join(old, "notes.txt"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write under .versions: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(old, "new"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir under .versions: %v, want EROFS", err)
	}
	head, _ := os.ReadFile(filepath.Join(mnt, ".versions", "HEAD"))
	if string(head) != "main "+second+"\n" {
		t.Fatalf(".versions/HEAD = %q", head)
	}
	log, _ := os.ReadFile(filepath.Join(mnt, ".versions", "log"))
	if lines := strings.Split(strings.TrimSpace(string(log)), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], second) {
		t.Fatalf(".versions/log:\n%s", log)
	}
	// .versions is hidden from listings and from the tree's own DAG.
	ents, _ := os.ReadDir(mnt)
	for _, e := range ents {
		if e.Name() == ".versions" {
			t.Fatal(".versions is listed")
		}
	}

	// A snapshot with a plain mkdir commits the changed tree first.
	writeFile(t, filepath.Join(mnt, "notes.txt"), []byte("two\n"))
	if err := os.Mkdir(filepath.Join(mnt, ".versions", "tags", "step-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, ".versions", "tags", "step-3", "notes.txt")); string(got) != "two\n" {
		t.Fatalf("tag made by mkdir holds %q", got)
	}
	if !strings.Contains(must(t, repo, "tag"), "step-3 ") {
		t.Fatal("tag missing from `tag`")
	}

	// Branch, switch, diverge, refuse the merge; fast-forward another.
	must(t, repo, "branch", "exp")
	must(t, repo, "switch", "exp")
	writeFile(t, filepath.Join(mnt, "exp.txt"), []byte("experiment\n"))
	must(t, repo, "commit", "-m", "on exp")
	must(t, repo, "switch", "main")
	if _, err := os.Stat(filepath.Join(mnt, "exp.txt")); !os.IsNotExist(err) {
		t.Fatalf("exp.txt visible on main: %v", err)
	}
	if diff := must(t, repo, "diff", "main", "exp"); diff != "A exp.txt (11 bytes)\n" {
		t.Fatalf("diff main exp = %q", diff)
	}
	must(t, repo, "merge", "exp") // main has not moved: fast-forward
	if got, _ := os.ReadFile(filepath.Join(mnt, "exp.txt")); string(got) != "experiment\n" {
		t.Fatalf("after fast-forward: %q", got)
	}
	must(t, repo, "branch", "side", "HEAD~1")
	writeFile(t, filepath.Join(mnt, "main-only.txt"), []byte("m\n"))
	must(t, repo, "commit", "-m", "main moves")
	must(t, repo, "switch", "side")
	writeFile(t, filepath.Join(mnt, "side-only.txt"), []byte("s\n"))
	must(t, repo, "commit", "-m", "side moves")
	if r := ipfrs(t, repo, "merge", "main"); r.err == nil || !strings.Contains(r.stderr, "diverged") {
		t.Fatalf("merge of diverged branches: %v %q", r.err, r.stderr)
	}
	if r := ipfrs(t, repo, "switch", "main"); r.err != nil {
		t.Fatal(r.stderr)
	}

	// Uncommitted changes block a switch; restore and reset bring content back.
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), []byte("broken"))
	if r := ipfrs(t, repo, "switch", "side"); r.err == nil || !strings.Contains(r.stderr, "uncommitted") {
		t.Fatalf("switch with changes: %v %q", r.err, r.stderr)
	}
	must(t, repo, "restore", "--source", first, "ckpt/model.bin")
	if got, _ := os.ReadFile(filepath.Join(mnt, "ckpt", "model.bin")); !bytes.Equal(got, v1) {
		t.Fatal("restore did not bring the first version back")
	}
	must(t, repo, "reset", "--hard", "HEAD")
	if r := ipfrs(t, repo, "diff"); r.err != nil || r.stdout != "" {
		t.Fatalf("diff after reset: %v %q", r.err, r.stdout)
	}
	mainHead := strings.Fields(must(t, repo, "log", "-n", "1"))[0]
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Unmounted, the same history answers, and commands still work.
	if got := strings.Fields(must(t, repo, "log", "-n", "1"))[0]; got != mainHead {
		t.Fatalf("log after unmount: %s, want %s", got, mainHead)
	}
	must(t, repo, "switch", "side")
	must(t, repo, "tag", "offline")
	if r := ipfrs(t, repo, "tag", "../x"); r.err == nil || !strings.Contains(r.stderr, "invalid") {
		t.Fatalf("bad tag name: %v %q", r.err, r.stderr)
	}
	if r := ipfrs(t, repo, "show", "no-such-ref"); r.err == nil || !strings.Contains(r.stderr, "unknown revision") {
		t.Fatalf("unknown ref: %v %q", r.err, r.stderr)
	}
	mnt, stop = mountRepo(t, repo)
	if got, _ := os.ReadFile(filepath.Join(mnt, "side-only.txt")); string(got) != "s\n" {
		t.Fatalf("side branch after remount: %q", got)
	}
	if _, err := os.Stat(filepath.Join(mnt, ".versions", "tags", "offline", "side-only.txt")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, ".versions", "commits", first, "ckpt", "model.bin")); !bytes.Equal(got, v1) {
		t.Fatal("first commit after remount differs")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// A commit while another process holds the unmounted repo gets a clear
// error, and so do refs that do not resolve.
func TestVersionsBadInput(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	must(t, repo, "stat") // create the repo
	held, err := store.Open(filepath.Join(repo, "blocks"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := ipfrs(t, repo, "--lock-wait", "200ms", "commit", "-m", "locked out")
	if r.err == nil || !strings.Contains(r.stderr, "in use by another process") {
		t.Fatalf("commit on a locked repo: %v %q", r.err, r.stderr)
	}
	// Within --lock-wait, a command waits for the other process.
	go func() {
		time.Sleep(500 * time.Millisecond)
		held.Close()
	}()
	must(t, repo, "gc", "-q")
	for _, args := range [][]string{
		{"log", "main"}, // no commit yet
		{"show", "bafyrei"},
		{"diff", "nope"},
		{"switch", "nope"},
		{"branch", "a/b"},
		{"tag", ".."},
	} {
		if r := ipfrs(t, repo, args...); r.err == nil || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: want one error line, got %v %q", args, r.err, r.stderr)
		}
	}
}
