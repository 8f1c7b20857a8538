package worktree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var errInjected = errors.New("injected metadata write failure")

// failNth fails the nth metadata write after it is armed, once.
type failNth struct {
	mu       sync.Mutex
	n, calls int
	armed    bool
	fired    bool
}

func (f *failNth) hook() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return nil
	}
	f.calls++
	if f.calls == f.n {
		f.fired = true
		return errInjected
	}
	return nil
}

// faultScript is a sequence of namespace changes, each one a step; it
// covers create, link, unlink, rename, rename-over (of a target with
// another hard link too), replace, truncate, flush and fsync, setattr,
// xattrs, special files and rmdir.
var faultScript = []struct {
	name string
	do   func(ctx context.Context, e *env) error
}{
	{"mkdir", func(ctx context.Context, e *env) error { return e.mk(ctx, "", "d", syscall.S_IFDIR|0o755) }},
	{"create", func(ctx context.Context, e *env) error { return e.mk(ctx, "d", "a", syscall.S_IFREG|0o644) }},
	{"write+fsync", func(ctx context.Context, e *env) error {
		ino := e.ino("d/a")
		if _, err := e.tree.WriteAt(ctx, ino, []byte("first content"), 0); err != nil {
			return err
		}
		return e.tree.Fsync(ctx, ino)
	}},
	{"link", func(ctx context.Context, e *env) error {
		_, err := e.tree.Link(ctx, e.ino("d/a"), RootIno, "b")
		return err
	}},
	{"create c", func(ctx context.Context, e *env) error { return e.mk(ctx, "", "c", syscall.S_IFREG|0o600) }},
	{"write c", func(ctx context.Context, e *env) error {
		_, err := e.tree.WriteAt(ctx, e.ino("c"), []byte("replacement"), 0)
		return err
	}},
	{"unlink", func(ctx context.Context, e *env) error { return e.tree.Remove(ctx, RootIno, "b", false) }},
	{"rename", func(ctx context.Context, e *env) error {
		return e.tree.Rename(ctx, e.ino("d"), "a", RootIno, "a2", 0)
	}},
	{"link again", func(ctx context.Context, e *env) error {
		_, err := e.tree.Link(ctx, e.ino("a2"), e.ino("d"), "h")
		return err
	}},
	{"rename-over a hard-linked target", func(ctx context.Context, e *env) error {
		return e.tree.Rename(ctx, RootIno, "c", RootIno, "a2", 0)
	}},
	{"truncate", func(ctx context.Context, e *env) error {
		n := uint64(4)
		_, err := e.tree.Setattr(ctx, e.ino("a2"), SetAttr{Size: &n})
		return err
	}},
	{"flush", func(ctx context.Context, e *env) error { return e.tree.Flush(ctx, e.ino("a2")) }},
	{"sync", func(ctx context.Context, e *env) error { return e.tree.Sync(ctx) }},
	{"chmod", func(ctx context.Context, e *env) error {
		m := uint32(0o640)
		_, err := e.tree.Setattr(ctx, e.ino("d/h"), SetAttr{Mode: &m})
		return err
	}},
	{"setxattr", func(ctx context.Context, e *env) error {
		return e.tree.Setxattr(ctx, e.ino("d/h"), "user.k", []byte("v"), 0)
	}},
	{"mkfifo", func(ctx context.Context, e *env) error { return e.mk(ctx, "d", "p", syscall.S_IFIFO|0o644) }},
	{"symlink", func(ctx context.Context, e *env) error {
		_, err := e.tree.Create(ctx, RootIno, "s", NewNode{Mode: syscall.S_IFLNK | 0o777, Target: "d/h"})
		return err
	}},
	{"replace", func(ctx context.Context, e *env) error {
		c, err := e.tree.CID(ctx, e.ino("d"))
		if err != nil {
			return err
		}
		if err := e.mk(ctx, "", "e", syscall.S_IFDIR|0o755); err != nil {
			return err
		}
		_, err = e.tree.Replace(ctx, "e", c)
		return err
	}},
	{"replace over a hard-linked file", func(ctx context.Context, e *env) error {
		c, err := e.tree.CID(ctx, e.ino("a2"))
		if err != nil {
			return err
		}
		_, err = e.tree.Replace(ctx, "d/h", c)
		return err
	}},
	{"rename exchange", func(ctx context.Context, e *env) error {
		return e.tree.Rename(ctx, RootIno, "d", RootIno, "e", RenameExchange)
	}},
	{"rmdir", func(ctx context.Context, e *env) error {
		if err := e.mk(ctx, "", "empty", syscall.S_IFDIR|0o700); err != nil {
			return err
		}
		return e.tree.Remove(ctx, RootIno, "empty", true)
	}},
	{"replace the whole tree", func(ctx context.Context, e *env) error {
		c, err := e.tree.CID(ctx, e.ino("e"))
		if err != nil {
			return err
		}
		_, err = e.tree.Replace(ctx, "", c)
		return err
	}},
}

