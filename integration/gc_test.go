package integration

import (
	"bufio"
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gcOut is the part of gc --json the tests read.
type gcOut struct {
	DryRun        bool  `json:"dry_run"`
	Removed       int64 `json:"removed"`
	RemovedBytes  int64 `json:"removed_bytes"`
	RemovedBlocks []struct {
		CID  string `json:"cid"`
		Size int64  `json:"size"`
	} `json:"removed_blocks"`
}

func runGC(t *testing.T, repo string, args ...string) (gcOut, []string) {
	t.Helper()
	var out gcOut
	if err := json.Unmarshal([]byte(must(t, repo, append([]string{"gc", "--json"}, args...)...)), &out); err != nil {
		t.Fatalf("gc --json: %v", err)
	}
	var cids []string
	for _, b := range out.RemovedBlocks {
		cids = append(cids, b.CID)
	}
	sort.Strings(cids)
	return out, cids
}

// duBytes is the repo's size on disk as du reports it.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-sk", dir).Output()
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	kb, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return kb << 10
}

// safetensorsFile is a minimal valid safetensors file: one F32 tensor "w".
func safetensorsFile(vals ...float32) []byte {
	hdr := fmt.Sprintf(`{"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}`, len(vals), 4*len(vals))
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	b := bin.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	b = append(b, hdr...)
	for _, v := range vals {
		b = bin.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// What a user keeps survives gc byte for byte — a file of a commit (since
// deleted from the tree), a pinned file (deleted too), a file still in the
// tree, a directory added with add — and the rest goes: exactly what
// --dry-run listed. .ipfs and .blocks show stored content by CID.
func TestGCKeepsRootsAndDryRunMatches(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	committed := randomBytes(1, 3<<20+11)
	pinned := randomBytes(2, 2<<20+5)
	kept := randomBytes(3, 1<<20+7)
	garbage := randomBytes(4, 2<<20+3)
	small := []byte("a small file is one raw block\n")
	model := safetensorsFile(1, 2, 3, 4)
	writeFile(t, filepath.Join(mnt, "ckpt", "model.bin"), committed)
	commit := strings.TrimSpace(must(t, repo, "commit", "-m", "one"))
	writeFile(t, filepath.Join(mnt, "tmp", "pinned.bin"), pinned)
	writeFile(t, filepath.Join(mnt, "garbage.bin"), garbage)
	writeFile(t, filepath.Join(mnt, "kept.bin"), kept)
	writeFile(t, filepath.Join(mnt, "small.txt"), small)
	writeFile(t, filepath.Join(mnt, "m.safetensors"), model)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.bin"), randomBytes(5, 1<<20))
	added := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", src))
	pinnedCID := xattr(t, filepath.Join(mnt, "tmp", "pinned.bin"))
	garbageCID := xattr(t, filepath.Join(mnt, "garbage.bin"))
	smallCID := xattr(t, filepath.Join(mnt, "small.txt"))
	modelCID := xattr(t, filepath.Join(mnt, "m.safetensors"))
	must(t, repo, "pin", "add", "--name", "best", pinnedCID)
	for _, p := range []string{"tmp/pinned.bin", "garbage.bin", "ckpt/model.bin"} {
		if err := os.Remove(filepath.Join(mnt, p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(mnt, ".blocks", smallCID)); err != nil || !bytes.Equal(got, small) {
		t.Fatalf(".blocks/%s: %v", smallCID, err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, ".ipfs", garbageCID)); err != nil || !bytes.Equal(got, garbage) {
		t.Fatalf(".ipfs/%s before gc: %v", garbageCID, err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, ".ipfs", added, "a.bin")); err != nil || !bytes.Equal(got, randomBytes(5, 1<<20)) {
		t.Fatalf(".ipfs/%s/a.bin: %v", added, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, ".tensors", ".ipfs", modelCID, "w.safetensors")); err != nil {
		t.Fatalf(".tensors/.ipfs/%s/w.safetensors: %v", modelCID, err)
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, ".blocks")); err != nil || len(ents) == 0 {
		t.Fatalf("listing .blocks: %d entries, %v", len(ents), err)
	}

	dry, listed := runGC(t, repo, "--dry-run")
	if !dry.DryRun || dry.Removed == 0 || dry.Removed != int64(len(listed)) {
		t.Fatalf("dry run: %+v", dry)
	}
	if _, err := os.Stat(filepath.Join(mnt, ".ipfs", garbageCID)); err != nil {
		t.Fatalf("the dry run deleted garbage: %v", err)
	}
	real, removed := runGC(t, repo)
	if fmt.Sprint(removed) != fmt.Sprint(listed) || real.RemovedBytes != dry.RemovedBytes {
		t.Fatalf("gc removed %d blocks (%d bytes), the dry run listed %d (%d bytes)", len(removed), real.RemovedBytes, len(listed), dry.RemovedBytes)
	}
	if !strings.Contains(strings.Join(removed, " "), garbageCID) {
		t.Fatal("the garbage file's root was not removed")
	}
	if _, err := os.Stat(filepath.Join(mnt, ".ipfs", garbageCID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf(".ipfs of removed content: %v, want ENOENT", err)
	}
	check := func(path string, want []byte) {
		t.Helper()
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after gc: %v", path, err)
		}
	}
	check(filepath.Join(mnt, ".versions", "commits", commit, "ckpt", "model.bin"), committed)
	check(filepath.Join(mnt, ".ipfs", pinnedCID), pinned)
	check(filepath.Join(mnt, "kept.bin"), kept)
	check(filepath.Join(mnt, ".ipfs", added, "a.bin"), randomBytes(5, 1<<20))
	must(t, repo, "verify")

	// Unpinned, the file goes at the next gc.
	must(t, repo, "pin", "rm", "best")
	if _, removed := runGC(t, repo); !strings.Contains(strings.Join(removed, " "), pinnedCID) {
		t.Fatal("an unpinned file survived gc")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Unmounted, gc marks from the persisted tree and history.
	if _, removed := runGC(t, repo); len(removed) != 0 {
		t.Fatalf("gc of the unmounted repo removed %d more blocks", len(removed))
	}
	mnt, _ = mountRepo(t, repo)
	check(filepath.Join(mnt, "kept.bin"), kept)
	check(filepath.Join(mnt, ".versions", "commits", commit, "ckpt", "model.bin"), committed)
}

// Deleting 1 GiB and collecting gives the space back to the filesystem.
func TestGCReturnsDiskSpace(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	const size = 1 << 30
	mnt, stop := mountRepo(t, repo)
	writeFile(t, filepath.Join(mnt, "keep.bin"), randomBytes(7, 8<<20))
	runProgram(t, "", nil, "dd", "if=/dev/urandom", "of="+filepath.Join(mnt, "big.bin"), "bs=1M", fmt.Sprintf("count=%d", size>>20), "conv=fsync", "status=none")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A later mount: the daemon collects while serving.
	mnt, stop = mountRepo(t, repo)
	if err := os.Remove(filepath.Join(mnt, "big.bin")); err != nil {
		t.Fatal(err)
	}
	before := duBytes(t, repo)
	out, _ := runGC(t, repo, "--quiet")
	after := duBytes(t, repo)
	t.Logf("du %d -> %d bytes; gc removed %d blocks, %d bytes", before, after, out.Removed, out.RemovedBytes)
	if out.RemovedBytes < size {
		t.Fatalf("gc removed %d bytes of the %d deleted", out.RemovedBytes, size)
	}
	if freed := before - after; freed < size*9/10 {
		t.Fatalf("du dropped by %d bytes, want at least 90%% of %d", freed, size)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "keep.bin")); err != nil || !bytes.Equal(got, randomBytes(7, 8<<20)) {
		t.Fatalf("keep.bin after gc: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// Four writers create, fsync and rename files over each other for 20
// rounds while gc runs again and again through the mount: every file reads
// back as last written, verify is clean, and after a remount too.
func TestGCRacingWriters(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	const writers, rounds = 4, 20
	var mu sync.Mutex
	want := map[string][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(mnt, fmt.Sprintf("w%d", w))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				errs <- err
				return
			}
			for r := range rounds {
				// Half of each file repeats the file it replaced two
				// rounds ago (garbage by now): the writer finds blocks
				// that gc is about to delete.
				data := append(randomBytes(uint64(w*100+r/2), 1<<20), randomBytes(uint64(w*100+r+50), 512<<10)...)
				tmp := filepath.Join(dir, fmt.Sprintf(".tmp%d", r))
				f, err := os.Create(tmp)
				if err == nil {
					_, err = f.Write(data)
				}
				if err == nil {
					err = f.Sync()
				}
				if f != nil {
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				name := filepath.Join(dir, fmt.Sprintf("f%d", r%3))
				if err == nil {
					err = os.Rename(tmp, name)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, r, err)
					return
				}
				mu.Lock()
				want[name] = data
				mu.Unlock()
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	done := make(chan struct{})
	gcs := 0
	go func() {
		defer close(done)
		for {
			r := ipfrs(t, repo, "gc", "--quiet")
			if r.err != nil {
				errs <- fmt.Errorf("gc: %v: %s", r.err, r.stderr)
				return
			}
			gcs++
			select {
			case <-writersDone:
				return
			default:
			}
		}
	}()
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d gc runs during the writes", gcs)
	must(t, repo, "gc", "--quiet")
	for name, data := range want {
		if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after the race: %v", name, err)
		}
	}
	must(t, repo, "verify")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
	mnt2, _ := mountRepo(t, repo)
	for name, data := range want {
		name = filepath.Join(mnt2, strings.TrimPrefix(name, mnt))
		if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after remount: %v", name, err)
		}
	}
}

// gc killed with SIGKILL after its first deletions leaves a repo that
// verifies, keeps what is pinned, and a later gc finishes the job.
func TestGCKilledMidway(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	keep := filepath.Join(t.TempDir(), "keep.bin")
	writeFile(t, keep, randomBytes(11, 4<<20))
	keepCID := strings.TrimSpace(must(t, repo, "add", "-Q", keep))
	// Many small blocks, so that the sweep takes several batches.
	src := filepath.Join(t.TempDir(), "many")
	for i := range 12000 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d", i)), randomBytes(uint64(1000+i), 512))
	}
	many := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", src))
	must(t, repo, "pin", "rm", many)

	cmd := exec.Command(binary, "--repo", repo, "gc")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sawRemoval := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "removed ") {
			sawRemoval = true
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !sawRemoval {
		t.Fatal("gc printed no removal before it ended")
	}
	must(t, repo, "verify")
	got := must(t, repo, "cat", keepCID)
	if got != string(randomBytes(11, 4<<20)) {
		t.Fatal("the pinned file changed after the killed gc")
	}
	out, _ := runGC(t, repo, "--quiet")
	if out.Removed == 0 {
		t.Fatal("the gc after the crash found nothing left to remove")
	}
	if again, _ := runGC(t, repo, "--quiet"); again.Removed != 0 {
		t.Fatalf("a third gc still removed %d blocks", again.Removed)
	}
	if got := must(t, repo, "cat", keepCID); got != string(randomBytes(11, 4<<20)) {
		t.Fatal("the pinned file changed after gc")
	}
	must(t, repo, "verify")
}

// mount --gc-interval collects by itself: a deleted file's blocks go
// without anyone running gc, and what the tree holds stays.
func TestMountGCInterval(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	// No minimum age (the default keeps a minute's worth of garbage).
	d := startMount(t, repo, "--gc-interval", "100ms", "--gc-min-age", "0")
	kept := randomBytes(21, 2<<20)
	writeFile(t, filepath.Join(d.mnt, "kept.bin"), kept)
	writeFile(t, filepath.Join(d.mnt, "gone.bin"), randomBytes(22, 2<<20))
	gone := xattr(t, filepath.Join(d.mnt, "gone.bin"))
	if err := os.Remove(filepath.Join(d.mnt, "gone.bin")); err != nil {
		t.Fatal(err)
	}
	// Wait for a collection; only the daemon's own timer runs one.
	deadline := time.Now().Add(mountReadyWait)
	for {
		_, err := os.Stat(filepath.Join(d.mnt, ".blocks", gone))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted file's root block is still stored after %v: %v", mountReadyWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := os.ReadFile(filepath.Join(d.mnt, "kept.bin")); err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("kept.bin after the automatic gc: %v", err)
	}
	var st struct {
		LastGC *struct {
			Runs       int64 `json:"runs"`
			FreedBytes int64 `json:"freed_bytes"`
		} `json:"last_gc"`
	}
	if err := json.Unmarshal([]byte(must(t, repo, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.LastGC == nil || st.LastGC.Runs == 0 || st.LastGC.FreedBytes == 0 {
		t.Errorf("status after an automatic gc: last_gc %+v", st.LastGC)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// gc between the writes of a file still open for writing, and while an
// unlinked file is still open for reading: both read back whole.
func TestGCWithOpenFiles(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, _ := mountRepo(t, repo)
	// More than a store batch (32 MiB), so that blocks are committed while
	// nothing refers to them yet.
	first, second := randomBytes(61, 40<<20), randomBytes(62, 8<<20)
	w, err := os.Create(filepath.Join(mnt, "writing.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(first); err != nil {
		t.Fatal(err)
	}
	unlinked := randomBytes(63, 4<<20)
	writeFile(t, filepath.Join(mnt, "unlinked.bin"), unlinked)
	r, err := os.Open(filepath.Join(mnt, "unlinked.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.Remove(filepath.Join(mnt, "unlinked.bin")); err != nil {
		t.Fatal(err)
	}
	// Through the socket from this process: a child process would close
	// its inherited copy of w, and that close (a FUSE flush) would end
	// the write.
	gcThroughSocket(t, repo)
	if _, err := w.Write(second); err != nil {
		t.Fatal(err)
	}
	gcThroughSocket(t, repo)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	gcThroughSocket(t, repo)
	// Read from the daemon, not from the kernel's page cache.
	if err := unix.Fadvise(int(r.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "writing.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, append(first, second...)) {
		t.Fatalf("the file written across gc runs: %d bytes, %v", len(got), err)
	}
	buf := make([]byte, len(unlinked)+1)
	n, err := r.ReadAt(buf, 0)
	if n != len(unlinked) || !bytes.Equal(buf[:n], unlinked) {
		t.Fatalf("the unlinked open file after gc: %d bytes, %v", n, err)
	}
	must(t, repo, "verify")
}

// gcThroughSocket runs gc in the mount daemon by talking to its control
// socket directly, without starting a process.
func gcThroughSocket(t *testing.T, repo string) {
	t.Helper()
	conn, err := net.Dial("unix", filepath.Join(repo, "ipfrs.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(`{"args":["gc"],"cwd":"/"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var out bytes.Buffer
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			t.Fatalf("gc through the socket: %v\n%s", err, out.String())
		}
		payload := make([]byte, bin.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		if hdr[0] == 3 { // exit status
			if payload[0] != 0 {
				t.Fatalf("gc through the socket exited %d:\n%s", payload[0], out.String())
			}
			t.Logf("daemon: %s", strings.TrimSpace(out.String()))
			return
		}
		out.Write(payload)
	}
}
