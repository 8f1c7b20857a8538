package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// npmClients is where scripts/setup.sh installs ipfs-car,
// @helia/verified-fetch and Node 22 (see testdata/npm/package.json).
const npmClients = "testdata/npm"

// requireNPMClients returns the node binary the clients run on. Without
// the clients the test is skipped, except in CI, where setup installs
// them and their absence is a failure.
func requireNPMClients(t *testing.T) string {
	t.Helper()
	node, err := filepath.Abs(filepath.Join(npmClients, "node_modules", ".bin", "node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(npmClients, "node_modules", ".installed")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the npm clients are not installed (scripts/setup.sh installs them): %v", err)
		}
		t.Skipf("the npm clients are not installed; scripts/setup.sh installs them: %v", err)
	}
	return node
}

// runNode runs a JS program of the clients' with Node 22.
func runNode(t *testing.T, node string, args ...string) string {
	t.Helper()
	cmd := exec.Command(node, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// treeSums maps each regular file under root (slash paths relative to
// root) to its sha256.
func treeSums(t *testing.T, root string) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		sums[filepath.ToSlash(rel)] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func sameSums(t *testing.T, what string, got, want map[string][32]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d (%v)", what, len(got), len(want), keys(got))
	}
	for p, s := range want {
		if g, ok := got[p]; !ok || g != s {
			t.Errorf("%s: %s missing or with other bytes", what, p)
		}
	}
}

func keys(m map[string][32]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The npm clients other IPFS users run, against serve on 127.0.0.1:
// ipfs-car packs what we import and unpacks what we export (CARv1 and
// CARv2); @helia/verified-fetch, verifying every block it gets from our
// trustless gateway, reads a FastCDC file, a file by path and a directory
// (as a tar) with the bytes we added.
func TestNPMClients(t *testing.T) {
	node := requireNPMClients(t)
	ipfsCar, err := filepath.Abs(filepath.Join(npmClients, "node_modules", "ipfs-car", "bin.js"))
	if err != nil {
		t.Fatal(err)
	}
	vfetch, err := filepath.Abs(filepath.Join(npmClients, "verified_fetch.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "model.bin"), randomBytes(91, 5<<20+777)) // many FastCDC chunks
	writeFile(t, filepath.Join(src, "ckpt", "step 1", "opt.bin"), randomBytes(92, 300<<10))
	writeFile(t, filepath.Join(src, "ckpt", "notes.txt"), []byte("notes\n"))
	writeFile(t, filepath.Join(src, "empty"), nil)
	want := treeSums(t, src)
	repo := filepath.Join(dir, "repo")
	root := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", src))
	file := strings.TrimSpace(must(t, repo, "add", "-Q", filepath.Join(src, "model.bin")))
	gw := startServe(t, repo)

	t.Run("verified-fetch", func(t *testing.T) {
		out := t.TempDir()
		runNode(t, node, vfetch, gw,
			"ipfs://"+file, "-", filepath.Join(out, "file"),
			"ipfs://"+root+"/ckpt/step%201/opt.bin", "-", filepath.Join(out, "by-path"),
			"ipfs://"+root, "application/x-tar", filepath.Join(out, "dir.tar"))
		got := treeSums(t, out)
		if got["file"] != want["model.bin"] {
			t.Error("the FastCDC file came back with other bytes")
		}
		if got["by-path"] != want["ckpt/step 1/opt.bin"] {
			t.Error("the file by path came back with other bytes")
		}
		sameSums(t, "directory (tar)", untarSums(t, filepath.Join(out, "dir.tar"), root+"/"), want)
	})

	t.Run("ipfs-car pack, import", func(t *testing.T) {
		car := filepath.Join(dir, "packed.car")
		runNode(t, node, ipfsCar, "pack", src, "--no-wrap", "--output", car)
		packed := strings.TrimSpace(runNode(t, node, ipfsCar, "roots", car))
		other := filepath.Join(dir, "other")
		if got := strings.TrimSpace(must(t, other, "import", car)); got != packed {
			t.Fatalf("import printed %q, ipfs-car's root is %q", got, packed)
		}
		for p, s := range want {
			if sha256.Sum256([]byte(must(t, other, "cat", packed+"/"+p))) != s {
				t.Errorf("cat %s of the imported CAR: other bytes", p)
			}
		}
		must(t, other, "verify")
	})

	for _, v := range []string{"1", "2"} {
		t.Run("export CARv"+v+", ipfs-car unpack", func(t *testing.T) {
			car := filepath.Join(dir, "export-v"+v+".car")
			must(t, repo, "export", root, "-o", car, "--car-version", v)
			out := filepath.Join(dir, "unpacked-v"+v)
			runNode(t, node, ipfsCar, "unpack", car, "--output", out)
			sameSums(t, "unpacked CARv"+v, treeSums(t, out), want)
		})
	}
}

// untarSums maps each regular file of a tar, its name with prefix cut, to
// its sha256.
func untarSums(t *testing.T, path, prefix string) map[string][32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string][32]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return sums
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		sums[strings.TrimPrefix(h.Name, prefix)] = sha256.Sum256(b)
	}
}