func (e *env) ino(p string) uint64 {
	e.t.Helper()
	ino, err := e.tree.LookupPath(p)
	if err != nil {
		e.t.Fatalf("%s: %v", p, err)
	}
	return ino
}

func (e *env) mk(ctx context.Context, dir, name string, mode uint32) error {
	_, err := e.tree.Create(ctx, e.ino(dir), name, NewNode{Mode: mode})
	return err
}

// dump describes the whole tree as a user sees it: every path with its
// inode, type, mode, links, size, times, content, target and xattrs.
func (e *env) dump() string {
	e.t.Helper()
	var b strings.Builder
	var walk func(dir uint64, prefix string)
	walk = func(dir uint64, prefix string) {
		ents, err := e.tree.Readdir(dir)
		if err != nil {
			e.t.Fatalf("readdir %s: %v", prefix, err)
		}
		for _, ent := range ents {
			p := prefix + "/" + ent.Name
			a, err := e.tree.Lookup(dir, ent.Name)
			if err != nil {
				e.t.Fatalf("lookup %s: %v", p, err)
			}
			fmt.Fprintf(&b, "%s ino=%d mode=%o nlink=%d uid=%d size=%d mtime=%d ctime=%d",
				p, a.Ino, a.Mode, a.Nlink, a.UID, a.Size, a.Mtime.UnixNano(), a.Ctime.UnixNano())
			switch a.Mode & syscall.S_IFMT {
			case syscall.S_IFREG:
				buf := make([]byte, a.Size)
				n, err := e.tree.ReadAt(context.Background(), a.Ino, buf, 0)
				if err != nil && !errors.Is(err, io.EOF) {
					e.t.Fatalf("read %s: %v", p, err)
				}
				fmt.Fprintf(&b, " content=%q", buf[:n])
			case syscall.S_IFLNK:
				tg, _ := e.tree.Readlink(a.Ino)
				fmt.Fprintf(&b, " target=%q", tg)
			}
			names, _ := e.tree.Listxattr(a.Ino)
			sort.Strings(names)
			for _, n := range names {
				if n == CIDXattr {
					continue
				}
				v, _ := e.tree.Getxattr(context.Background(), a.Ino, n)
				fmt.Fprintf(&b, " %s=%q", n, v)
			}
			b.WriteByte('\n')
			if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				walk(a.Ino, p)
			}
		}
	}
	a, _ := e.tree.Getattr(RootIno)
	fmt.Fprintf(&b, "/ nlink=%d mtime=%d\n", a.Nlink, a.Mtime.UnixNano())
	walk(RootIno, "")
	return b.String()
}

