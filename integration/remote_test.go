package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// startServe runs `ipfrs-mount serve --gateway 127.0.0.1:0` on an
// unmounted repo in the foreground and returns its URL; cleanup stops it.
func startServe(t *testing.T, repo string) string {
	t.Helper()
	cmd := exec.Command(binary, "--repo", repo, "serve", "--gateway", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve exited with %v:\n%s", err, stderr.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed no URL: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(line)
}

// fetchCAR gets a CAR from a gateway and reads its blocks, each checked
// against its CID.
func fetchCAR(t *testing.T, u string, header ...string) (roots []cid.Cid, data map[cid.Cid][]byte, body []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %d %s", u, err, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.ipld.car; version=1") {
		t.Errorf("Content-Type %q", ct)
	}
	br, err := carv2.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data = map[cid.Cid][]byte{}
	for {
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := unixfs.CheckHash(blk.Cid(), blk.RawData()); err != nil {
			t.Fatal(err)
		}
		data[blk.Cid()] = blk.RawData()
	}
	return br.Roots, data, body
}

type mapViewer map[cid.Cid][]byte

func (m mapViewer) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	b, ok := m[c]
	if !ok {
		return fmt.Errorf("block %s: %w", c, store.ErrNotFound)
	}
	return fn(b)
}

