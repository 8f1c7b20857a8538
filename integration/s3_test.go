package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/s3tier/s3test"
)

// s3Status is the s3 part of `status --json`.
type s3Status struct {
	S3 *struct {
		Queue       int64  `json:"queue"`
		PushedBytes int64  `json:"pushed_bytes"`
		Packs       int64  `json:"packs"`
		RemoteReads int64  `json:"remote_reads"`
		CacheHits   int64  `json:"cache_hits"`
		LastError   string `json:"last_error"`
	} `json:"s3"`
}

func s3StatusOf(t *testing.T, repo string) s3Status {
	t.Helper()
	var s s3Status
	out := must(t, repo, "status", "--json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// waitPublished waits until the bucket's branch names commit, which the
// writer publishes only once every block of it is in the bucket, and the
// writer's queue is empty.
func waitPublished(t *testing.T, srv *s3test.Server, repo, prefix, branch, commit string) {
	t.Helper()
	ref := filepath.Join(srv.DataDir(), "models", prefix, "refs", "branches", branch)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(ref)
		if strings.TrimSpace(string(b)) == commit {
			if st := s3StatusOf(t, repo); st.S3 != nil && st.S3.Queue == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("branch %s not published as %s in time (ref %q, status %+v)", branch, commit, b, s3StatusOf(t, repo).S3)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func headCommit(t *testing.T, repo string) string {
	t.Helper()
	st := repoStatus(t, repo)
	if st.LastCommit == nil {
		t.Fatal("no commit")
	}
	return st.LastCommit.CID
}

func genModel(t *testing.T, py, scale string) string {
	t.Helper()
	src := t.TempDir()
	if b, err := exec.Command(py, "testdata/gen_models.py", src, scale).CombinedOutput(); err != nil {
		t.Fatalf("gen_models.py: %v %s", err, b)
	}
	return filepath.Join(src, "base.safetensors")
}

func checkTorch(t *testing.T, py, path, want string) {
	t.Helper()
	out, err := exec.Command(py, "testdata/load_safetensors.py", path, "--check", want).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("identical")) {
		t.Fatalf("load %s: %v %s", path, err, out)
	}
}

// Two repos, two mounts, one bucket: A writes a model and commits; once
// A's queue drained, A dies by SIGKILL; B, following main, loads the model
// with PyTorch bit-exact from .versions/branches/main.
func TestS3TwoMountsFollow(t *testing.T) {
	py := python(t)
	srv := s3test.Start(t)
	srv.Env(t)
	url := srv.URL("models", "team")
	model := genModel(t, py, "0.01")
	repoA, repoB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mntA, mntB := newMountpoint(t), newMountpoint(t)

	pidA := startDaemon(t, repoA, mntA, "--s3", url)
	if out, err := exec.Command("cp", model, filepath.Join(mntA, "model.safetensors")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	must(t, repoA, "commit", "-m", "model")
	commit := headCommit(t, repoA)
	waitPublished(t, srv, repoA, "team", "main", commit)
	if st := s3StatusOf(t, repoA); st.S3.Packs == 0 || st.S3.PushedBytes < fileSize(t, model) {
		t.Fatalf("A's status after the push: %+v", *st.S3)
	}
	// A second writer on main is refused while A holds it.
	repoW, mntW := filepath.Join(t.TempDir(), "w"), newMountpoint(t)
	if r := ipfrs(t, repoW, "mount", "--daemon", mntW, "--s3", url); r.err == nil {
		t.Cleanup(func() { stopDaemon(t, repoW, mntW, daemonPID(t, repoW)) })
		t.Fatalf("a second writer on main mounted:\n%s", r.stderr)
	} else if !strings.Contains(r.stderr, "held by another writer") || !strings.Contains(r.stderr, "--follow main") {
		t.Fatalf("second writer on main: %v\n%s", r.err, r.stderr)
	}
	syscall.Kill(pidA, syscall.SIGKILL) // the daemon this test started
	waitExit(t, pidA)

	startDaemon(t, repoB, mntB, "--s3", url, "--follow", "main")
	checkTorch(t, py, filepath.Join(mntB, ".versions", "branches", "main", "model.safetensors"), model)
	st := s3StatusOf(t, repoB)
	if st.S3 == nil || st.S3.RemoteReads == 0 {
		t.Fatalf("B read nothing from the bucket: %+v", st.S3)
	}
	if r := ipfrs(t, repoB, "verify"); r.err != nil {
		t.Fatalf("verify on B: %v %s %s", r.err, r.stdout, r.stderr)
	}
	if r := ipfrs(t, repoB, "verify", "--s3", url); r.err != nil {
		t.Fatalf("verify --s3: %v %s %s", r.err, r.stdout, r.stderr)
	}
	// cat and export --s3 read through the bucket in a repo that has
	// nothing, without a mount.
	c := cidOf(t, filepath.Join(mntB, ".versions", "branches", "main", "model.safetensors"))
	repoC := filepath.Join(t.TempDir(), "c")
	if r := ipfrs(t, repoC, "cat", "--s3", url, c); r.err != nil || int64(len(r.stdout)) != fileSize(t, model) {
		t.Fatalf("cat --s3: %v %s", r.err, r.stderr)
	}
	car := filepath.Join(t.TempDir(), "m.car")
	if r := ipfrs(t, filepath.Join(t.TempDir(), "d"), "export", "--s3", url, c, "-o", car); r.err != nil {
		t.Fatalf("export --s3: %v %s", r.err, r.stderr)
	}
	// add --s3 pushes the added content as a root of the bucket and
	// returns once it is there; another repo reads it by CID.
	extra := filepath.Join(t.TempDir(), "extra.bin")
	writeFile(t, extra, randomBytes(12, 3<<20))
	added := strings.TrimSpace(must(t, repoC, "add", "-Q", "--s3", url, extra))
	if _, err := os.Stat(filepath.Join(srv.DataDir(), "models", "team", "refs", "roots", added)); err != nil {
		t.Fatalf("add --s3 returned before publishing %s: %v", added, err)
	}
	if r := ipfrs(t, filepath.Join(t.TempDir(), "e"), "cat", "--s3", url, added); r.err != nil || r.stdout != string(randomBytes(12, 3<<20)) {
		t.Fatalf("cat --s3 of added content: %v %s", r.err, r.stderr)
	}
}

// The server dies while A uploads: A keeps serving, its queue waits (also
// across a restart of A) and drains when the server is back; nothing is
// lost and verify is clean on both sides.
func TestS3ServerKilledMidUpload(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	url := srv.URL("models", "outage")
	repoA, repoB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mntA, mntB := newMountpoint(t), newMountpoint(t)
	one, two := randomBytes(21, 24<<20), randomBytes(22, 24<<20)

	pidA := startDaemon(t, repoA, mntA, "--s3", url)
	writeFile(t, filepath.Join(mntA, "one.bin"), one)
	must(t, repoA, "commit", "-m", "one")
	time.Sleep(300 * time.Millisecond) // let the upload start
	srv.Kill()
	writeFile(t, filepath.Join(mntA, "two.bin"), two)
	must(t, repoA, "commit", "-m", "two")
	commit := headCommit(t, repoA)
	for name, want := range map[string][]byte{"one.bin": one, "two.bin": two} {
		if got, err := os.ReadFile(filepath.Join(mntA, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("A serves %s while the server is down: %v", name, err)
		}
	}
	if st := s3StatusOf(t, repoA); st.S3 == nil || st.S3.Queue == 0 {
		t.Fatalf("A's queue with the server down: %+v", st.S3)
	}
	// A restarts while the server is still down.
	stopDaemon(t, repoA, mntA, pidA)
	waitExit(t, pidA)
	if st := s3StatusOf(t, repoA); st.S3 == nil || st.S3.Queue == 0 {
		t.Fatalf("A's queue after unmount: %+v, want it kept", st.S3)
	}
	startDaemon(t, repoA, mntA, "--s3", url)
	srv.Restart()
	waitPublished(t, srv, repoA, "outage", "main", commit)

	startDaemon(t, repoB, mntB, "--s3", url, "--follow", "main")
	for name, want := range map[string][]byte{"one.bin": one, "two.bin": two} {
		if got, err := os.ReadFile(filepath.Join(mntB, ".versions", "branches", "main", name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("B reads %s: %v", name, err)
		}
	}
	for _, repo := range []string{repoA, repoB} {
		if r := ipfrs(t, repo, "verify"); r.err != nil {
			t.Fatalf("verify %s: %v %s %s", repo, r.err, r.stdout, r.stderr)
		}
	}
	if r := ipfrs(t, repoB, "verify", "--s3", url); r.err != nil {
		t.Fatalf("verify --s3: %v %s %s", r.err, r.stdout, r.stderr)
	}
}

// A pack altered in the bucket: B's read of its blocks is EIO, never
// other bytes; nothing wrong is cached; verify --s3 names the pack.
func TestS3AlteredPack(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	url := srv.URL("models", "alt")
	repoA, repoB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mntA, mntB := newMountpoint(t), newMountpoint(t)
	data := randomBytes(31, 6<<20)
	startDaemon(t, repoA, mntA, "--s3", url)
	writeFile(t, filepath.Join(mntA, "w.bin"), data)
	must(t, repoA, "commit", "-m", "w")
	waitPublished(t, srv, repoA, "alt", "main", headCommit(t, repoA))

	packs, _ := filepath.Glob(filepath.Join(srv.DataDir(), "models", "alt", "packs", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no pack in the bucket")
	}
	sort.Slice(packs, func(i, j int) bool { return fileSize(t, packs[i]) > fileSize(t, packs[j]) })
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mid := fileSize(t, packs[0]) / 2
	b := []byte{0}
	f.ReadAt(b, mid)
	b[0] ^= 0x55
	f.WriteAt(b, mid)
	f.Close()
	pack := strings.TrimSuffix(filepath.Base(packs[0]), ".pack")

	startDaemon(t, repoB, mntB, "--s3", url, "--follow", "main")
	got, err := os.ReadFile(filepath.Join(mntB, ".versions", "branches", "main", "w.bin"))
	if !errorsIsEIO(err) {
		t.Fatalf("read of an altered pack: %d bytes, %v; want EIO", len(got), err)
	}
	if r := ipfrs(t, repoB, "verify"); r.err != nil {
		t.Fatalf("verify on B (something wrong cached?): %v %s %s", r.err, r.stdout, r.stderr)
	}
	r := ipfrs(t, repoB, "verify", "--s3", url)
	if r.err == nil || !strings.Contains(r.stdout, "corrupt pack "+pack) {
		t.Fatalf("verify --s3 does not name pack %s: %v\n%s%s", pack, r.err, r.stdout, r.stderr)
	}
}

func errorsIsEIO(err error) bool {
	var pe *os.PathError
	if e, ok := err.(*os.PathError); ok {
		pe = e
	}
	return pe != nil && pe.Err == syscall.EIO
}

// gc --s3 while A pushes: no block a commit needs is deleted.
func TestS3GCWhilePushing(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	url := srv.URL("models", "gc")
	repoA, repoB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mntA, mntB := newMountpoint(t), newMountpoint(t)
	// Small packs: a commit's first packs are old before its ref is
	// published.
	startDaemon(t, repoA, mntA, "--s3", url, "--s3-pack-size", "1MiB")
	files := map[string][]byte{}
	for i := range 4 {
		name := "f" + string(rune('0'+i)) + ".bin"
		files[name] = randomBytes(uint64(40+i), 16<<20)
	}
	// A commits and pushes while gc --s3 runs over and over with no age
	// limit and a short grace: everything uploaded and not yet published
	// is garbage in its eyes.
	done := make(chan struct{})
	gcErr := make(chan string, 1)
	go func() {
		defer close(gcErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			cmd := exec.Command(binary, "--repo", filepath.Join(t.TempDir(), "gc"), "gc", "--s3", url, "--min-age", "0", "--s3-grace", "200ms")
			if out, err := cmd.CombinedOutput(); err != nil {
				gcErr <- err.Error() + ": " + string(out)
				return
			}
			time.Sleep(300 * time.Millisecond) // a window for the writer to publish in
		}
	}()
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var commit string
	for _, name := range names {
		writeFile(t, filepath.Join(mntA, name), files[name])
		must(t, repoA, "commit", "-m", name)
		commit = headCommit(t, repoA)
	}
	waitPublished(t, srv, repoA, "gc", "main", commit)
	close(done)
	if e := <-gcErr; e != "" {
		t.Fatalf("gc --s3: %s", e)
	}
	if r := ipfrs(t, repoB, "verify", "--s3", url); r.err != nil {
		t.Fatalf("verify --s3 after gc: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	startDaemon(t, repoB, mntB, "--s3", url, "--follow", "main")
	for _, name := range names {
		if got, err := os.ReadFile(filepath.Join(mntB, ".versions", "branches", "main", name)); err != nil || !bytes.Equal(got, files[name]) {
			t.Fatalf("B reads %s after gc --s3: %v", name, err)
		}
	}
}
