package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"
)

const cidXattr = "user.ipfrs.cid"

// getxattr reads one extended attribute of path (not following symlinks).
func getxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// cidOf reads user.ipfrs.cid of path and checks that it is a valid CID.
func cidOf(t *testing.T, path string) string {
	t.Helper()
	v, err := getxattr(path, cidXattr)
	if err != nil {
		t.Fatalf("%s of %s: %v", cidXattr, path, err)
	}
	c, err := cid.Decode(string(v))
	if err != nil {
		t.Fatalf("%s of %s is %q, not a CID: %v", cidXattr, path, v, err)
	}
	return c.String()
}

// TestMountPersistence writes a tree with every kind of metadata the mount
// promises to keep, unmounts, mounts again and finds all of it.
func TestMountPersistence(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	files := []struct {
		path  string
		data  []byte
		mode  os.FileMode
		mtime time.Time
	}{
		{"notes.txt", []byte("checkpoint notes\n"), 0o644, at("2001-02-03T04:05:06.123456789Z")},
		{"empty", nil, 0o600, at("1999-12-31T23:59:59Z")},
		{"run/train.sh", []byte("#!/bin/sh\npython3 train.py\n"), 0o755, at("2024-06-01T12:00:00.5Z")},
		{"run/ckpt/weights.bin", randomBytes(31, 3<<20+17), 0o444, at("2025-01-02T03:04:05.000000001Z")},
	}
	dirs := []struct {
		path  string
		mode  os.FileMode
		mtime time.Time
	}{
		{"run/private", 0o700, at("2010-10-10T10:10:10Z")},
		{"run/ckpt", 0o755, at("2020-02-20T20:20:20.2Z")},
	}
	symlinks := []struct{ name, target string }{
		{"latest", "run/ckpt/weights.bin"},
		{"run/dangling", "../no/such/file"},
	}
	const hardlink, linked = "run/ckpt/weights-link.bin", "run/ckpt/weights.bin"
	xattrs := []struct {
		path, name string
		value      []byte
	}{
		{"notes.txt", "user.comment", []byte("first run")},
		{"run/ckpt/weights.bin", "user.binary", []byte{0, 1, 2, 0xff, 0}},
		{"run", "user.project", []byte("ipfrs")},
	}
	withCID := []string{".", "notes.txt", "empty", "run", "run/ckpt", "run/ckpt/weights.bin"}

	mnt, stop := mountRepo(t, repo)
	for _, f := range files {
		writeFile(t, filepath.Join(mnt, f.path), f.data)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(mnt, d.path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range symlinks {
		if err := os.Symlink(s.target, filepath.Join(mnt, s.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(mnt, linked), filepath.Join(mnt, hardlink)); err != nil {
		t.Fatal(err)
	}
	for _, x := range xattrs {
		if err := unix.Setxattr(filepath.Join(mnt, x.path), x.name, x.value, 0); err != nil {
			t.Fatalf("setxattr %s %s: %v", x.path, x.name, err)
		}
	}
	// Modes and mtimes last: creating entries changes their folders' mtimes.
	for _, f := range files {
		p := filepath.Join(mnt, f.path)
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, f.mtime, f.mtime); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		p := filepath.Join(mnt, d.path)
		if err := os.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, d.mtime, d.mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Setxattr(filepath.Join(mnt, "notes.txt"), cidXattr, []byte("bafkqaaa"), 0); err == nil {
		t.Errorf("setting %s succeeded; it must be read-only", cidXattr)
	}
	cids := map[string]string{}
	for _, p := range withCID {
		cids[p] = cidOf(t, filepath.Join(mnt, p))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The CIDs name what the repo stores.
	if got := must(t, repo, "cat", cids["run/ckpt/weights.bin"]); got != string(files[3].data) {
		t.Errorf("cat of the CID of weights.bin (%s) gives other bytes", cids["run/ckpt/weights.bin"])
	}
	if got := must(t, repo, "cat", cids["."]+"/notes.txt"); got != string(files[0].data) {
		t.Errorf("cat <root CID>/notes.txt gives %q", got)
	}

	mnt, stop = mountRepo(t, repo)
	for _, p := range withCID {
		if got := cidOf(t, filepath.Join(mnt, p)); got != cids[p] {
			t.Errorf("%s: CID %s after remount, %s before", p, got, cids[p])
		}
	}
	for _, f := range files {
		p := filepath.Join(mnt, f.path)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
		} else if !bytes.Equal(got, f.data) {
			t.Errorf("%s: %d bytes differ from the %d written", f.path, len(got), len(f.data))
		}
		checkModeTime(t, p, f.mode, f.mtime)
	}
	for _, d := range dirs {
		p := filepath.Join(mnt, d.path)
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			t.Errorf("%s: not a folder (%v)", d.path, err)
			continue
		}
		checkModeTime(t, p, d.mode|os.ModeDir, d.mtime)
	}
	for _, s := range symlinks {
		if got, err := os.Readlink(filepath.Join(mnt, s.name)); err != nil || got != s.target {
			t.Errorf("%s: readlink %q, %v; want %q", s.name, got, err, s.target)
		}
	}
	var a, b syscall.Stat_t
	if err := errors.Join(syscall.Lstat(filepath.Join(mnt, linked), &a), syscall.Lstat(filepath.Join(mnt, hardlink), &b)); err != nil {
		t.Error(err)
	} else if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
		t.Errorf("%s and %s: inodes %d, %d with %d, %d links; want one inode with 2 links", linked, hardlink, a.Ino, b.Ino, a.Nlink, b.Nlink)
	}
	for _, x := range xattrs {
		if got, err := getxattr(filepath.Join(mnt, x.path), x.name); err != nil || !bytes.Equal(got, x.value) {
			t.Errorf("%s %s: %q, %v; want %q", x.path, x.name, got, err, x.value)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

func checkModeTime(t *testing.T, path string, mode os.FileMode, mtime time.Time) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	if !fi.ModTime().Equal(mtime) {
		t.Errorf("%s: mtime %v, want %v", path, fi.ModTime().UTC(), mtime)
	}
}

// TestMountStopsCleanly stops the daemon each way a user may and checks it
// exits 0, leaves no mount behind, and kept what was written (without fsync).
func TestMountStopsCleanly(t *testing.T) {
	ways := []struct {
		name string
		stop func(d *mountDaemon) error
	}{
		{"SIGTERM", func(d *mountDaemon) error { return d.cmd.Process.Signal(syscall.SIGTERM) }},
		{"SIGINT", func(d *mountDaemon) error { return d.cmd.Process.Signal(syscall.SIGINT) }},
		{"fusermount3 -u", func(d *mountDaemon) error {
			if out, err := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput(); err != nil {
				return errors.New(string(out))
			}
			return nil
		}},
	}
	for i, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			data := randomBytes(uint64(50+i), 1<<20+i)
			d := startMount(t, repo)
			writeFile(t, filepath.Join(d.mnt, "dir", "file.bin"), data)
			if err := d.stopBy(w.name, func() error { return w.stop(d) }); err != nil {
				t.Fatal(err)
			}
			mnt, stop := mountRepo(t, repo)
			if got, err := os.ReadFile(filepath.Join(mnt, "dir", "file.bin")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("after remount: %d bytes, %v; want the %d written", len(got), err, len(data))
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