// A model in repo A, served by A's mount daemon, is read bit-exact through
// repo B's mount with --remote: by CID under .ipfs and after copying it into
// B's tree. With A gone, B reads it again from its own store.
func TestRemoteModelThroughGateway(t *testing.T) {
	py := python(t)
	src := t.TempDir()
	if b, err := exec.Command(py, "testdata/gen_models.py", src, "0.01").CombinedOutput(); err != nil {
		t.Fatalf("gen_models.py: %v %s", err, b)
	}
	model := filepath.Join(src, "base.safetensors")
	repoA, repoB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := startMount(t, repoA)
	if out, err := exec.Command("cp", model, a.mnt).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	c := cidOf(t, filepath.Join(a.mnt, "base.safetensors"))
	// serve is forwarded to A's daemon, which holds the repo.
	url := strings.TrimSpace(must(t, repoA, "serve", "--gateway", "127.0.0.1:0"))

	check := func(path string) {
		t.Helper()
		out, err := exec.Command(py, "testdata/load_safetensors.py", path, "--check", model).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("identical")) {
			t.Fatalf("load %s: %v %s", path, err, out)
		}
	}
	b := startMount(t, repoB, "--remote", url)
	check(filepath.Join(b.mnt, ".ipfs", c))
	if out, err := exec.Command("cp", filepath.Join(b.mnt, ".ipfs", c), filepath.Join(b.mnt, "model.safetensors")).CombinedOutput(); err != nil {
		t.Fatalf("cp into B's tree: %v %s", err, out)
	}
	check(filepath.Join(b.mnt, "model.safetensors"))
	if got := cidOf(t, filepath.Join(b.mnt, "model.safetensors")); got != c {
		t.Errorf("B's copy is %s, A's %s", got, c)
	}
	// cat and export --remote also fetch (forwarded to B's daemon): nothing
	// is missing now, so they read locally.
	if r := ipfrs(t, repoB, "cat", "--remote", url, c); r.err != nil || int64(len(r.stdout)) != fileSize(t, model) {
		t.Fatalf("cat --remote: %v %s", r.err, r.stderr)
	}

	// A stops; B, mounted again without --remote, still has every block.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	b2 := startMount(t, repoB)
	check(filepath.Join(b2.mnt, ".ipfs", c))
	if r := ipfrs(t, repoB, "verify"); r.err != nil {
		t.Fatalf("verify: %v %s %s", r.err, r.stdout, r.stderr)
	}
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A gateway that sends wrong bytes for one leaf: B's read of that leaf's
// range fails with EIO (other ranges read), a log line says why, and B
// stores nothing for it; its verify stays clean.
func TestRemoteWrongBlock(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	repoA, repoB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := randomBytes(7, 3<<20)
	writeFile(t, filepath.Join(dir, "f.bin"), data)
	c := strings.TrimSpace(must(t, repoA, "add", "-Q", "--profile", "kubo", filepath.Join(dir, "f.bin")))
	up := startServe(t, repoA)

	// The leaves and their offsets, from a CAR of the file.
	root, _ := cid.Decode(c)
	_, blocks, _ := fetchCAR(t, up+"/ipfs/"+c+"?format=car")
	f, err := unixfs.OpenFile(context.Background(), mapViewer(blocks), root)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := f.Leaves(context.Background())
	if err != nil || len(leaves) < 4 {
		t.Fatalf("leaves: %v (%d)", err, len(leaves))
	}
	bad := leaves[2].CID
	badOff := int64(leaves[0].Size + leaves[1].Size)

	target, _ := url.Parse(up)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var lies atomic.Int64
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/ipfs/"+bad.String()) {
			lies.Add(1)
			b := append([]byte(nil), blocks[bad]...)
			b[100] ^= 0xff
			w.Header().Set("Content-Type", "application/vnd.ipld.raw")
			w.Write(b)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer liar.Close()

	b := startMount(t, repoB, "--remote", liar.URL, "--remote-retries", "1")
	fh, err := os.Open(filepath.Join(b.mnt, ".ipfs", c))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	good := make([]byte, badOff)
	if _, err := fh.ReadAt(good, 0); err != nil || !bytes.Equal(good, data[:badOff]) {
		t.Fatalf("the range before the bad leaf: %v", err)
	}
	if _, err := fh.ReadAt(make([]byte, 4096), badOff); !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading the bad leaf: %v, want EIO", err)
	}
	if lies.Load() == 0 {
		t.Fatal("the lying gateway was never asked")
	}
	tail := int64(leaves[0].Size+leaves[1].Size+leaves[2].Size) + 10
	p := make([]byte, 1000)
	if _, err := fh.ReadAt(p, tail); err != nil || !bytes.Equal(p, data[tail:tail+1000]) {
		t.Fatalf("the range after the bad leaf: %v", err)
	}
	if !strings.Contains(b.stderr.String(), "no gateway") {
		t.Errorf("no log line about the block:\n%s", b.stderr.String())
	}
	// Nothing was stored for the bad leaf: cat runs in B's daemon, which
	// looks in its store first and then asks the mount's lying gateway again.
	if r := ipfrs(t, repoB, "cat", bad.String()); r.err == nil || !strings.Contains(r.stderr, "does not match its hash") {
		t.Errorf("cat of the bad leaf in B: %v %q", r.err, r.stderr)
	}
	if r := ipfrs(t, repoB, "verify"); r.err != nil {
		t.Errorf("verify: %v %s %s", r.err, r.stdout, r.stderr)
	}
}

// A gateway that never answers: the read fails with EIO once the timeout
// has passed, and the mount answers stat and ls meanwhile.
func TestRemoteHangingGateway(t *testing.T) {
	requireFUSE(t)
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	defer close(release)
	repoB := filepath.Join(t.TempDir(), "b")
	b := startMount(t, repoB, "--remote", hang.URL, "--remote-timeout", "3s", "--remote-retries", "0")
	writeFile(t, filepath.Join(b.mnt, "local.txt"), []byte("here"))
	missing := "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" // sha256("hello world"), not stored
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := os.ReadFile(filepath.Join(b.mnt, ".ipfs", missing))
		done <- err
	}()
	<-arrived
	// The mount answers while the read waits on the gateway.
	if _, err := os.Stat(b.mnt); err != nil {
		t.Fatalf("stat during the hang: %v", err)
	}
	ents, err := os.ReadDir(b.mnt)
	if err != nil || len(ents) == 0 {
		t.Fatalf("ls during the hang: %v %v", ents, err)
	}
	if got, err := os.ReadFile(filepath.Join(b.mnt, "local.txt")); err != nil || string(got) != "here" {
		t.Fatalf("read of a local file during the hang: %v", err)
	}
	err = <-done
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read through a hanging gateway: %v, want EIO", err)
	}
	if waited := time.Since(start); waited < 3*time.Second {
		t.Errorf("the read failed after %v, before the 3s timeout", waited)
	}
}

