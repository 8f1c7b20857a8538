package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Kubo 0.44 `ipfs add --cid-version=1 --raw-leaves` (and its unixfs-v1-2025
// profile) gives these CIDs; add --profile must give the same.
func TestAddMatchesKubo(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	tests := []struct {
		file, profile string
		data          []byte
		want          string
	}{
		{"hello.txt", "kubo", []byte("hello world\n"), "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"},
		{"empty", "kubo", nil, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
		{"lin", "kubo", formula("lin", 1048583), "bafybeihiungcesuy6au7fidtl7qv5pioopar6wlkahdklwhpykjoosgse4"},
		{"sq", "kubo", formula("sq", 5242880), "bafybeiagscg3exsat5ifrbt64ee5bokcndtrqi7tuisxxjd2ze6olwjjfu"},
		{"lin175", "kubo", formula("lin", 45613057), "bafybeicwdxbb76mvui4baybplblhw2574qsiivkhtm3vdukwto3g4hd7vm"},
		{"lin", "unixfs-v1-2025", formula("lin", 1048583), "bafybeihgqjgiizoswyyylkqjbyewzozlvgddplz6xuagvgjysin5a5mrg4"},
		{"sq", "unixfs-v1-2025", formula("sq", 5242880), "bafybeiaayejzjf2lfjgc22ddrmlggtmymsmy5u5adco6t2qazh4p4tgqce"},
	}
	for _, tt := range tests {
		t.Run(tt.profile+"/"+tt.file, func(t *testing.T) {
			p := filepath.Join(dir, tt.file)
			writeFile(t, p, tt.data)
			out := must(t, repo, "add", "--profile", tt.profile, p)
			if want := "added " + tt.want + " " + tt.file + "\n"; out != want {
				t.Fatalf("got %q, want %q", out, want)
			}
			if out := must(t, repo, "add", "-Q", "--profile", tt.profile, p); out != tt.want+"\n" {
				t.Fatalf("-Q: got %q", out)
			}
			if got := must(t, repo, "cat", tt.want); got != string(tt.data) {
				t.Fatal("cat differs from the file")
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		d := filepath.Join(dir, "dir")
		writeFile(t, filepath.Join(d, "a.txt"), []byte("a\n"))
		writeFile(t, filepath.Join(d, "sub", "b.bin"), formula("lin", 1048583))
		out := must(t, repo, "add", "-r", "--profile", "kubo", d)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		want := "added bafybeidug53rfakvmng7fiqs6ltit3przkr3ziyfo2oxeifqv4brbhdhrm dir"
		if lines[len(lines)-1] != want {
			t.Fatalf("last line %q, want %q", lines[len(lines)-1], want)
		}
		if !strings.Contains(out, "added bafybeihiungcesuy6au7fidtl7qv5pioopar6wlkahdklwhpykjoosgse4 dir/sub/b.bin\n") {
			t.Fatalf("file line missing:\n%s", out)
		}
		ls := must(t, repo, "ls", "bafybeidug53rfakvmng7fiqs6ltit3przkr3ziyfo2oxeifqv4brbhdhrm")
		if !strings.Contains(ls, " 2 a.txt\n") || !strings.Contains(ls, " sub/\n") {
			t.Fatalf("ls:\n%s", ls)
		}
	})
}

func TestDedupAfterInsertion(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	data := randomBytes(7, 64<<20)
	writeFile(t, filepath.Join(dir, "a"), data)
	edited := append(append(append([]byte(nil), data[:10<<20]...), 0x5a), data[10<<20:]...)
	writeFile(t, filepath.Join(dir, "b"), edited)
	must(t, repo, "add", filepath.Join(dir, "a"))
	before := repoStat(t, repo)
	must(t, repo, "add", filepath.Join(dir, "b"))
	after := repoStat(t, repo)
	if n := after.Blocks - before.Blocks; n > 4 {
		t.Fatalf("second add stored %d new blocks, want at most 4", n)
	}
	if after.DedupRatio < 1.9 {
		t.Fatalf("dedup ratio %.2f after adding two near-identical files", after.DedupRatio)
	}
}

type stat struct {
	Roots        int64   `json:"roots"`
	Blocks       int64   `json:"blocks"`
	LogicalBytes uint64  `json:"logical_bytes"`
	StoredBytes  int64   `json:"stored_bytes"`
	DedupRatio   float64 `json:"dedup_ratio"`
	DiskBytes    int64   `json:"disk_bytes"`
}

func repoStat(t *testing.T, repo string) stat {
	t.Helper()
	var s stat
	if err := json.Unmarshal([]byte(must(t, repo, "stat", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// makeTree writes a small tree of files, returning path -> content.
func makeTree(t *testing.T, root string) map[string][]byte {
	files := map[string][]byte{
		"model/weights.bin":    randomBytes(1, 3<<20+5),
		"model/config.json":    []byte(`{"layers": 2}`),
		"model/empty":          nil,
		"notes.txt":            []byte("checkpoint notes\n"),
		"deep/a/b/c/d/e.bin":   randomBytes(2, 700<<10),
		"dup/weights-copy.bin": nil,
	}
	files["dup/weights-copy.bin"] = files["model/weights.bin"]
	for p, b := range files {
		writeFile(t, filepath.Join(root, p), b)
	}
	if err := os.Symlink("model/weights.bin", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRoundTrips(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	files := makeTree(t, filepath.Join(dir, "tree"))
	root := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", filepath.Join(dir, "tree")))
	for p, want := range files {
		if got := must(t, repo, "cat", root+"/"+p); !bytes.Equal([]byte(got), want) {
			t.Fatalf("cat %s differs", p)
		}
	}
	if ls := must(t, repo, "ls", root); !strings.Contains(ls, " link\n") {
		t.Fatalf("symlink missing from ls:\n%s", ls)
	}
	for _, v := range []string{"1", "2"} {
		t.Run("car-v"+v, func(t *testing.T) {
			car := filepath.Join(dir, "tree-v"+v+".car")
			must(t, repo, "export", root, "-o", car, "--car-version", v)
			fresh := filepath.Join(dir, "fresh-v"+v)
			if out := must(t, fresh, "import", car); out != root+"\n" {
				t.Fatalf("import printed %q, want the root", out)
			}
			for p, want := range files {
				if got := must(t, fresh, "cat", root+"/"+p); !bytes.Equal([]byte(got), want) {
					t.Fatalf("cat %s after import differs", p)
				}
			}
			must(t, fresh, "verify")
		})
	}
}

func TestBadInputFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	makeTree(t, filepath.Join(dir, "tree"))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	root := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", filepath.Join(dir, "tree")))
	car := filepath.Join(dir, "good.car")
	must(t, repo, "export", root, "-o", car)
	good, err := os.ReadFile(car)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "truncated.car"), good[:len(good)/2])
	bad := append([]byte(nil), good...)
	bad[len(bad)-3] ^= 0xff // inside the last block's bytes
	writeFile(t, filepath.Join(dir, "mismatch.car"), bad)
	writeFile(t, filepath.Join(dir, "notacar.car"), []byte("hello, not a car\n"))

	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"missing path", []string{"add", filepath.Join(dir, "nope")}, "no such file"},
		{"unreadable file", []string{"add", "/proc/self/mem"}, "input/output error"},
		{"named pipe", []string{"add", fifo}, "cannot add a named pipe"},
		{"directory without -r", []string{"add", filepath.Join(dir, "tree")}, "is a directory"},
		{"malformed CID", []string{"cat", "bafy-not-a-cid"}, "invalid CID"},
		{"unknown CID", []string{"cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"}, "not in this repo"},
		{"unknown path", []string{"cat", root + "/model/nope"}, "no such file"},
		{"cat a directory", []string{"cat", root + "/model"}, "not a file"},
		{"truncated CAR", []string{"import", filepath.Join(dir, "truncated.car")}, "truncated"},
		{"CAR block not matching its CID", []string{"import", filepath.Join(dir, "mismatch.car")}, "integrity"},
		{"not a CAR", []string{"import", filepath.Join(dir, "notacar.car")}, "not a valid CAR"},
		{"missing CAR", []string{"import", filepath.Join(dir, "nope.car")}, "no such file"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"bad chunker", []string{"add", "--chunker", "size-0", filepath.Join(dir, "tree/notes.txt")}, "size must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := repo
			if tt.args[0] == "import" {
				target = filepath.Join(dir, "fresh-"+strings.ReplaceAll(tt.name, " ", "-"))
			}
			r := ipfrs(t, target, tt.args...)
			if r.err == nil {
				t.Fatalf("succeeded; stdout %q", r.stdout)
			}
			msg := strings.TrimRight(r.stderr, "\n")
			if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "ipfrs-mount: ") || !strings.Contains(msg, tt.wantMsg) {
				t.Fatalf("want one line mentioning %q, got %q", tt.wantMsg, r.stderr)
			}
			must(t, target, "verify")
			if tt.args[0] == "import" {
				// Nothing of a rejected CAR is stored.
				if s := repoStat(t, target); s.Blocks != 0 {
					t.Fatalf("%d blocks stored from a rejected CAR", s.Blocks)
				}
			}
		})
	}
}

func TestVerifyFindsAlteredBlock(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	data := randomBytes(11, 2<<20)
	writeFile(t, filepath.Join(dir, "f"), data)
	must(t, repo, "add", filepath.Join(dir, "f"))
	root := strings.TrimSpace(must(t, repo, "add", "-Q", filepath.Join(dir, "f")))
	must(t, repo, "verify")

	// Edit the value log offline: find a run of the file's bytes and flip one.
	probe := data[1<<20 : 1<<20+64]
	vlogs, _ := filepath.Glob(filepath.Join(repo, "blocks", "*.vlog"))
	altered := false
	for _, v := range vlogs {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, probe); i >= 0 {
			b[i+10] ^= 0x01
			if err := os.WriteFile(v, b, 0o644); err != nil {
				t.Fatal(err)
			}
			altered = true
			break
		}
	}
	if !altered {
		t.Fatal("block bytes not found in the value log")
	}
	r := ipfrs(t, repo, "verify")
	if r.err == nil || !strings.Contains(r.stdout, "corrupt bafkrei") || !strings.Contains(r.stderr, "1 of") {
		t.Fatalf("verify: err %v stdout %q stderr %q", r.err, r.stdout, r.stderr)
	}
	r = ipfrs(t, repo, "cat", root)
	if r.err == nil || !strings.Contains(r.stderr, "fail their checksum") {
		t.Fatalf("cat of a corrupted file: err %v stderr %q", r.err, r.stderr)
	}
	if !bytes.HasPrefix(data, []byte(r.stdout)) {
		t.Fatal("cat wrote bytes that are not the file's")
	}
}
