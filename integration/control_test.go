package integration

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// While the repo is mounted the daemon holds it; cat, ls, stat and add go
// through the control socket and see what the mount wrote.
func TestCommandsWhileMounted(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	data := randomBytes(21, 3<<20+7)
	writeFile(t, filepath.Join(mnt, "dir", "f.bin"), data)

	fi, err := os.Stat(filepath.Join(repo, "ipfrs.sock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	root := strings.TrimSpace(xattr(t, mnt))
	if got := must(t, repo, "cat", root+"/dir/f.bin"); !bytes.Equal([]byte(got), data) {
		t.Fatal("cat through the socket differs from the file")
	}
	if ls := must(t, repo, "ls", root+"/dir"); !strings.Contains(ls, " 3145735 f.bin\n") {
		t.Fatalf("ls: %q", ls)
	}
	if s := repoStat(t, repo); s.Blocks == 0 {
		t.Fatal("stat through the socket shows no blocks")
	}
	// A relative path is the client's, not the daemon's.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "rel.txt"), []byte("relative\n"))
	cmd := ipfrsIn(t, dir, repo, "add", "-Q", "rel.txt")
	if cmd.err != nil || !strings.HasPrefix(cmd.stdout, "bafkrei") {
		t.Fatalf("add of a relative path: %v %q %q", cmd.err, cmd.stdout, cmd.stderr)
	}
	// Failures keep their message and status.
	r := ipfrs(t, repo, "cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka")
	if r.err == nil || !strings.Contains(r.stderr, "not in this repo") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("cat of an unknown CID: %v %q", r.err, r.stderr)
	}
	// Garbage on the socket gets an error; the daemon keeps serving.
	conn, err := net.Dial("unix", filepath.Join(repo, "ipfrs.sock"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("\x00\xffnot json\n"))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, _ := io.ReadAll(conn) // the daemon closes after its answer
	conn.Close()
	if !bytes.Contains(reply, []byte("bad request")) {
		t.Fatalf("garbage request answered %q", reply)
	}
	must(t, repo, "stat")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "ipfrs.sock")); !os.IsNotExist(err) {
		t.Fatalf("socket left after unmount: %v", err)
	}
}

func xattr(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Getxattr(path, "user.ipfrs.cid", buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}