// serve answers what IPFS clients ask (Helia's raw-block broker, Kubo's and
// boxo's CAR fetches), and its CARs import into another repo.
func TestServeForClientsAndImport(t *testing.T) {
	dir := t.TempDir()
	repoA, repoC := filepath.Join(dir, "a"), filepath.Join(dir, "c")
	writeFile(t, filepath.Join(dir, "d", "a.txt"), []byte("alpha\n"))
	big := randomBytes(3, 2<<20+12345)
	writeFile(t, filepath.Join(dir, "d", "sub", "w.bin"), big)
	out := must(t, repoA, "add", "-r", "--json", filepath.Join(dir, "d"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var root string
	fmt.Sscanf(lines[len(lines)-1][strings.Index(lines[len(lines)-1], `"cid":"`)+7:], "%59s", &root)
	if _, err := cid.Decode(root); err != nil {
		t.Fatalf("root %q from %s", root, out)
	}
	gw := startServe(t, repoA)

	// A raw block the way Helia's trustless-gateway broker asks for it.
	req, _ := http.NewRequest("GET", gw+"/ipfs/"+root+"?format=raw", nil)
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rc, _ := cid.Decode(root)
	if resp.StatusCode != 200 || unixfs.CheckHash(rc, raw) != nil || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("raw block: %d %v", resp.StatusCode, resp.Header)
	}

	cases := []struct {
		name, path string
		header     []string
		catPath    string // what the imported root must serve
		want       []byte
	}{
		{"kubo/boxo: dups=y, order=dfs", "/ipfs/" + root, []string{"Accept", "application/vnd.ipld.car; version=1; order=dfs; dups=y"}, "sub/w.bin", big},
		{"format=car", "/ipfs/" + root + "?format=car", nil, "a.txt", []byte("alpha\n")},
		{"path, entity", "/ipfs/" + root + "/sub/w.bin?format=car&dag-scope=entity", []string{"Accept", "application/vnd.ipld.car"}, "", big},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roots, _, body := fetchCAR(t, gw+tc.path, tc.header...)
			car := filepath.Join(dir, fmt.Sprintf("%d.car", i))
			if err := os.WriteFile(car, body, 0o644); err != nil {
				t.Fatal(err)
			}
			imported := strings.TrimSpace(must(t, repoC, "import", car))
			if len(roots) != 1 || imported != roots[0].String() {
				t.Fatalf("imported %q, CAR roots %v", imported, roots)
			}
			arg := imported
			if tc.catPath != "" {
				arg += "/" + tc.catPath
			}
			if got := must(t, repoC, "cat", arg); got != string(tc.want) {
				t.Fatalf("cat %s after import: %d bytes, want %d", arg, len(got), len(tc.want))
			}
		})
	}
	// export --remote in a third repo fetches the whole DAG through the gateway.
	repoD := filepath.Join(dir, "d-repo")
	car := filepath.Join(dir, "remote.car")
	must(t, repoD, "export", "--remote", gw, root, "-o", car)
	if got := must(t, repoD, "cat", root+"/sub/w.bin"); got != string(big) {
		t.Fatal("cat after export --remote differs")
	}
}

