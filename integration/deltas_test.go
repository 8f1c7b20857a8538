package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// checkpointsEqual compares two checkpoint directories: the files byte for
// byte, and what torch loads from them.
const checkpointsEqual = `import json, struct, sys, torch
a, b = sys.argv[1], sys.argv[2]
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
assert tensors(a + "/model.safetensors") == tensors(b + "/model.safetensors"), "weights differ"
oa = torch.load(a + "/optimizer.pt", weights_only=False); ob = torch.load(b + "/optimizer.pt", weights_only=False)
assert oa["param_groups"] == ob["param_groups"], "param groups differ"
for k, s in oa["state"].items():
    for name, t in s.items():
        assert torch.equal(t, ob["state"][k][name]), f"optimizer state {k}.{name} differs"
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
			if out, err := exec.Command(py, "-c", checkpointsEqual, filepath.Join(dir, n), filepath.Join(ref, n)).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("identical")) {
				t.Fatalf("torch reload of %s/%s: %v %s", dir, n, err, out)
			}
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
