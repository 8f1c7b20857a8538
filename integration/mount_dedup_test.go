package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestMountDedup copies one 100 MB file into the mount under two names, in
// two mount sessions: the second copy must cost (almost) nothing.
func TestMountDedup(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	data := randomBytes(41, 100_000_000)
	src := filepath.Join(dir, "model.bin")
	writeFile(t, src, data)

	copyIn := func(name string) {
		t.Helper()
		mnt, stop := mountRepo(t, repo)
		runProgram(t, "", nil, "cp", src, filepath.Join(mnt, name))
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}

	copyIn("first.bin")
	one := repoStat(t, repo)
	if one.StoredBytes < int64(len(data))*99/100 {
		t.Fatalf("after one copy of %d bytes the repo stores %d bytes", len(data), one.StoredBytes)
	}
	copyIn("second.bin")
	two := repoStat(t, repo)
	t.Logf("stored bytes: %d after one copy, %d after two", one.StoredBytes, two.StoredBytes)
	if grew := two.StoredBytes - one.StoredBytes; grew*100 >= one.StoredBytes {
		t.Errorf("the second copy added %d stored bytes to %d (%.2f%%), want under 1%%",
			grew, one.StoredBytes, 100*float64(grew)/float64(one.StoredBytes))
	}

	mnt, stop := mountRepo(t, repo)
	for _, name := range []string{"first.bin", "second.bin"} {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v; want the %d copied", name, len(got), err, len(data))
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
