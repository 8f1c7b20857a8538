package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	bin "encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"
)

// pbBlock is a dag-pb block being built by hand, so that the test can make
// nodes no importer would: any names, any number of links, any nesting.
type pbLink struct {
	cid   cid.Cid
	name  string
	tsize uint64
}

func pbVarint(b []byte, v uint64) []byte { return bin.AppendUvarint(b, v) }

func pbBytes(b []byte, field int, v []byte) []byte {
	b = pbVarint(b, uint64(field<<3|2))
	b = pbVarint(b, uint64(len(v)))
	return append(b, v...)
}

// encodePB encodes a dag-pb node (links, then data, as dag-pb orders them).
func encodePB(links []pbLink, data []byte) []byte {
	var out []byte
	for _, l := range links {
		var lb []byte
		lb = pbBytes(lb, 1, l.cid.Bytes())
		lb = pbBytes(lb, 2, []byte(l.name))
		lb = pbVarint(lb, 3<<3)
		lb = pbVarint(lb, l.tsize)
		out = pbBytes(out, 2, lb)
	}
	return pbBytes(out, 1, data)
}

// unixfsDir and unixfsFile are the UnixFS Data of a directory and of a file
// whose children hold sizes bytes each.
func unixfsDir() []byte { return []byte{0x08, 0x01} }

func unixfsFile(sizes ...uint64) []byte {
	b := []byte{0x08, 0x02}
	var total uint64
	for _, s := range sizes {
		total += s
	}
	b = pbVarint(append(b, 0x18), total)
	for _, s := range sizes {
		b = pbVarint(append(b, 0x20), s)
	}
	return b
}

func cidOfBlock(codec uint64, data []byte) cid.Cid {
	sum := sha256.Sum256(data)
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	return cid.NewCidV1(codec, h)
}

type carBlock struct {
	cid  cid.Cid
	data []byte
}

// writeCAR writes a CARv1 with roots and blocks, as given (the CID of a
// block is not checked).
func writeCAR(t *testing.T, path string, roots []cid.Cid, blocks []carBlock) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := carstorage.NewWritable(f, roots, carstorageV1())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := w.Put(context.Background(), b.cid.KeyString(), b.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
}

