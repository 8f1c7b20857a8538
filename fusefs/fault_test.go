package fusefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var errInjected = errors.New("injected metadata write failure")

// failNth fails the nth metadata write after it is armed, once.
type failNth struct {
	mu           sync.Mutex
	n, calls     int
	armed, fired bool
}

func (f *failNth) hook() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return nil
	}
	if f.calls++; f.calls == f.n {
		f.fired = true
		return errInjected
	}
	return nil
}

func (f *failNth) arm(on bool) (fired bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = on
	return f.fired
}

// mountSteps are namespace changes made through the mount with ordinary
// system calls.
var mountSteps = []struct {
	name string
	do   func(m *testMount) error
}{
	{"mkdir", func(m *testMount) error { return os.Mkdir(m.path("d"), 0o755) }},
	{"create, write, fsync", func(m *testMount) error {
		f, err := os.Create(m.path("d/a"))
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteString("first content"); err != nil {
			return err
		}
		return f.Sync()
	}},
	{"link", func(m *testMount) error { return os.Link(m.path("d/a"), m.path("b")) }},
	{"create and close", func(m *testMount) error { return os.WriteFile(m.path("c"), []byte("replacement"), 0o600) }},
	{"unlink", func(m *testMount) error { return os.Remove(m.path("b")) }},
	{"rename", func(m *testMount) error { return os.Rename(m.path("d/a"), m.path("a2")) }},
	{"link again", func(m *testMount) error { return os.Link(m.path("a2"), m.path("d/h")) }},
	{"rename-over a hard-linked target", func(m *testMount) error { return os.Rename(m.path("c"), m.path("a2")) }},
	{"truncate", func(m *testMount) error { return os.Truncate(m.path("a2"), 4) }},
	{"chmod", func(m *testMount) error { return os.Chmod(m.path("d/h"), 0o640) }},
	{"setxattr", func(m *testMount) error { return unix.Setxattr(m.path("d/h"), "user.k", []byte("v"), 0) }},
	{"mkfifo", func(m *testMount) error { return unix.Mkfifo(m.path("d/p"), 0o644) }},
	{"symlink", func(m *testMount) error { return os.Symlink("d/h", m.path("s")) }},
	{"rmdir", func(m *testMount) error {
		if err := os.Mkdir(m.path("empty"), 0o700); err != nil {
			return err
		}
		return os.Remove(m.path("empty"))
	}},
	{"sync", func(m *testMount) error { return unix.Syncfs(m.fd()) }},
}

func (m *testMount) fd() int {
	f, err := os.Open(m.dir)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// dumpMount describes what the mount shows: every path with its type,
// mode, links, size, content, target and user xattrs.
func dumpMount(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s ino=%d mode=%o nlink=%d size=%d", rel, st.Ino, st.Mode, st.Nlink, st.Size)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " content=%q", c)
		case syscall.S_IFLNK:
			tg, _ := os.Readlink(p)
			fmt.Fprintf(&b, " target=%q", tg)
		}
		if v := make([]byte, 64); true {
			if n, err := unix.Lgetxattr(p, "user.k", v); err == nil {
				fmt.Fprintf(&b, " user.k=%q", v[:n])
			}
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestMountMetadataWriteFailures fails the Nth metadata write of the tree
// behind a mount, for every N through a script of system calls: the
// failing call gets an error, and the mount then shows what a remount
// shows. (worktree's TestMetadataWriteFailures checks times and Replace
// too.)
func TestMountMetadataWriteFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts once per metadata write")
	}
	for n := 1; ; n++ {
		var fired bool
		t.Run(fmt.Sprintf("write%d", n), func(t *testing.T) {
			f := &failNth{n: n}
			m := mountTree(t, withMetaFault(f.hook), withPublishInterval(time.Hour))
			f.arm(true)
			for _, step := range mountSteps {
				err := step.do(m)
				if fired = f.arm(false); !fired {
					if err != nil {
						t.Fatalf("%s: %v", step.name, err)
					}
					f.arm(true)
					continue
				}
				if err == nil {
					t.Logf("write %d failed in %s, unreported", n, step.name)
				}
				before := dumpMount(t, m.dir)
				m.remount()
				if after := dumpMount(t, m.dir); after != before {
					t.Fatalf("after a failed %s the mount differs from a remount:\n--- before\n%s--- after remount\n%s", step.name, before, after)
				}
				return
			}
			f.arm(false)
		})
		if t.Failed() || t.Skipped() {
			return
		}
		if !fired {
			if n < 10 {
				t.Fatalf("the script made only %d metadata writes", n-1)
			}
			t.Logf("the script makes %d metadata writes", n-1)
			return
		}
	}
}
