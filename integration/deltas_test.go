package integration

import (
	"bytes"
	bin "encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkpointsEqual compares the named checkpoint directories under two
// roots by what torch loads from them.
const checkpointsEqual = `import json, struct, sys, torch
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
root_a, root_b = sys.argv[1], sys.argv[2]
for ckpt in sys.argv[3:]:
    a, b = root_a + "/" + ckpt, root_b + "/" + ckpt
    assert tensors(a + "/model.safetensors") == tensors(b + "/model.safetensors"), ckpt + ": weights differ"
    oa = torch.load(a + "/optimizer.pt", weights_only=False); ob = torch.load(b + "/optimizer.pt", weights_only=False)
    assert oa["param_groups"] == ob["param_groups"], ckpt + ": param groups differ"
    for k, s in oa["state"].items():
        for name, t in s.items():
            assert torch.equal(t, ob["state"][k][name]), f"{ckpt}: optimizer state {k}.{name} differs"
print("identical")`

// A torch training job writes checkpoints into new directories of the
// mount as frameworks do (bf16 weights by temporary name, fsync and rename;
// the optimizer by torch.save). Stored with the defaults (compression and
// tensor deltas), every checkpoint reloads bit-exact, also from .versions
// after a commit, and the weights cost far less than their size.
func TestTrainingCheckpointsThroughTheMount(t *testing.T) {
	requireFUSE(t)
	py := python(t)
	repo := filepath.Join(t.TempDir(), "repo")
	ref := t.TempDir()
	mnt, stop := mountRepo(t, repo)
	run := filepath.Join(mnt, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	const checkpoints = 6
	before := repoStat(t, repo).StoredBytes
	out, err := exec.Command(py, "testdata/train_checkpoints.py", run, ref, fmt.Sprint(checkpoints), "5", "128").CombinedOutput()
	if err != nil {
		t.Fatalf("training: %v\n%s", err, out)
	}
	names := strings.Fields(string(out))
	if len(names) != checkpoints {
		t.Fatalf("training wrote %v", names)
	}
	var raw, weights int64
	for _, n := range names {
		for _, f := range []string{"model.safetensors", "optimizer.pt"} {
			fi, err := os.Stat(filepath.Join(ref, n, f))
			if err != nil {
				t.Fatal(err)
			}
			raw += fi.Size()
			if f == "model.safetensors" {
				weights += fi.Size()
			}
		}
	}
	stored := repoStat(t, repo).StoredBytes - before
	t.Logf("%d checkpoints: %d raw bytes (weights %d), stored %d (%.3f of raw)", checkpoints, raw, weights, stored, float64(stored)/float64(raw))
	if stored >= raw {
		t.Errorf("stored %d bytes for %d raw: compression and deltas saved nothing", stored, raw)
	}

	same := func(dir string) {
		t.Helper()
		for _, n := range names {
			for _, f := range []string{"model.safetensors", "optimizer.pt"} {
				got, err := os.ReadFile(filepath.Join(dir, n, f))
				if err != nil {
					t.Fatal(err)
				}
				want, _ := os.ReadFile(filepath.Join(ref, n, f))
				if !bytes.Equal(got, want) {
					t.Fatalf("%s/%s/%s differs from what was written", dir, n, f)
				}
			}
		}
		args := append([]string{"-c", checkpointsEqual, dir, ref}, names...)
		if out, err := exec.Command(py, args...).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("identical")) {
			t.Fatalf("torch reload of the checkpoints in %s: %v %s", dir, err, out)
		}
	}
	same(run)
	commit := strings.TrimSpace(must(t, repo, "commit", "-m", "training run"))
	same(filepath.Join(mnt, ".versions", "commits", commit, "run"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Cold, after a remount: every block of every checkpoint, base or
	// delta, rebuilt from the store.
	mnt, stop = mountRepo(t, repo)
	same(filepath.Join(mnt, "run"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// fsx-style random rewrites of one file, each batch made durable with
// fsync: without collection every version's blocks would stay; with the
// mount's background GC the store stays within a small multiple of the
// live data. (The mount runs GC every minute by default; the test makes
// the interval and the minimum age short to see several runs.)
func TestRewritesDoNotGrowTheRepo(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	d := startMount(t, repo, "--gc-interval", "1s", "--gc-min-age", "1s")
	const size = 256 << 10
	model := randomBytes(21, size)
	path := filepath.Join(d.mnt, "db")
	writeFile(t, path, model)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	const writes, syncEvery = 4000, 10
	var written int64
	maxStored := int64(0)
	for i := range writes {
		n := 1 + rng.IntN(8<<10)
		off := rng.IntN(size - n)
		b := randomBytes(uint64(i), n)
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], b)
		if i%syncEvery == syncEvery-1 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			written += size // each fsync stores a new version of the file
		}
		if i%1000 == 999 {
			st := repoStat(t, repo).StoredBytes
			maxStored = max(maxStored, st)
			t.Logf("after %d writes: %d versions, stored %d bytes", i+1, (i+1)/syncEvery, st)
		}
	}
	// Give the background GC a couple of runs past the minimum age.
	var st int64
	for range 30 {
		time.Sleep(time.Second)
		if st = repoStat(t, repo).StoredBytes; st <= 4*size {
			break
		}
	}
	t.Logf("versions written %d bytes; stored at most %d, at the end %d, for %d live", written, maxStored, st, size)
	if st > 4*size {
		t.Errorf("the store holds %d bytes for %d of live data", st, size)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("the file differs from what was written")
	}
}

// checkpointFile returns a safetensors file of bf16 weights after step
// small training steps (the same tensors, names and shapes every step).
func checkpointFile(t *testing.T, step int) []byte {
	t.Helper()
	names := []string{"layer.0.weight", "layer.1.weight", "norm.weight"}
	counts := []int{1536 * 1024, 640 * 1024, 1024}
	shapes := []string{"[1536,1024]", "[640,1024]", "[1024]"}
	rng := rand.New(rand.NewPCG(9, 9))
	var header []string
	var data []byte
	for i, n := range counts {
		w := make([]float64, n)
		for k := range w {
			w[k] = rng.NormFloat64() * 0.02
		}
		for s := range step {
			noise := rand.New(rand.NewPCG(uint64(i), uint64(s)))
			for k := range w {
				w[k] += noise.NormFloat64() * 2e-4
			}
		}
		start := len(data)
		for _, x := range w {
			bits := math.Float32bits(float32(x)) >> 16
			data = append(data, byte(bits), byte(bits>>8))
		}
		header = append(header, fmt.Sprintf(`%q:{"dtype":"BF16","shape":%s,"data_offsets":[%d,%d]}`, names[i], shapes[i], start, len(data)))
	}
	h := []byte("{" + strings.Join(header, ",") + "}")
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := bin.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

// Checkpoints added one after another are stored as deltas; exported as a
// CAR, the latest imports into a fresh repo with the same CIDs and bytes
// (blocks leave the store raw); --profile kubo CIDs do not change.
func TestDeltaStoredCheckpointsExportAndImport(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	plain := filepath.Join(dir, "plain")
	var roots []string
	var raw int64
	for step := range 4 {
		p := filepath.Join(dir, fmt.Sprintf("ckpt-%d.safetensors", step))
		data := checkpointFile(t, step)
		writeFile(t, p, data)
		raw += int64(len(data))
		roots = append(roots, strings.TrimSpace(must(t, repo, "add", "-Q", p)))
		if got := strings.TrimSpace(must(t, plain, "add", "-Q", "--compress=false", p)); got != roots[step] {
			t.Fatalf("step %d: CID %s with deltas, %s without", step, roots[step], got)
		}
	}
	withDeltas, without := repoStat(t, repo).StoredBytes, repoStat(t, plain).StoredBytes
	t.Logf("4 checkpoints of %d bytes: stored %d with deltas, %d without", raw, withDeltas, without)
	if withDeltas*2 > without {
		t.Errorf("deltas stored %d bytes, not under half of %d", withDeltas, without)
	}
	car := filepath.Join(dir, "latest.car")
	must(t, repo, "export", roots[3], "-o", car)
	fresh := filepath.Join(dir, "fresh")
	if out := must(t, fresh, "import", car); out != roots[3]+"\n" {
		t.Fatalf("import printed %q, want %s", out, roots[3])
	}
	if got := must(t, fresh, "cat", roots[3]); got != string(checkpointFile(t, 3)) {
		t.Fatal("the imported checkpoint differs")
	}
	must(t, fresh, "verify")
	must(t, repo, "verify")
	kubo := strings.TrimSpace(must(t, repo, "add", "-Q", "--profile", "kubo", filepath.Join(dir, "ckpt-3.safetensors")))
	if want := strings.TrimSpace(must(t, plain, "add", "-Q", "--profile", "kubo", "--compress=false", filepath.Join(dir, "ckpt-3.safetensors"))); kubo != want {
		t.Fatalf("--profile kubo: %s with compression, %s without", kubo, want)
	}
}

// A damaged base fails every read of the blocks stored against it, and
// verify names the base and each delta of it.
func TestDamagedDeltaBase(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	base, next := checkpointFile(t, 0), checkpointFile(t, 1)
	writeFile(t, filepath.Join(dir, "a.safetensors"), base)
	writeFile(t, filepath.Join(dir, "b.safetensors"), next)
	// The base stored plainly, so that its bytes can be found on disk.
	must(t, repo, "add", "-Q", "--compress=false", filepath.Join(dir, "a.safetensors"))
	// Record it as the base of its tensors (a plain add does not).
	must(t, repo, "add", "-Q", filepath.Join(dir, "a.safetensors"))
	b := strings.TrimSpace(must(t, repo, "add", "-Q", filepath.Join(dir, "b.safetensors")))
	must(t, repo, "verify")
	hdr := int(bin.LittleEndian.Uint64(base)) + 8
	probe := base[hdr+(1<<20)+4096 : hdr+(1<<20)+4096+64] // inside the second chunk of the first tensor
	vlogs, _ := filepath.Glob(filepath.Join(repo, "blocks", "*.vlog"))
	altered := false
	for _, v := range vlogs {
		data, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(data, probe); i >= 0 {
			data[i+5] ^= 0x10
			if err := os.WriteFile(v, data, 0o644); err != nil {
				t.Fatal(err)
			}
			altered = true
			break
		}
	}
	if !altered {
		t.Fatal("the base's bytes are not in the value log")
	}
	r := ipfrs(t, repo, "verify")
	deltaOf := regexp.MustCompile(`corrupt (\S+) \(stored as a delta of (\S+)\)`).FindAllStringSubmatch(r.stdout, -1)
	if r.err == nil || len(deltaOf) == 0 {
		t.Fatalf("verify: err %v\n%s", r.err, r.stdout)
	}
	for _, m := range deltaOf {
		if !strings.Contains(r.stdout, "corrupt "+m[2]+"\n") {
			t.Errorf("verify names %s as the damaged base of %s, but not as corrupt itself:\n%s", m[2], m[1], r.stdout)
		}
	}
	r = ipfrs(t, repo, "cat", b)
	if r.err == nil || !strings.Contains(r.stderr, "delta base") {
		t.Fatalf("cat of a file stored against a damaged base: err %v stderr %q", r.err, r.stderr)
	}
	if !bytes.HasPrefix(next, []byte(r.stdout)) {
		t.Fatal("cat wrote bytes that are not the file's")
	}
}
