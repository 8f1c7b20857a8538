package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// testMount is the working tree of a temporary repo mounted in-process.
type testMount struct {
	t      *testing.T
	repo   string
	dir    string
	s      *store.Badger
	tree   *worktree.Tree
	server *fuse.Server
	opts   worktree.Options
}

type mountOpt func(*worktree.Options)

func withMetaFault(f func() error) mountOpt {
	return func(o *worktree.Options) { o.MetaFault = f }
}

func withPublishInterval(d time.Duration) mountOpt {
	return func(o *worktree.Options) { o.PublishInterval = d }
}

// mountTree mounts a fresh repo in a temporary directory; it skips the
// test where this machine cannot mount FUSE file systems.
func mountTree(t *testing.T, opts ...mountOpt) *testMount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	m := &testMount{t: t, repo: t.TempDir(), dir: t.TempDir()}
	for _, o := range opts {
		o(&m.opts)
	}
	m.mount()
	t.Cleanup(func() {
		if m.server != nil {
			m.unmount()
		}
	})
	return m
}

func (m *testMount) mount() {
	m.t.Helper()
	s, err := store.Open(filepath.Join(m.repo, "blocks"), store.Options{})
	if err != nil {
		m.t.Fatal(err)
	}
	o := m.opts
	o.Layout, o.StagingDir = unixfs.DefaultLayout(), filepath.Join(m.repo, "staging")
	tree, err := worktree.Open(context.Background(), s, o)
	if err != nil {
		s.Close()
		m.t.Fatal(err)
	}
	server, err := Mount(m.dir, tree, MountOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tree.Close(context.Background())
		s.Close()
		if errors.Is(err, syscall.EPERM) || strings.Contains(err.Error(), "permission") {
			m.t.Skipf("cannot mount here: %v", err)
		}
		m.t.Fatal(err)
	}
	m.s, m.tree, m.server = s, tree, server
}

func (m *testMount) unmount() {
	m.t.Helper()
	if err := m.server.Unmount(); err != nil {
		m.t.Errorf("unmount: %v", err)
	}
	m.server.Wait()
	if err := m.tree.Close(context.Background()); err != nil {
		m.t.Errorf("close tree: %v", err)
	}
	if err := m.s.Close(); err != nil {
		m.t.Errorf("close store: %v", err)
	}
	m.server = nil
}

func (m *testMount) remount() {
	m.t.Helper()
	m.unmount()
	m.mount()
}

func (m *testMount) path(p string) string { return filepath.Join(m.dir, p) }

