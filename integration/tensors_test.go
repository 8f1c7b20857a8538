package integration

import (
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// python returns Debian's interpreter with numpy and torch, the one the
// model tests need (the first python3 on PATH may not see them).
func python(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy, torch").Run(); err != nil {
		if inCI() {
			t.Fatalf("%s with numpy and torch is required in CI: %v", py, err)
		}
		t.Skipf("%s with numpy and torch not available: %v", py, err)
	}
	return py
}

// tensorBytes sums the data bytes of the tensors whose names contain any of
// the given parts.
func tensorBytes(t *testing.T, path string, parts ...string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n uint64
	if err := bin.Read(f, bin.LittleEndian, &n); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, n)
	if _, err := f.Read(head); err != nil {
		t.Fatal(err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(head, &h); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for name, raw := range h {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			Offsets [2]int64 `json:"data_offsets"`
		}
		json.Unmarshal(raw, &info)
		for _, p := range parts {
			if strings.Contains(name, p) {
				sum += info.Offsets[1] - info.Offsets[0]
				break
			}
		}
	}
	return sum
}

// The model family written through the mount dedups tensor by tensor, loads
// bit-exact with PyTorch by path, and every tensor is a file of its own
// under .tensors.
func TestModelFamilyThroughTheMount(t *testing.T) {
	requireFUSE(t)
	py := python(t)
	src := t.TempDir()
	if b, err := exec.Command(py, "testdata/gen_models.py", src, "0.01").CombinedOutput(); err != nil {
		t.Fatalf("gen_models.py: %v %s", err, b)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	stored := func() int64 { return repoStat(t, repo).StoredBytes }
	grew := map[string]int64{}
	for _, name := range []string{"base", "finetune", "step2", "reordered"} {
		before := stored()
		if b, err := exec.Command("cp", filepath.Join(src, name+".safetensors"), mnt).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", name, err, b)
		}
		grew[name] = stored() - before
		t.Logf("%s: stored bytes grew by %d", name, grew[name])
	}
	fi, _ := os.Stat(filepath.Join(src, "reordered.safetensors"))
	if grew["reordered"] > fi.Size()/100 {
		t.Errorf("reordered added %d bytes, more than 1%% of %d", grew["reordered"], fi.Size())
	}
	changed := tensorBytes(t, filepath.Join(src, "finetune.safetensors"), "q_proj", "v_proj")
	if grew["finetune"] > changed*105/100 {
		t.Errorf("finetune added %d bytes, more than 1.05 x its %d changed bytes", grew["finetune"], changed)
	}

	// PyTorch by path, bit-exact, after cp and after a temp-name writer.
	for _, name := range []string{"base", "reordered"} {
		out, err := exec.Command(py, "testdata/load_safetensors.py", filepath.Join(mnt, name+".safetensors"),
			"--check", filepath.Join(src, name+".safetensors")).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("identical")) {
			t.Fatalf("load %s: %v %s", name, err, out)
		}
	}
	writer := `import os, sys
src, dst = sys.argv[1], sys.argv[2]
tmp = os.path.join(os.path.dirname(dst), ".tmp" + os.urandom(4).hex())
with open(src, "rb") as f, open(tmp, "wb") as g:
    while True:
        b = f.read(1 << 20)
        if not b: break
        g.write(b)
    g.flush(); os.fsync(g.fileno())
os.rename(tmp, dst)
`
	dst := filepath.Join(mnt, "ckpt", "model.safetensors")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if out, err := exec.Command(py, "-c", writer, filepath.Join(src, "step2.safetensors"), dst).CombinedOutput(); err != nil {
		t.Fatalf("python writer: %v %s", err, out)
	}
	if out, err := exec.Command(py, "testdata/load_safetensors.py", dst, "--check", filepath.Join(src, "step2.safetensors")).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("identical")) {
		t.Fatalf("load after temp+rename: %v %s", err, out)
	}
	// MAP_SHARED, as numpy.memmap(mode='r') maps.
	shared := `import numpy, sys
a = numpy.memmap(sys.argv[1], mode="r"); b = numpy.fromfile(sys.argv[2], dtype=numpy.uint8)
sys.exit(0 if a.shape == b.shape and (a == b).all() else 1)`
	if out, err := exec.Command(py, "-c", shared, dst, filepath.Join(src, "step2.safetensors")).CombinedOutput(); err != nil {
		t.Fatalf("numpy.memmap of the mounted file differs: %v %s", err, out)
	}

	// One tensor by path from .tensors, as .safetensors and as .npy.
	view := filepath.Join(mnt, ".tensors", "ckpt", "model.safetensors")
	ents, err := os.ReadDir(view)
	if err != nil {
		t.Fatal(err)
	}
	var tensor string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".npy") {
			tensor = strings.TrimSuffix(e.Name(), ".npy")
			break
		}
	}
	if tensor == "" {
		t.Fatalf("no .npy tensor under %s: %v", view, ents)
	}
	check := `import json, struct, sys, numpy, torch
model, one, npy, name = sys.argv[1:5]
def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    return h, data, 8 + n
h, data, base = load(model)
a, b = h[name]["data_offsets"]
want = data[a:b]
h1, d1, _ = load(one)
assert list(h1) == [name] and h1[name]["data_offsets"] == [0, b - a] and d1 == want, "single-tensor file differs"
arr = numpy.load(npy, mmap_mode="r")
assert arr.tobytes() == want and list(arr.shape) == h[name]["shape"], "npy differs"
print("ok")`
	if out, err := exec.Command(py, "-c", check, dst, filepath.Join(view, tensor+".safetensors"), filepath.Join(view, tensor+".npy"), tensor).CombinedOutput(); err != nil {
		t.Fatalf(".tensors views: %v %s", err, out)
	}
	if out, err := exec.Command(py, "testdata/load_safetensors.py", filepath.Join(view, tensor+".safetensors")).CombinedOutput(); err != nil {
		t.Fatalf("loading one tensor by path: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(view, "header.json")); err != nil {
		t.Fatal(err)
	}

	// The same views for a committed version, after the file changed.
	commit := strings.TrimSpace(must(t, repo, "commit", "-m", "step2"))
	if b, err := exec.Command("cp", filepath.Join(src, "base.safetensors"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp over: %v %s", err, b)
	}
	old := filepath.Join(mnt, ".versions", "commits", commit, "ckpt", "model.safetensors")
	oldView := filepath.Join(mnt, ".tensors", ".versions", "commits", commit, "ckpt", "model.safetensors")
	if out, err := exec.Command(py, "-c", check, old, filepath.Join(oldView, tensor+".safetensors"), filepath.Join(oldView, tensor+".npy"), tensor).CombinedOutput(); err != nil {
		t.Fatalf(".tensors of a commit: %v %s", err, out)
	}
	// And the working tree's view follows the new content.
	if out, err := exec.Command(py, "-c", check, dst, filepath.Join(view, tensor+".safetensors"), filepath.Join(view, tensor+".npy"), tensor).CombinedOutput(); err != nil {
		t.Fatalf(".tensors after the file changed: %v %s", err, out)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Malformed safetensors files stay ordinary files: readable byte for byte,
// while their .tensors entry reports EIO; the daemon keeps running.
func TestMalformedSafetensors(t *testing.T) {
	requireFUSE(t)
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)
	le := func(n uint64) []byte { b := make([]byte, 8); bin.LittleEndian.PutUint64(b, n); return b }
	file := func(header string, data int) []byte {
		return append(append(le(uint64(len(header))), header...), make([]byte, data)...)
	}
	cases := map[string][]byte{
		"empty":           {},
		"seven-bytes":     []byte("1234567"),
		"length-past-eof": append(le(1000), '{'),
		"huge-length":     append(le(1<<62), '{'),
		"invalid-json":    file(`{"a": {`, 0),
		"json-array":      file(`[1,2]`, 0),
		"unknown-dtype":   file(`{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,1]}}`, 1),
		"negative-dim":    file(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`, 1),
		"overflow":        file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8),
		"wrong-size":      file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"overlap":         file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6),
		"gap":             file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 6),
		"not-from-zero":   file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4),
		"begin-after-end": file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[3,2]}}`, 3),
		"trailing-bytes":  file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 5),
		"short-data":      file(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 3),
		"bad-metadata":    file(`{"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1),
		"three-offsets":   file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 1),
		"float-offsets":   file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1.5]}}`, 2),
		"duplicate-names": file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2),
		"missing-shape":   file(`{"a":{"dtype":"U8","data_offsets":[0,1]}}`, 1),
	}
	for name, data := range cases {
		p := filepath.Join(mnt, name+".safetensors")
		writeFile(t, p, data)
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: reading it back: %v", name, err)
		}
		_, err := os.ReadDir(filepath.Join(mnt, ".tensors", name+".safetensors"))
		if err == nil {
			t.Errorf("%s: .tensors lists a malformed file", name)
		}
	}
	// Still serving.
	writeFile(t, filepath.Join(mnt, "after.txt"), []byte("ok"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