// publish streams a tagged commit's tree to Kubo's dag/import (a fake
// here: it parses the multipart CAR with go-car and checks every block)
// and prints its root.
func TestPublishToKubo(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	a := startMount(t, repo)
	writeFile(t, filepath.Join(a.mnt, "model", "w.bin"), randomBytes(5, 1<<20+7))
	writeFile(t, filepath.Join(a.mnt, "README"), []byte("release\n"))
	must(t, repo, "commit", "-m", "release")
	must(t, repo, "tag", "v1")
	var tree string
	for _, l := range strings.Split(must(t, repo, "show", "v1"), "\n") {
		if strings.HasPrefix(l, "tree ") {
			tree = strings.TrimSpace(strings.TrimPrefix(l, "tree"))
		}
	}

	type kuboGot struct {
		pin    string
		roots  []cid.Cid
		blocks map[cid.Cid]bool
		err    error
	}
	got := make(chan kuboGot, 1)
	kubo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := kuboGot{pin: r.URL.Query().Get("pin-roots"), blocks: map[cid.Cid]bool{}}
		defer func() { got <- g }()
		if r.Method != "POST" || r.URL.Path != "/api/v0/dag/import" {
			g.err = fmt.Errorf("%s %s", r.Method, r.URL.Path)
			http.Error(w, `{"Message":"unknown command","Code":0,"Type":"error"}`, 404)
			return
		}
		mr, err := r.MultipartReader()
		if err != nil {
			g.err = err
			http.Error(w, `{"Message":"not multipart"}`, 400)
			return
		}
		part, err := mr.NextPart()
		if err != nil || part.FormName() != "file" {
			g.err = fmt.Errorf("part: %v", err)
			http.Error(w, `{"Message":"no file"}`, 400)
			return
		}
		br, err := carv2.NewBlockReader(part)
		if err != nil {
			g.err = err
			http.Error(w, `{"Message":"bad CAR"}`, 400)
			return
		}
		g.roots = br.Roots
		for {
			blk, err := br.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err == nil {
				err = unixfs.CheckHash(blk.Cid(), blk.RawData())
			}
			if err != nil {
				g.err = err
				http.Error(w, `{"Message":"bad block"}`, 500)
				return
			}
			g.blocks[blk.Cid()] = true
		}
		w.Header().Set("Content-Type", "application/json")
		for _, c := range br.Roots {
			fmt.Fprintf(w, `{"Root":{"Cid":{"/":"%s"},"PinErrorMsg":""}}`+"\n", c)
		}
		fmt.Fprintf(w, `{"Stats":{"BlockCount":%d,"BlockBytesCount":1}}`+"\n", len(g.blocks))
	}))
	defer kubo.Close()

	out := must(t, repo, "publish", "v1", "--kubo-api", kubo.URL, "--pin")
	if strings.TrimSpace(out) != tree {
		t.Fatalf("publish printed %q, want the tree %s", out, tree)
	}
	g := <-got
	if g.err != nil || g.pin != "true" || len(g.roots) != 1 || g.roots[0].String() != tree {
		t.Fatalf("Kubo got: err %v, pin-roots %q, roots %v", g.err, g.pin, g.roots)
	}
	// Every block of the tree, as export writes it, reached Kubo.
	car := filepath.Join(dir, "tree.car")
	must(t, repo, "export", tree, "-o", car)
	want, err := os.ReadFile(car)
	if err != nil {
		t.Fatal(err)
	}
	br, err := carv2.NewBlockReader(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if !g.blocks[blk.Cid()] {
			t.Errorf("block %s did not reach Kubo", blk.Cid())
		}
	}
	if n != len(g.blocks) {
		t.Errorf("Kubo got %d blocks, the tree has %d", len(g.blocks), n)
	}

	// By CID, unpinned; and a Kubo that fails says why.
	if out := must(t, repo, "publish", tree, "--kubo-api", kubo.URL); strings.TrimSpace(out) != tree {
		t.Fatalf("publish by CID printed %q", out)
	}
	if g := <-got; g.pin != "false" || g.err != nil {
		t.Errorf("unpinned publish: pin-roots %q, %v", g.pin, g.err)
	}
	r := ipfrs(t, repo, "publish", "v1", "--kubo-api", kubo.URL+"/nope")
	<-got
	if r.err == nil || !strings.Contains(r.stderr, "unknown command") {
		t.Errorf("publish to a failing Kubo: %v %q", r.err, r.stderr)
	}
}