func TestSpecialFilesSurviveRemount(t *testing.T) {
	m := mountTree(t)
	if err := unix.Mkfifo(m.path("fifo"), 0o640); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := unix.Mknod(m.path("null"), syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	l, err := net.Listen("unix", m.path("sock"))
	if err != nil {
		t.Fatalf("bind a unix socket: %v", err)
	}
	defer l.Close()
	l.(*net.UnixListener).SetUnlinkOnClose(false) // the name must outlive it
	// The kernel does the pipe's I/O: a writer and a reader meet.
	done := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(m.path("fifo"), os.O_WRONLY, 0)
		if err == nil {
			_, err = w.Write([]byte("through the pipe"))
			w.Close()
		}
		done <- err
	}()
	r, err := os.Open(m.path("fifo"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, _ := r.Read(got)
	r.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got[:n]) != "through the pipe" {
		t.Fatalf("read from the pipe %q", got[:n])
	}
	// And the socket answers.
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", m.path("sock"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	n, _ = c.Read(got)
	c.Close()
	if string(got[:n]) != "hi" {
		t.Fatalf("socket gave %q", got[:n])
	}
	l.Close()

	m.remount()
	tests := []struct {
		name string
		mode uint32
		rdev uint64
	}{
		{"fifo", syscall.S_IFIFO | 0o640, 0},
		{"null", syscall.S_IFCHR | 0o600, unix.Mkdev(1, 3)},
		{"sock", syscall.S_IFSOCK, 0},
	}
	for _, tt := range tests {
		var st unix.Stat_t
		if err := unix.Lstat(m.path(tt.name), &st); err != nil {
			t.Fatalf("%s after remount: %v", tt.name, err)
		}
		if st.Mode&syscall.S_IFMT != tt.mode&syscall.S_IFMT || tt.mode&0o7777 != 0 && st.Mode != tt.mode || st.Rdev != tt.rdev {
			t.Errorf("%s after remount: mode %o rdev %x, want %o %x", tt.name, st.Mode, st.Rdev, tt.mode, tt.rdev)
		}
	}
	// Commits leave them out: the tree's DAG lists none of them.
	root, err := m.tree.Root(context.Background())
	if err != nil {
		t.Fatalf("root with special files: %v", err)
	}
	ents, err := unixfs.ReadDir(context.Background(), m.s, root.CID)
	if err != nil || len(ents) != 0 {
		t.Fatalf("DAG of a tree of special files: %v %v", ents, err)
	}
}

func TestLookupErrors(t *testing.T) {
	m := mountTree(t)
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		path string
		want error
	}{
		{"256-byte name", long, syscall.ENAMETOOLONG},
		{"255-byte name that is not there", long[:255], syscall.ENOENT},
		{"below a 256-byte name", long + "/f", syscall.ENAMETOOLONG},
	}
	for _, tt := range tests {
		if _, err := os.Lstat(m.path(tt.path)); !errors.Is(err, tt.want) {
			t.Errorf("%s: stat gave %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := os.WriteFile(m.path(long), nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("create of a 256-byte name: %v", err)
	}
}

func TestRenameOverHardLinkedTargetChangesItsCtime(t *testing.T) {
	m := mountTree(t)
	for _, f := range []string{"src", "dst"} {
		if err := os.WriteFile(m.path(f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(m.path("dst"), m.path("other")); err != nil {
		t.Fatal(err)
	}
	var before, after unix.Stat_t
	if err := unix.Stat(m.path("other"), &before); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // so that a new ctime differs
	if err := os.Rename(m.path("src"), m.path("dst")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(m.path("other"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Nlink != 1 || after.Ctim == before.Ctim {
		t.Fatalf("other link of the replaced target: nlink %d, ctime %v then %v", after.Nlink, before.Ctim, after.Ctim)
	}
	if b, _ := os.ReadFile(m.path("dst")); string(b) != "src" {
		t.Fatalf("dst holds %q", b)
	}
}

// TestTensorsOfALargeModel lists and looks up the .tensors view of a
// safetensors file with many tensors: every name once, in order, each
// found (the listing with READDIRPLUS looks up every entry).
func TestTensorsOfALargeModel(t *testing.T) {
	const n = 20000
	m := mountTree(t)
	ts := make([]safetensors.WriteTensor, n)
	for i := range ts {
		ts[i] = safetensors.WriteTensor{Name: fmt.Sprintf("layer.%05d.w", i), DType: safetensors.F32, Shape: []int64{1}, Data: []byte{0, 0, 0x80, 0x3f}}
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("m.safetensors"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := m.path(".tensors/m.safetensors")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2*n+1 { // .safetensors and .npy of each, header.json
		t.Fatalf("%d entries, want %d", len(ents), 2*n+1)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i-1].Name() >= ents[i].Name() {
			t.Fatalf("entries out of order: %q then %q", ents[i-1].Name(), ents[i].Name())
		}
	}
	// rewinddir in the middle of a listing starts it again.
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if part, err := d.ReadDir(1000); err != nil || len(part) != 1000 {
		t.Fatalf("first 1000 entries: %d %v", len(part), err)
	}
	if _, err := d.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if all, err := d.ReadDir(-1); err != nil || len(all) != 2*n+1 {
		t.Fatalf("after rewinddir: %d entries, %v", len(all), err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "layer.12345.w.npy"))
	if err != nil || !bytes.HasSuffix(b, []byte{0, 0, 0x80, 0x3f}) {
		t.Fatalf("a tensor as .npy: %v %x", err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "layer.99999.w.npy")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a tensor that is not there: %v", err)
	}
}
