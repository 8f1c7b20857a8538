package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

func openRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// writeFile writes data as name in the root of r's working tree.
func writeFile(t *testing.T, r *Repo, name string, data []byte) {
	t.Helper()
	if err := putFile(r, name, data); err != nil {
		t.Fatal(err)
	}
}

func putFile(r *Repo, name string, data []byte) error {
	ctx := context.Background()
	tree, err := r.Tree(ctx)
	if err != nil {
		return err
	}
	var ino uint64
	if a, err := tree.Lookup(worktree.RootIno, name); err == nil {
		ino = a.Ino
		if _, err := tree.Setattr(ctx, ino, worktree.SetAttr{Size: new(uint64)}); err != nil {
			return err
		}
	} else {
		a, err := tree.Create(ctx, worktree.RootIno, name, worktree.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			return err
		}
		ino = a.Ino
	}
	if _, err := tree.WriteAt(ctx, ino, data, 0); err != nil {
		return err
	}
	return tree.Flush(ctx, ino)
}

// logSet is every commit reachable from HEAD.
func logSet(t *testing.T, r *Repo) map[cid.Cid]bool {
	t.Helper()
	ctx := context.Background()
	_, head, err := r.History().Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[cid.Cid]bool{}
	err = r.History().Log(ctx, head, func(c versions.Commit) error {
		seen[c.CID] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func TestCheckoutOperations(t *testing.T) {
	ctx := context.Background()
	r := openRepo(t)
	var hooked []string
	r.AfterCommit(func(_ context.Context, c versions.Commit) { hooked = append(hooked, c.Message) })
	writeFile(t, r, "a", []byte("one"))
	c1, err := r.Commit(ctx, versions.Commit{Message: "one"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit(ctx, versions.Commit{Message: "again"}, false); !errors.Is(err, versions.ErrNothingToCommit) {
		t.Fatalf("commit of an unchanged tree: %v, want ErrNothingToCommit", err)
	}
	if err := r.SetRef(ctx, "branch", "side", "HEAD"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, r, "a", []byte("two"))
	c2, err := r.Commit(ctx, versions.Commit{Message: "two"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Parents[0].Equals(c1.CID) {
		t.Fatalf("parent of the second commit is %v, want %s", c2.Parents, c1.CID)
	}

	writeFile(t, r, "a", []byte("dirty"))
	for _, tc := range []struct {
		name string
		do   func() error
		want error
	}{
		{"switch with changes", func() error { _, err := r.Switch(ctx, "side", false); return err }, ErrDirty},
		{"merge with changes", func() error { _, err := r.Merge(ctx, "main"); return err }, versions.ErrUnknownRef},
		{"switch to no branch", func() error { _, err := r.Switch(ctx, "nope", true); return err }, versions.ErrUnknownRef},
		{"tag with a bad name", func() error { _, err := r.TagTree(ctx, "a/b", ""); return err }, versions.ErrBadName},
	} {
		if err := tc.do(); tc.name == "merge with changes" {
			// main is HEAD's branch: already up to date, whatever the tree.
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		} else if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	if _, err := r.Switch(ctx, "side", true); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r, "a"); got != "one" {
		t.Fatalf("after switch to side: a = %q, want one", got)
	}
	res, err := r.Merge(ctx, "main")
	if err != nil || res.UpToDate || res.Branch != "side" || !res.To.Equals(c2.CID) {
		t.Fatalf("fast-forward side to main: %+v, %v", res, err)
	}
	if got := readFile(t, r, "a"); got != "two" {
		t.Fatalf("after merge: a = %q, want two", got)
	}
	if err := r.Reset(ctx, c1.CID.String()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r, "a"); got != "one" {
		t.Fatalf("after reset: a = %q, want one", got)
	}
	writeFile(t, r, "a", []byte("three"))
	if err := r.Restore(ctx, "main", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r, "a"); got != "two" {
		t.Fatalf("after restore from main: a = %q, want two", got)
	}
	// Tagging a changed tree commits it first; an unchanged one tags HEAD.
	tagged, err := r.TagTree(ctx, "v1", "me")
	if err != nil {
		t.Fatal(err)
	}
	_, head, _ := r.History().Head(ctx)
	if !tagged.Equals(head) || tagged.Equals(c1.CID) {
		t.Fatalf("tag v1 = %s, HEAD = %s: want a new commit at HEAD", tagged, head)
	}
	again, err := r.TagTree(ctx, "v2", "me")
	if err != nil || !again.Equals(tagged) {
		t.Fatalf("tag v2 of the unchanged tree = %s, %v; want %s", again, err, tagged)
	}
	if _, err := r.TagTree(ctx, "v2", "me"); !errors.Is(err, versions.ErrExists) {
		t.Fatalf("tag v2 again: %v, want ErrExists", err)
	}
	// AfterCommit saw every commit made, and nothing else.
	if want := []string{"one", "two", "tag v1"}; !slices.Equal(hooked, want) {
		t.Fatalf("AfterCommit saw %q, want %q", hooked, want)
	}
}

func readFile(t *testing.T, r *Repo, name string) string {
	t.Helper()
	ctx := context.Background()
	tree, err := r.Tree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tree.Lookup(worktree.RootIno, name)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := tree.ReadAt(ctx, a.Ino, b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return string(b[:n])
}

// TestConcurrentHistory: commits, tags, switches back and forth and
// autocommit every 10 ms, with writers changing the tree, all at once:
// none fails and every commit that returned is in the log of its branch.
func TestConcurrentHistory(t *testing.T) {
	ctx := context.Background()
	r := openRepo(t)
	writeFile(t, r, "seed", []byte("seed"))
	first, err := r.Commit(ctx, versions.Commit{Message: "first"}, false)
	if err != nil {
		t.Fatal(err)
	}
	r.StartAutocommit(10 * time.Millisecond)
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := putFile(r, fmt.Sprintf("w%d-%d", w, i%4), []byte(fmt.Sprint(i))); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var committed []cid.Cid
	var errs []error
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c cid.Cid
			var err error
			switch i % 3 {
			case 0:
				var cm versions.Commit
				cm, err = r.Commit(ctx, versions.Commit{Message: fmt.Sprint("commit ", i)}, true)
				c = cm.CID
			case 1:
				c, err = r.TagTree(ctx, fmt.Sprint("t", i), "")
			case 2:
				err = r.SetRef(ctx, "tag", fmt.Sprint("h", i), "HEAD")
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%d: %w", i, err))
			} else if c.Defined() {
				committed = append(committed, c)
			}
		}()
	}
	wg.Wait()
	close(stop)
	writers.Wait()
	r.StopBackground()
	if len(errs) > 0 {
		t.Fatalf("%d of 32 failed: %v", len(errs), errors.Join(errs...))
	}
	inLog := logSet(t, r)
	if !inLog[first.CID] {
		t.Fatal("the first commit is not in the log")
	}
	for _, c := range committed {
		if !inLog[c] {
			t.Errorf("commit %s returned success but is not in the log", c)
		}
	}
	tags, err := r.History().Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range tags {
		if !inLog[c] {
			t.Errorf("tag %s names %s, which is not in the log", name, c)
		}
	}
	if len(tags) != 21 {
		t.Errorf("%d tags, want 21", len(tags))
	}
}

// TestCloseJoinsBackgroundFirst: Close waits for the repo's goroutines
// before it closes the store they use.
func TestCloseJoinsBackgroundFirst(t *testing.T) {
	r, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	r.Go(func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // Close must still wait
		_, err := r.Store().GetMeta(context.Background(), "absent")
		if errors.Is(err, store.ErrNotFound) {
			err = nil
		}
		got <- err
	})
	order := make(chan string, 2)
	r.OnClose("first", func() error { order <- "first"; return nil })
	r.OnClose("second", func() error { order <- "second"; return nil })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the store read by a background goroutine during Close: %v", err)
	}
	if a, b := <-order, <-order; a != "second" || b != "first" {
		t.Fatalf("closed %s then %s, want the reverse of the order of opening", a, b)
	}
	if _, err := r.Tree(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Tree after Close: %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestControlSocket: a forwarded command gets its output and exit status;
// one in flight when the repo closes is cancelled, still reports its exit
// status, and Close waits for it.
func TestControlSocket(t *testing.T) {
	r, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	started := make(chan struct{})
	finished := make(chan struct{})
	err = r.ServeControl(func(ctx context.Context, req Request, stdout, stderr io.Writer) int {
		switch req.Args[0] {
		case "echo":
			fmt.Fprint(stdout, strings.Join(req.Args[1:], " "))
			fmt.Fprint(stderr, req.Cwd)
			return 0
		case "panic":
			var m map[string]int
			m["x"] = 1 // a bug in a command
			return 0
		case "block":
			close(started)
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond)
			close(finished)
			fmt.Fprint(stderr, "cancelled")
			return 7
		}
		return 2
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out, errb strings.Builder
	done, err := Forward(ctx, r.Dir(), Request{Args: []string{"echo", "a", "b"}, Cwd: "/x"}, &out, &errb)
	if !done || err != nil || out.String() != "a b" || errb.String() != "/x" {
		t.Fatalf("echo: done %v, err %v, stdout %q, stderr %q", done, err, out.String(), errb.String())
	}
	_, err = Forward(ctx, r.Dir(), Request{Args: []string{"other"}}, io.Discard, io.Discard)
	if code, ok := errors.AsType[ErrExit](err); !ok || code != 2 {
		t.Fatalf("failing command: %v, want exit status 2", err)
	}

	var perr strings.Builder
	_, err = Forward(ctx, r.Dir(), Request{Args: []string{"panic"}}, io.Discard, &perr)
	if !errors.Is(err, ErrExit(exitPanic)) || !strings.Contains(perr.String(), "internal error") {
		t.Fatalf("command that panicked: %v (stderr %q), want exit status %d and an internal error", err, perr.String(), exitPanic)
	}
	if done, err := Forward(ctx, r.Dir(), Request{Args: []string{"echo", "still"}}, io.Discard, io.Discard); !done || err != nil {
		t.Fatalf("after a command panicked: done %v, %v; want the daemon still answering", done, err)
	}

	res := make(chan error, 1)
	var blockErr strings.Builder
	go func() {
		_, err := Forward(ctx, r.Dir(), Request{Args: []string{"block"}}, io.Discard, &blockErr)
		res <- err
	}()
	<-started
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Close returned before the command in flight finished")
	}
	if err := <-res; !errors.Is(err, ErrExit(7)) || blockErr.String() != "cancelled" {
		t.Fatalf("command cancelled by Close: %v (stderr %q), want exit status 7", err, blockErr.String())
	}
	if done, _ := Forward(ctx, r.Dir(), Request{Args: []string{"echo"}}, io.Discard, io.Discard); done {
		t.Fatal("the control socket still answers after Close")
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), SocketName)); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

// requireFUSE skips where the kernel offers no FUSE (fails in CI).
func requireFUSE(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	if err == nil && os.Geteuid() != 0 {
		_, err = exec.LookPath("fusermount3")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("FUSE is not available: %v", err)
		}
		t.Skipf("FUSE is not available: %v", err)
	}
}

// TestConcurrentHistoryMounted is TestConcurrentHistory through a FUSE
// mount: tags made by mkdir .versions/tags/NAME, writers writing files of
// the mount, commits and tags of the repo, autocommit every 10 ms.
func TestConcurrentHistoryMounted(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	r := openRepo(t)
	mnt := t.TempDir()
	m, err := r.Mount(ctx, mnt, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mctx, unmount := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() {
		defer close(served)
		m.Wait(mctx)
	}()
	t.Cleanup(func() {
		unmount()
		<-served
	})
	if err := os.WriteFile(filepath.Join(mnt, "seed"), []byte("seed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit(ctx, versions.Commit{Message: "first"}, false); err != nil {
		t.Fatal(err)
	}
	r.StartAutocommit(10 * time.Millisecond)
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := filepath.Join(mnt, fmt.Sprintf("w%d-%d", w, i%4))
				if err := os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var committed []cid.Cid
	var errs []error
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			var cm versions.Commit
			switch i % 3 {
			case 0:
				cm, err = r.Commit(ctx, versions.Commit{Message: fmt.Sprint("commit ", i)}, true)
			case 1:
				err = os.Mkdir(filepath.Join(mnt, ".versions", "tags", fmt.Sprint("m", i)), 0o755)
			case 2:
				err = r.SetRef(ctx, "tag", fmt.Sprint("h", i), "HEAD")
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%d: %w", i, err))
			} else if cm.CID.Defined() {
				committed = append(committed, cm.CID)
			}
		}()
	}
	wg.Wait()
	close(stop)
	writers.Wait()
	r.StopBackground()
	if len(errs) > 0 {
		t.Fatalf("%d of 32 failed: %v", len(errs), errors.Join(errs...))
	}
	inLog := logSet(t, r)
	for _, c := range committed {
		if !inLog[c] {
			t.Errorf("commit %s returned success but is not in the log", c)
		}
	}
	tags, err := r.History().Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range tags {
		if !inLog[c] {
			t.Errorf("tag %s names %s, which is not in the log", name, c)
		}
	}
	if len(tags) != 21 {
		t.Errorf("%d tags, want 21", len(tags))
	}
	// The tags made by mkdir are directories of the mount.
	ents, err := os.ReadDir(filepath.Join(mnt, ".versions", "tags"))
	if err != nil || len(ents) != 21 {
		t.Errorf("ls .versions/tags: %d entries, %v; want 21", len(ents), err)
	}
}

// TestCloseUnmounts: closing a repo whose mount nobody waited for (a
// daemon failing after mounting) unmounts it before closing the tree.
func TestCloseUnmounts(t *testing.T) {
	requireFUSE(t)
	r, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if _, err := r.Mount(context.Background(), mnt, MountOptions{}); err != nil {
		r.Close()
		t.Fatal(err)
	}
	var before, after syscall.Statfs_t
	if err := syscall.Statfs(mnt, &before); err != nil || before.Type != 0x65735546 { // FUSE_SUPER_MAGIC
		r.Close()
		t.Fatalf("statfs of the mount: type %#x, %v", before.Type, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(mnt, &after); err != nil || after.Type == before.Type {
		t.Fatalf("after Close: statfs type %#x, %v; want the directory under the mount", after.Type, err)
	}
}
