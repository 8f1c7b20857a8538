package integration

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMountSpecialFiles: mkfifo, a unix socket bind and mknod work on the
// mounted tree and survive a remount; a commit leaves them out; a 256-byte
// name is ENAMETOOLONG.
func TestMountSpecialFiles(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	p := func(name string) string { return filepath.Join(mnt, name) }
	if err := unix.Mkfifo(p("fifo"), 0o640); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := unix.Mknod(p("zero"), syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 5))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	l, err := net.Listen("unix", p("sock"))
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	// The mount is nodev (as FUSE mounts are by default): a device node is
	// kept but cannot be opened.
	if _, err := os.Open(p("zero")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("open of a device node on a nodev mount: %v", err)
	}
	// The kernel does the pipe's I/O.
	go func() {
		if w, err := os.OpenFile(p("fifo"), os.O_WRONLY, 0); err == nil {
			w.Write([]byte("piped"))
			w.Close()
		}
	}()
	if b, err := os.ReadFile(p("fifo")); err != nil || string(b) != "piped" {
		t.Fatalf("read from the pipe: %q %v", b, err)
	}
	if _, err := os.Lstat(p(strings.Repeat("n", 256))); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("stat of a 256-byte name: %v", err)
	}
	writeFile(t, p("kept.txt"), []byte("x\n"))
	must(t, repo, "commit", "-m", "with special files")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	mnt, _ = mountRepo(t, repo)
	ents, err := os.ReadDir(filepath.Join(mnt, ".versions", "branches", "main"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "kept.txt" {
		t.Fatalf("the commit holds %q, want only kept.txt", names)
	}
	want := map[string]uint32{"fifo": syscall.S_IFIFO, "zero": syscall.S_IFCHR, "sock": syscall.S_IFSOCK}
	for name, typ := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, name), &st); err != nil {
			t.Fatalf("%s after remount: %v", name, err)
		}
		if st.Mode&syscall.S_IFMT != typ || name == "zero" && st.Rdev != unix.Mkdev(1, 5) {
			t.Errorf("%s after remount: mode %o rdev %x", name, st.Mode, st.Rdev)
		}
	}
}
