package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeUserTree writes the kind of tree people copy around: files of several
// sizes (empty to 3 MiB), nested folders, symlinks (relative, to a folder,
// dangling), private, executable and read-only files and a hard link.
func makeUserTree(t *testing.T, root string) {
	t.Helper()
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"empty", nil, 0o644},
		{"hello.txt", []byte("hello world\n"), 0o644},
		{"page.bin", randomBytes(21, 4096), 0o644},
		{"odd.bin", randomBytes(22, 65537), 0o644},
		{"big.bin", randomBytes(23, 3<<20), 0o644},
		{"private.key", []byte("not really a key\n"), 0o600},
		{"bin/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755},
		{"docs/readonly.txt", []byte("do not edit\n"), 0o444},
		{"nested/a/b/c/deep.bin", randomBytes(24, 300<<10), 0o644},
		{"nested/a/sibling.txt", []byte("sibling\n"), 0o644},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		writeFile(t, p, f.data)
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	links := []struct{ target, name string }{
		{"hello.txt", "link-to-hello"},
		{"nested/a", "link-to-dir"},
		{"../../hello.txt", "nested/a/up-link"},
		{"nowhere/at/all", "dangling"},
	}
	for _, l := range links {
		if err := os.Symlink(l.target, filepath.Join(root, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(root, "big.bin"), filepath.Join(root, "nested/big-hardlink.bin")); err != nil {
		t.Fatal(err)
	}
	// Old, distinct mtimes, so a copy that forgets them shows.
	if err := os.Mkdir(filepath.Join(root, "empty-dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	stamp := time.Date(2019, 5, 6, 7, 8, 9, 0, time.UTC)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		stamp = stamp.Add(time.Hour)
		return os.Chtimes(p, stamp, stamp)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Folders last, from the deepest up, so their own mtimes stay.
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		stamp = stamp.Add(time.Hour)
		if err := os.Chtimes(dirs[i], stamp, stamp); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTree checks that got holds what want holds: the same names, types,
// permission bits, symlink targets, sizes and mtimes (to the second), and,
// if hardlinks, the same files linked together. Contents are diff's job.
func sameTree(t *testing.T, want, got string, hardlinks bool) {
	t.Helper()
	type node struct {
		st  syscall.Stat_t
		lnk string
	}
	scan := func(root string) map[string]node {
		nodes := map[string]node{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			var n node
			if err := syscall.Lstat(p, &n.st); err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if n.lnk, err = os.Readlink(p); err != nil {
					return err
				}
			}
			nodes[rel] = n
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return nodes
	}
	w, g := scan(want), scan(got)
	for rel := range g {
		if _, ok := w[rel]; !ok {
			t.Errorf("%s: not in the source", rel)
		}
	}
	for rel, wn := range w {
		gn, ok := g[rel]
		if !ok {
			t.Errorf("%s: missing", rel)
			continue
		}
		if gn.st.Mode != wn.st.Mode {
			t.Errorf("%s: mode %o, want %o", rel, gn.st.Mode, wn.st.Mode)
		}
		if gn.lnk != wn.lnk {
			t.Errorf("%s: symlink to %q, want %q", rel, gn.lnk, wn.lnk)
		}
		if wn.st.Mode&syscall.S_IFMT == syscall.S_IFREG && gn.st.Size != wn.st.Size {
			t.Errorf("%s: size %d, want %d", rel, gn.st.Size, wn.st.Size)
		}
		if gn.st.Mtim.Sec != wn.st.Mtim.Sec {
			t.Errorf("%s: mtime %v, want %v", rel, time.Unix(gn.st.Mtim.Unix()), time.Unix(wn.st.Mtim.Unix()))
		}
		if !hardlinks || wn.st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		if gn.st.Nlink != wn.st.Nlink {
			t.Errorf("%s: %d links, want %d", rel, gn.st.Nlink, wn.st.Nlink)
		}
		for rel2, wn2 := range w {
			if rel2 > rel && wn2.st.Ino == wn.st.Ino && g[rel2].st.Ino != gn.st.Ino {
				t.Errorf("%s and %s: no longer the same file (inodes %d, %d)", rel, rel2, gn.st.Ino, g[rel2].st.Ino)
			}
		}
	}
}

// diffTrees runs diff -r, comparing symlinks by target.
func diffTrees(t *testing.T, want, got string) {
	t.Helper()
	runProgram(t, "", nil, "diff", "-r", "--no-dereference", want, got)
}

// TestMountPrograms runs everyday programs on the mounted working tree and
// checks their results with the programs' own tools.
func TestMountPrograms(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeUserTree(t, src)
	mnt, stop := mountRepo(t, filepath.Join(dir, "repo"))
	runUserPrograms(t, src, mnt, dir)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// runUserPrograms copies src into mnt with cp, rsync and tar, keeps a git
// repository and sqlite databases there and runs fio on it. scratch is a
// folder outside mnt.
func runUserPrograms(t *testing.T, src, mnt, scratch string) {
	t.Run("cp -a", func(t *testing.T) {
		requireProgram(t, "cp")
		dst := filepath.Join(mnt, "cp")
		runProgram(t, "", nil, "cp", "-a", src, dst)
		diffTrees(t, src, dst)
		sameTree(t, src, dst, true)
	})

	t.Run("rsync -a", func(t *testing.T) {
		requireProgram(t, "rsync")
		dst := filepath.Join(mnt, "rsync")
		runProgram(t, "", nil, "rsync", "-a", src+"/", dst+"/")
		diffTrees(t, src, dst)
		sameTree(t, src, dst, false)
		// A second run finds nothing to do when sizes and mtimes stuck.
		if out := runProgram(t, "", nil, "rsync", "-a", "--itemize-changes", src+"/", dst+"/"); out != "" {
			t.Errorf("second rsync -a still had changes to make:\n%s", out)
		}
	})

	t.Run("tar round trip", func(t *testing.T) {
		requireProgram(t, "tar")
		in := filepath.Join(mnt, "tar")
		out := filepath.Join(scratch, "tar-out")
		for _, d := range []string{in, out} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		pipe := "set -o pipefail; tar -C \"$1\" -cf - . | tar -C \"$2\" -xf -"
		runProgram(t, "", nil, "bash", "-c", pipe, "tar", src, in)
		runProgram(t, "", nil, "bash", "-c", pipe, "tar", in, out)
		diffTrees(t, src, in)
		diffTrees(t, src, out)
		sameTree(t, src, in, true)
		sameTree(t, src, out, true)
	})

	t.Run("git", func(t *testing.T) {
		requireProgram(t, "git")
		work := filepath.Join(mnt, "git")
		runProgram(t, "", nil, "cp", "-a", src, work)
		env := []string{
			"HOME=" + t.TempDir(), "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
			"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		}
		runProgram(t, work, env, "git", "init", "-q", "-b", "main")
		runProgram(t, work, env, "git", "add", "-A")
		runProgram(t, work, env, "git", "commit", "-q", "-m", "first")
		writeFile(t, filepath.Join(work, "hello.txt"), []byte("hello again\n"))
		runProgram(t, work, env, "git", "commit", "-q", "-a", "-m", "second")
		if out := runProgram(t, work, env, "git", "status", "--porcelain"); out != "" {
			t.Errorf("git status after commit:\n%s", out)
		}
		runProgram(t, work, env, "git", "gc", "-q")
		runProgram(t, work, env, "git", "fsck", "--full", "--strict")
		if out := runProgram(t, work, env, "git", "rev-list", "--count", "HEAD"); out != "2\n" {
			t.Errorf("git rev-list --count HEAD = %q, want 2", out)
		}
	})

	for _, mode := range []string{"delete", "wal"} {
		t.Run("sqlite3 "+mode, func(t *testing.T) {
			requireProgram(t, "sqlite3")
			db := filepath.Join(mnt, "sqlite-"+mode, "test.db")
			if err := os.MkdirAll(filepath.Dir(db), 0o755); err != nil {
				t.Fatal(err)
			}
			var script strings.Builder
			fmt.Fprintf(&script, "PRAGMA journal_mode=%s;\nPRAGMA synchronous=FULL;\n", mode)
			script.WriteString("CREATE TABLE kv(id INTEGER PRIMARY KEY, v BLOB NOT NULL);\n")
			const transactions = 1000
			for i := range transactions {
				fmt.Fprintf(&script, "BEGIN; INSERT INTO kv(v) VALUES (randomblob(%d)); "+
					"UPDATE kv SET v = randomblob(%d) WHERE id = %d; COMMIT;\n", 100+i*7%5000, 200+i%300, i/2+1)
			}
			sql := filepath.Join(t.TempDir(), "script.sql")
			writeFile(t, sql, []byte(script.String()))
			if out := runProgram(t, "", nil, "sqlite3", "-bail", db, ".read "+sql); strings.TrimSpace(out) != mode {
				t.Fatalf("journal_mode set to %q, want %q", out, mode)
			}
			check := runProgram(t, "", nil, "sqlite3", db, "PRAGMA integrity_check; SELECT count(*) FROM kv; PRAGMA journal_mode;")
			if want := fmt.Sprintf("ok\n%d\n%s\n", transactions, mode); check != want {
				t.Fatalf("integrity_check, count, journal_mode = %q, want %q", check, want)
			}
		})
	}

	fios := []struct{ name, engine, rw string }{
		{"fio psync randrw", "psync", "randrw"},
		{"fio mmap randrw", "mmap", "randrw"},
	}
	for _, f := range fios {
		t.Run(f.name, func(t *testing.T) {
			requireProgram(t, "fio")
			d := filepath.Join(mnt, "fio-"+f.engine)
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			runProgram(t, "", nil, "fio", "--name="+f.engine, "--directory="+d,
				"--ioengine="+f.engine, "--rw="+f.rw, "--bs=4k", "--size=64m",
				"--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0",
				"--fsync_on_close=1")
		})
	}
}
