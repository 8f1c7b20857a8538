package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// add --json and verify --json print what the text output says, in the
// documented shapes.
func TestJSONOutputs(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "src")
	files := makeTree(t, src)

	text := must(t, repo, "add", "-r", src)
	lines := strings.Split(strings.TrimSpace(must(t, repo, "add", "-r", "--json", src)), "\n")
	type added struct {
		Name string `json:"name"`
		CID  string `json:"cid"`
		Size uint64 `json:"size"`
	}
	var root added
	for _, l := range lines {
		var a added
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("add --json line %q: %v", l, err)
		}
		if !strings.Contains(text, fmt.Sprintf("added %s %s\n", a.CID, a.Name)) {
			t.Errorf("add --json %+v is not in the text output:\n%s", a, text)
		}
		if rel := strings.TrimPrefix(a.Name, "src/"); files[rel] != nil && uint64(len(files[rel])) != a.Size {
			t.Errorf("%s: size %d, want %d", a.Name, a.Size, len(files[rel]))
		}
		root = a
	}
	var quiet added
	if err := json.Unmarshal([]byte(must(t, repo, "add", "-r", "-Q", "--json", src)), &quiet); err != nil || quiet != root {
		t.Errorf("add -Q --json: %+v %v, want %+v", quiet, err, root)
	}

	var v struct {
		Blocks     int64    `json:"blocks"`
		Corrupt    []string `json:"corrupt"`
		Unreadable []string `json:"unreadable"`
	}
	if err := json.Unmarshal([]byte(must(t, repo, "verify", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Blocks != repoStat(t, repo).Blocks || v.Corrupt == nil || len(v.Corrupt) != 0 || len(v.Unreadable) != 0 {
		t.Errorf("verify --json: %+v", v)
	}
}