// TestMetadataWriteFailures fails the Nth metadata write, for every N
// through the script: the failing step returns the error, and the tree
// then equals what a remount shows. N grows until a run goes through with
// no failure, so every write of the script has failed once.
func TestMetadataWriteFailures(t *testing.T) {
	ctx := context.Background()
	for n := 1; ; n++ {
		var fired bool
		t.Run(fmt.Sprintf("write%d", n), func(t *testing.T) {
			f := &failNth{n: n}
			e := &env{t: t, dir: t.TempDir(), fault: f.hook, publishEvery: time.Hour}
			e.open()
			defer func() {
				if e.tree != nil {
					e.close()
				}
			}()
			f.armed = true
			for _, step := range faultScript {
				err := step.do(ctx, e)
				if err != nil && !errors.Is(err, errInjected) {
					t.Fatalf("%s: %v", step.name, err)
				}
				f.mu.Lock()
				f.armed = false
				fired = f.fired
				f.mu.Unlock()
				if !fired {
					f.mu.Lock()
					f.armed = true
					f.mu.Unlock()
					continue
				}
				if err == nil {
					// Only Replace's last clean-up may fail unreported:
					// what it leaves names nothing.
					t.Logf("write %d failed unreported in %s", n, step.name)
				}
				before := e.dump()
				e.close()
				e.open()
				if after := e.dump(); after != before {
					t.Fatalf("after a failed %s the tree differs from a remount:\n--- before\n%s--- after remount\n%s", step.name, before, after)
				}
				t.Logf("write %d failed in %s", n, step.name)
				return
			}
			f.mu.Lock()
			f.armed = false
			f.mu.Unlock()
		})
		if t.Failed() {
			return
		}
		if !fired {
			if n < 20 {
				t.Fatalf("the script made only %d metadata writes", n-1)
			}
			t.Logf("the script makes %d metadata writes", n-1)
			return
		}
	}
}

// TestConcurrentChanges runs creates, renames, unlinks, xattrs, replaces,
// DAG builds and readers side by side (for the race detector and the lock
// order), then checks the tree equals what a remount shows.
func TestConcurrentChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	src := e.create(RootIno, "src", syscall.S_IFDIR|0o755)
	for i := range 20 {
		f := e.create(src, fmt.Sprintf("f%d", i), syscall.S_IFREG|0o644)
		e.write(f, 0, []byte(fmt.Sprint(i)))
	}
	c, err := e.tree.CID(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		d := e.create(RootIno, fmt.Sprintf("w%d", w), syscall.S_IFDIR|0o755)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				name := fmt.Sprintf("f%d", i)
				a, err := e.tree.Create(ctx, d, name, NewNode{Mode: syscall.S_IFREG | 0o644})
				if err == nil {
					_, err = e.tree.WriteAt(ctx, a.Ino, []byte(name), 0)
				}
				if err == nil {
					err = e.tree.Setxattr(ctx, a.Ino, "user.i", []byte(name), 0)
				}
				if err == nil && i%2 == 0 {
					err = e.tree.Rename(ctx, d, name, d, name+"r", 0)
				}
				if err == nil && i%3 == 0 {
					err = e.tree.Remove(ctx, d, name, false)
					if errors.Is(err, ErrNotExist) { // renamed above
						err = e.tree.Remove(ctx, d, name+"r", false)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d step %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 10 {
			if _, err := e.tree.Replace(ctx, fmt.Sprintf("copy%d", i%3), c); err != nil {
				errs <- fmt.Errorf("replace: %w", err)
				return
			}
			if _, err := e.tree.Root(ctx); err != nil {
				errs <- fmt.Errorf("root: %w", err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			if _, err := e.tree.Readdir(RootIno); err != nil {
				errs <- err
				return
			}
			e.tree.Lookup(RootIno, "copy0")
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	before := e.dump()
	e.close()
	e.open()
	if after := e.dump(); after != before {
		t.Fatalf("the tree differs from a remount:\n--- before\n%s--- after remount\n%s", before, after)
	}
}
