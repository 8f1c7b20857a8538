package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An IPNS round trip as two users drive it: A publishes a branch under
// the repo key and serves the gateway; B, a second repo, reads the
// branch's files by name through --remote, with no CID handed over, and
// after A's next commit reads the new checkpoint under the same name. A
// record B cannot verify is refused.
func TestIPNSRoundTrip(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	repoA, repoB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	mnt, _ := mountRepo(t, repoA)
	v1, v2 := randomBytes(71, 3<<20+5), randomBytes(72, 3<<20+5)
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), v1)
	must(t, repoA, "commit", "-m", "first")
	out := strings.Fields(must(t, repoA, "name", "publish", "main"))
	if len(out) != 2 || !strings.HasPrefix(out[0], "/ipns/") || !strings.HasPrefix(out[1], "/ipfs/") {
		t.Fatalf("name publish printed %q", out)
	}
	name := out[0]
	fi, err := os.Stat(filepath.Join(repoA, "ipns.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("repo key: %v %v, want mode 0600", fi, err)
	}
	url := strings.TrimSpace(must(t, repoA, "serve", "--gateway", "127.0.0.1:0"))

	if got := must(t, repoB, "cat", "--remote", url, name+"/ckpt/model.bin"); got != string(v1) {
		t.Fatalf("B read %d bytes by name, want A's first %d", len(got), len(v1))
	}
	if got := strings.TrimSpace(must(t, repoB, "name", "resolve", "--remote", url, name)); got != out[1] {
		t.Fatalf("B resolved %s to %s, A published %s", name, got, out[1])
	}

	// A commits again: the name follows the branch.
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), v2)
	must(t, repoA, "commit", "-m", "second")
	if got := must(t, repoB, "cat", "--remote", url, name+"/ckpt/model.bin"); got != string(v2) {
		t.Fatalf("after A's second commit B read %d bytes, not the new checkpoint", len(got))
	}
	car := filepath.Join(dir, "by-name.car")
	must(t, repoB, "export", "--remote", url, name+"/ckpt", "-o", car)
	must(t, filepath.Join(dir, "c"), "import", car)

	// B now holds the record too (verified), and resolves it offline.
	if got := strings.TrimSpace(must(t, repoB, "name", "resolve", name)); !strings.HasPrefix(got, "/ipfs/") {
		t.Fatalf("offline resolve: %q", got)
	}
	// A name A never published: refused, nothing read.
	other := "/ipns/k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w"
	if r := ipfrs(t, repoB, "cat", "--remote", url, "--remote-retries", "0", other+"/x"); r.err == nil || !strings.Contains(r.stderr, "no gateway has a valid record for the name") {
		t.Fatalf("unpublished name: %v %q", r.err, r.stderr)
	}
	// A record signed by another key, handed to B as this name's: refused.
	recA := filepath.Join(dir, "a.ipns-record")
	if err := os.WriteFile(recA, []byte(fetchBody(t, url+name+"?format=ipns-record")), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ipfrs(t, repoB, "name", "import", other, recA); r.err == nil || !strings.Contains(r.stderr, "ipfrs-mount: ") {
		t.Fatalf("a record under another name was kept: %v %q", r.err, r.stderr)
	}
	must(t, repoB, "verify")
}

// fetchBody GETs url and returns the body of a 200 answer.
func fetchBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return string(b)
}