// runMeasured runs the binary and returns its result and peak RSS. The RSS
// comes from /usr/bin/time: the rusage of a child of the test process
// starts from the test's own peak (Go starts children with vfork), while
// time's child starts from time's.
func runMeasured(t *testing.T, repo string, args ...string) (result, int64) {
	t.Helper()
	timeBin := requireProgram(t, "time")
	rssFile := filepath.Join(t.TempDir(), "maxrss")
	cmd := exec.Command(timeBin, append([]string{"-q", "-o", rssFile, "-f", "%M", binary, "--repo", repo}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var kb int64
	if b, rerr := os.ReadFile(rssFile); rerr == nil {
		fmt.Sscan(strings.TrimSpace(string(b)), &kb)
	}
	return result{out.String(), errb.String(), err}, kb << 10
}

// hostileInput feeds the CLI and the mount inputs built to break them:
// each gives a clear error or a correct answer, never a panic, a path
// outside the tree, or unbounded memory.
func hostileInput(t *testing.T, cfg reliabilityConfig, c *tally) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	leaf := []byte("leaf\n")
	leafCID := cidOfBlock(cid.Raw, leaf)

	// A directory whose entries have names no directory may have.
	badNames := []string{"..", ".", "a/b", "x\x00y", "", "ok"}
	var links []pbLink
	for _, n := range badNames {
		links = append(links, pbLink{leafCID, n, uint64(len(leaf))})
	}
	badDir := encodePB(links, unixfsDir())
	badDirCID := cidOfBlock(cid.DagProtobuf, badDir)

	// A file node with as many links as fit in a 2 MiB block.
	const wide = 40000
	links = links[:0]
	sizes := make([]uint64, wide)
	for i := range wide {
		links = append(links, pbLink{leafCID, "", uint64(len(leaf))})
		sizes[i] = uint64(len(leaf))
	}
	wideFile := encodePB(links, unixfsFile(sizes...))
	wideCID := cidOfBlock(cid.DagProtobuf, wideFile)

	// A dag-pb node with 10^6 links: about 40 MB, over the 2 MiB limit.
	links = links[:0]
	for range 1_000_000 {
		links = append(links, pbLink{leafCID, "", 5})
	}
	huge := encodePB(links, unixfsDir())
	hugeCID := cidOfBlock(cid.DagProtobuf, huge)

	// A chain of directories 20000 deep, and of file nodes 20000 deep.
	const depth = 20000
	var chain []carBlock
	dirAt, fileAt := leafCID, leafCID
	for range depth {
		d := encodePB([]pbLink{{dirAt, "d", 1}}, unixfsDir())
		dirAt = cidOfBlock(cid.DagProtobuf, d)
		f := encodePB([]pbLink{{fileAt, "", uint64(len(leaf))}}, unixfsFile(uint64(len(leaf))))
		fileAt = cidOfBlock(cid.DagProtobuf, f)
		chain = append(chain, carBlock{dirAt, d}, carBlock{fileAt, f})
	}

	// CIDs of codecs and hash functions nobody knows.
	sum := sha256.Sum256(leaf)
	unknownHash, _ := mh.Encode(sum[:], 0x99)
	h256, _ := mh.Encode(sum[:], mh.SHA2_256)
	unknownCodecCID := cid.NewCidV1(0x3f0000, h256)
	unknownHashCID := cid.NewCidV1(cid.Raw, unknownHash)

	leafBlock := carBlock{leafCID, leaf}
	cars := []struct {
		name    string
		roots   []cid.Cid
		blocks  []carBlock
		wantErr string // "" when the import must succeed
	}{
		{"block not matching its CID", []cid.Cid{leafCID}, []carBlock{{leafCID, []byte("not the leaf\n")}}, "integrity"},
		{"absent root", []cid.Cid{cidOfBlock(cid.Raw, []byte("absent"))}, []carBlock{leafBlock}, "neither in the CAR nor in the repo"},
		{"node with 10^6 links", []cid.Cid{hugeCID}, []carBlock{leafBlock, {hugeCID, huge}}, "section"},
		{"unknown hash function", []cid.Cid{unknownHashCID}, []carBlock{{unknownHashCID, leaf}}, "hash"},
		{"unknown codec", []cid.Cid{unknownCodecCID}, []carBlock{{unknownCodecCID, leaf}}, ""},
		{"bad names", []cid.Cid{badDirCID}, []carBlock{leafBlock, {badDirCID, badDir}}, ""},
		{"wide file", []cid.Cid{wideCID}, []carBlock{leafBlock, {wideCID, wideFile}}, ""},
		{"deep chains", []cid.Cid{dirAt, fileAt}, append([]carBlock{leafBlock}, chain...), ""},
	}
	for _, tt := range cars {
		t.Run("import/"+tt.name, func(t *testing.T) {
			car := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".car")
			writeCAR(t, car, tt.roots, tt.blocks)
			r, rss := runMeasured(t, repo, "import", car)
			checkHostile(t, c, r, rss, tt.wantErr)
		})
	}
	// Truncated anywhere: inside a section's length, its CID, its data.
	good := filepath.Join(dir, "bad-names.car")
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(b) - 1, len(b) - len(badDir)/2, len(b) - len(badDir) - 10, len(b) - len(badDir) - 38} {
		t.Run(fmt.Sprintf("import/truncated at %d of %d", cut, len(b)), func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("cut-%d.car", cut))
			writeFile(t, p, b[:cut])
			r, rss := runMeasured(t, filepath.Join(dir, fmt.Sprintf("fresh-%d", cut)), "import", p)
			checkHostile(t, c, r, rss, "CAR")
		})
	}

	// What was imported, read back by the CLI.
	deepPath := dirAt.String() + strings.Repeat("/d", 200)
	reads := []struct {
		name    string
		args    []string
		wantErr string
		want    string
	}{
		{"cat ..", []string{"cat", badDirCID.String() + "/.."}, "not a file", ""}, // the directory itself, never the entry named ".."
		{"cat a/b", []string{"cat", badDirCID.String() + "/a/b"}, "no such file", ""},
		{"cat ok", []string{"cat", badDirCID.String() + "/ok"}, "", string(leaf)},
		{"ls bad names", []string{"ls", badDirCID.String()}, "", " ok\n"},
		{"cat wide file", []string{"cat", wideCID.String()}, "", strings.Repeat(string(leaf), wide)},
		{"cat deep file", []string{"cat", fileAt.String()}, "", string(leaf)},
		{"ls deep directory", []string{"ls", deepPath}, "", " d/\n"},
		{"cat unknown codec", []string{"cat", unknownCodecCID.String()}, "codec", ""},
		{"ls unknown codec", []string{"ls", unknownCodecCID.String()}, "codec", ""},
		{"cat unknown hash", []string{"cat", unknownHashCID.String()}, "not in this repo", ""},
		{"export unknown hash", []string{"export", unknownHashCID.String(), "-o", filepath.Join(dir, "x.car")}, "not in this repo", ""},
	}
	for _, tt := range reads {
		t.Run("cli/"+tt.name, func(t *testing.T) {
			r, rss := runMeasured(t, repo, tt.args...)
			checkHostile(t, c, r, rss, tt.wantErr)
			if tt.wantErr == "" && !strings.Contains(r.stdout, tt.want) {
				t.Errorf("printed %.200q, want it to hold %.100q", r.stdout, tt.want)
			}
		})
	}
	must(t, repo, "verify")

	// The same through the mount's .ipfs view.
	d := suiteMount(t, c, repo)
	t.Run("mount/.ipfs bad names", func(t *testing.T) {
		c.runWith(1)
		c.fault(1)
		entries, err := os.ReadDir(filepath.Join(d.mnt, ".ipfs", badDirCID.String()))
		if err != nil {
			t.Fatalf("listing a directory with bad names: %v", err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != 1 || names[0] != "ok" {
			t.Errorf("listed %q, want only the valid name", names)
		}
		parent, err := os.Stat(filepath.Join(d.mnt, ".ipfs", badDirCID.String(), ".."))
		ipfs, _ := os.Stat(filepath.Join(d.mnt, ".ipfs"))
		if err != nil || !os.SameFile(parent, ipfs) {
			t.Errorf(".ipfs/<cid>/.. is not .ipfs: %v", err)
		}
	})
	t.Run("mount/.ipfs reads", func(t *testing.T) {
		for _, tt := range []struct {
			path string
			want []byte // nil: must fail
		}{
			{filepath.Join(badDirCID.String(), "ok"), leaf},
			{wideCID.String(), bytes.Repeat(leaf, wide)},
			{fileAt.String(), leaf},
			{deepPath[len(dirAt.String())+1:], nil}, // not a CID
			{unknownCodecCID.String(), nil},
			{unknownHashCID.String(), nil},
		} {
			c.runWith(1)
			got, err := os.ReadFile(filepath.Join(d.mnt, ".ipfs", tt.path))
			switch {
			case tt.want == nil && err == nil:
				t.Errorf(".ipfs/%.80s: read %d bytes, want an error", tt.path, len(got))
			case tt.want != nil && (err != nil || !bytes.Equal(got, tt.want)):
				t.Errorf(".ipfs/%.80s: %v", tt.path, err)
			}
		}
		if _, err := os.Stat(filepath.Join(d.mnt, ".ipfs", deepPath)); err != nil {
			t.Errorf("200 levels down a deep chain: %v", err)
		}
	})
	t.Run("control socket garbage", func(t *testing.T) {
		garbage := [][]byte{
			[]byte("\x00\xffnot json\n"),
			[]byte("{\"args\":[\"mount\",\"/\"]}\n"),
			[]byte("{\"args\":[]}\n"),
			[]byte("{\"args\":\"cat\"}\n"),
			bytes.Repeat([]byte("A"), 2<<20), // no newline, over the limit
			[]byte("{\"args\":[\"cat\""),     // cut short
			{},
		}
		for i, g := range garbage {
			c.runWith(1)
			c.fault(1)
			conn, err := net.Dial("unix", filepath.Join(repo, "ipfrs.sock"))
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(g)
			if i == len(garbage)-2 || i == len(garbage)-1 {
				conn.(*net.UnixConn).CloseWrite()
			}
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			reply, _ := io.ReadAll(conn)
			conn.Close()
			// mount is refused by the command line's parser in the daemon.
			if len(reply) > 0 && !bytes.Contains(reply, []byte("bad request")) && !bytes.Contains(reply, []byte("not over the control socket")) {
				t.Errorf("garbage %d answered %q", i, reply)
			}
		}
		if got := must(t, repo, "cat", leafCID.String()); got != string(leaf) {
			t.Fatalf("after the garbage, cat gives %q", got)
		}
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// hostileRSS bounds a CLI command's peak RSS on hostile input.
const hostileRSS = 300 << 20

func checkHostile(t *testing.T, c *tally, r result, rss int64, wantErr string) {
	t.Helper()
	c.runWith(1)
	c.fault(1)
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("panicked:\n%.2000s", r.stderr)
	}
	if rss > hostileRSS {
		t.Errorf("peak RSS %d MiB", rss>>20)
	}
	msg := strings.TrimRight(r.stderr, "\n")
	switch {
	case wantErr == "" && r.err != nil:
		t.Errorf("failed: %v %q", r.err, r.stderr)
	case wantErr != "" && r.err == nil:
		t.Errorf("succeeded, want an error mentioning %q; stdout %.200q", wantErr, r.stdout)
	case wantErr != "" && (strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "ipfrs-mount: ") || !strings.Contains(msg, wantErr)):
		t.Errorf("want one line mentioning %q, got %q", wantErr, r.stderr)
	}
}

func carstorageV1() carv2.Option { return carv2.WriteAsCarV1(true) }
