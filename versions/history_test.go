package versions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func logOf(t *testing.T, h *History, from cid.Cid) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	if err := h.Log(context.Background(), from, func(c Commit) error { out = append(out, c.CID); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalCIDs(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equals(b[i]) {
			return false
		}
	}
	return true
}

func TestCreateLogResolve(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)

	branch, head, err := h.Head(ctx)
	if err != nil || branch != DefaultBranch || head.Defined() {
		t.Fatalf("fresh Head = %q %v %v", branch, head, err)
	}
	if _, err := h.Resolve(ctx, "HEAD"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("Resolve HEAD on a fresh repo: %v", err)
	}
	if got := logOf(t, h, head); len(got) != 0 {
		t.Fatalf("log of no commit: %v", got)
	}

	c1 := commitTree(t, h, s, "one", 1)
	c2 := commitTree(t, h, s, "two", 2)
	c3 := commitTree(t, h, s, "three", 3)
	if len(c1.Parents) != 0 || !equalCIDs(c2.Parents, []cid.Cid{c1.CID}) || !equalCIDs(c3.Parents, []cid.Cid{c2.CID}) {
		t.Fatalf("parents: %v %v %v", c1.Parents, c2.Parents, c3.Parents)
	}
	if p := c1.CID.Prefix(); p.Version != 1 || p.Codec != cid.DagCBOR || p.MhType != mh.SHA2_256 {
		t.Fatalf("commit CID prefix %+v", p)
	}
	if _, head, _ := h.Head(ctx); !head.Equals(c3.CID) {
		t.Fatalf("HEAD = %v, want %v", head, c3.CID)
	}
	if got, want := logOf(t, h, c3.CID), []cid.Cid{c3.CID, c2.CID, c1.CID}; !equalCIDs(got, want) {
		t.Fatalf("log = %v, want %v", got, want)
	}

	got, err := h.Get(ctx, c2.CID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CID.Equals(c2.CID) || !got.Tree.Equals(c2.Tree) || got.Message != "two" || got.Author != "test" ||
		got.Chunker != "fastcdc" || !got.Time.Equal(at(2)) || got.Time != c2.Time || !equalCIDs(got.Parents, c2.Parents) {
		t.Fatalf("Get = %+v, want %+v", got, c2)
	}

	if err := h.SetTag(ctx, "v1", c1.CID); err != nil {
		t.Fatal(err)
	}
	// A branch and a tag of the same name: the branch wins.
	if err := h.SetBranch(ctx, "both", c2.CID); err != nil {
		t.Fatal(err)
	}
	if err := h.SetTag(ctx, "both", c1.CID); err != nil {
		t.Fatal(err)
	}

	s1, s2 := c1.CID.String(), c2.CID.String()
	for _, tc := range []struct {
		ref  string
		want cid.Cid
		err  error
	}{
		{"HEAD", c3.CID, nil},
		{"HEAD~0", c3.CID, nil},
		{"HEAD~", c2.CID, nil},
		{"HEAD~1", c2.CID, nil},
		{"HEAD~2", c1.CID, nil},
		{"HEAD~1~1", c1.CID, nil},
		{"HEAD~3", cid.Undef, ErrUnknownRef},
		{"HEAD~x", cid.Undef, ErrUnknownRef},
		{"main", c3.CID, nil},
		{"main~2", c1.CID, nil},
		{"v1", c1.CID, nil},
		{"both", c2.CID, nil},
		{s1, c1.CID, nil},
		{s2[:20], c2.CID, nil},
		{s2[:20] + "~1", c1.CID, nil},
		{s1[:5], cid.Undef, ErrUnknownRef},            // too short for a prefix
		{s1[:6], cid.Undef, ErrAmbiguous},             // "bafyre": every commit
		{"bafyrei", cid.Undef, ErrAmbiguous},          // idem
		{"bafyreizzzzzzzz", cid.Undef, ErrUnknownRef}, // no commit
		{c1.Tree.String(), cid.Undef, ErrUnknownRef},  // a CID, but not a commit
		{"nope", cid.Undef, ErrUnknownRef},
		{"", cid.Undef, ErrUnknownRef},
	} {
		got, err := h.Resolve(ctx, tc.ref)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Resolve(%q) = %v, %v; want %v", tc.ref, got, err, tc.err)
			} else if tc.ref != "" && !strings.Contains(err.Error(), tc.ref) {
				t.Errorf("Resolve(%q) error %q does not name the ref", tc.ref, err)
			}
			continue
		}
		if err != nil || !got.Equals(tc.want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", tc.ref, got, err, tc.want)
		}
	}

	var n int
	if err := h.Commits(ctx, func(cid.Cid) error { n++; return nil }); err != nil || n != 3 {
		t.Fatalf("Commits: %d commits, %v", n, err)
	}
}

func TestNothingToCommit(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)
	c1 := commitTree(t, h, s, "same", 1)
	_, err := h.Create(ctx, Commit{Tree: c1.Tree, Message: "again"}, false)
	if !errors.Is(err, ErrNothingToCommit) {
		t.Fatalf("same tree: %v, want ErrNothingToCommit", err)
	}
	c2, err := h.Create(ctx, Commit{Tree: c1.Tree, Message: "again"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !equalCIDs(c2.Parents, []cid.Cid{c1.CID}) || c2.Time.IsZero() {
		t.Fatalf("empty commit %+v", c2)
	}
	if _, head, _ := h.Head(ctx); !head.Equals(c2.CID) {
		t.Fatal("HEAD did not move to the empty commit")
	}
	if _, err := h.Create(ctx, Commit{}, true); err == nil {
		t.Fatal("commit without a tree accepted")
	}
	missing, _ := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("absent"))
	if _, err := h.Create(ctx, Commit{Tree: missing}, true); err == nil {
		t.Fatal("commit of a missing tree accepted")
	}
}

func TestCommitSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	h := New(s)
	c1 := commitTree(t, h, s, "one", 1)
	c2 := commitTree(t, h, s, "two", 2)
	if err := h.SetBranch(ctx, "dev", c1.CID); err != nil {
		t.Fatal(err)
	}
	if err := h.SetHead(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	h = New(s)
	branch, head, err := h.Head(ctx)
	if err != nil || branch != "dev" || !head.Equals(c1.CID) {
		t.Fatalf("Head after reopen = %q %v %v", branch, head, err)
	}
	got, err := h.Get(ctx, c2.CID)
	if err != nil || got.Message != "two" || !got.Time.Equal(c2.Time) || !got.Tree.Equals(c2.Tree) {
		t.Fatalf("Get after reopen = %+v, %v", got, err)
	}
	if l := logOf(t, h, c2.CID); !equalCIDs(l, []cid.Cid{c2.CID, c1.CID}) {
		t.Fatalf("log after reopen = %v", l)
	}
	if r, err := h.Resolve(ctx, "main"); err != nil || !r.Equals(c2.CID) {
		t.Fatalf("Resolve main after reopen = %v, %v", r, err)
	}
}

func TestBranchesAndTags(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)

	if err := h.SetHead(ctx, "dev"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("SetHead to a missing branch: %v", err)
	}
	if err := h.SetHead(ctx, DefaultBranch); err != nil {
		t.Fatalf("SetHead main on a fresh repo: %v", err)
	}
	c1 := commitTree(t, h, s, "one", 1)
	if err := h.SetBranch(ctx, "dev", c1.CID); err != nil {
		t.Fatal(err)
	}
	if err := h.SetBranch(ctx, "tree", c1.Tree); !errors.Is(err, ErrNotCommit) {
		t.Fatalf("branch at a tree: %v", err)
	}
	if err := h.SetBranch(ctx, "a/b", c1.CID); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad branch name: %v", err)
	}
	if err := h.SetHead(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	c2 := commitTree(t, h, s, "two", 2)
	br, err := h.Branches(ctx)
	if err != nil || len(br) != 2 || !br["main"].Equals(c1.CID) || !br["dev"].Equals(c2.CID) {
		t.Fatalf("Branches = %v, %v", br, err)
	}
	if err := h.DeleteBranch(ctx, "dev"); !errors.Is(err, ErrCurrentBranch) {
		t.Fatalf("delete current branch: %v", err)
	}
	if err := h.SetHead(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetHead(ctx, "gone"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("SetHead to a missing branch: %v", err)
	}
	if err := h.DeleteBranch(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteBranch(ctx, "dev"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("delete missing branch: %v", err)
	}
	if err := h.SetBranch(ctx, "main", c2.CID); err != nil { // move
		t.Fatal(err)
	}
	if _, head, _ := h.Head(ctx); !head.Equals(c2.CID) {
		t.Fatal("moving main did not move HEAD")
	}

	if err := h.SetTag(ctx, "v1", c1.CID); err != nil {
		t.Fatal(err)
	}
	if err := h.SetTag(ctx, "v1", c2.CID); !errors.Is(err, ErrExists) {
		t.Fatalf("tag twice: %v", err)
	}
	if err := h.SetTag(ctx, "v2", c2.CID); err != nil {
		t.Fatal(err)
	}
	tags, err := h.Tags(ctx)
	if err != nil || len(tags) != 2 || !tags["v1"].Equals(c1.CID) || !tags["v2"].Equals(c2.CID) {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	if err := h.DeleteTag(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteTag(ctx, "v1"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("delete missing tag: %v", err)
	}
	if _, err := h.Resolve(ctx, "v1"); !errors.Is(err, ErrUnknownRef) {
		t.Fatalf("deleted tag resolves: %v", err)
	}
	// The commit a deleted ref named stays in the index (a GC root).
	var n int
	if err := h.Commits(ctx, func(cid.Cid) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("Commits: %d, %v", n, err)
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"main", true},
		{"v1.0", true},
		{"feature-x_2", true},
		{"a.b", true},
		{"Ünïcode", true},
		{strings.Repeat("x", 255), true},
		{"", false},
		{strings.Repeat("x", 256), false},
		{"a/b", false},
		{"..", false},
		{"a..b", false},
		{"-x", false},
		{".x", false},
		{"HEAD", false},
		{"a b", false},
		{"x\x00", false},
		{"x\ty", false},
		{"x\x7f", false},
		{"a~1", false},
		{"\xff", false},
	} {
		err := ValidName(tc.name)
		if tc.ok && err != nil {
			t.Errorf("ValidName(%q) = %v, want ok", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", tc.name, err)
		}
	}
}

func TestAncestryAndMerges(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)
	c1 := commitTree(t, h, s, "one", 1)
	c2 := commitTree(t, h, s, "two", 2)
	c3 := commitTree(t, h, s, "three", 5)
	// A side branch from c2, with the same time as c3.
	if err := h.SetBranch(ctx, "dev", c2.CID); err != nil {
		t.Fatal(err)
	}
	if err := h.SetHead(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	c4 := commitTree(t, h, s, "four", 5)
	if err := h.SetHead(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	tree := buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": "merged"})
	m, err := h.Create(ctx, Commit{Tree: tree, Parents: []cid.Cid{c3.CID, c4.CID}, Message: "merge", Time: at(6)}, false)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		a, b Commit
		want bool
	}{
		{c1, c3, true},
		{c3, c3, true},
		{c3, c1, false},
		{c4, c3, false},
		{c3, c4, false},
		{c2, c4, true},
		{c4, m, true},
		{c1, m, true},
		{m, c4, false},
	} {
		got, err := h.IsAncestor(ctx, tc.a.CID, tc.b.CID)
		if err != nil || got != tc.want {
			t.Errorf("IsAncestor(%s, %s) = %v, %v; want %v", tc.a.Message, tc.b.Message, got, err, tc.want)
		}
	}

	// Newest first, each commit once; c3 and c4 share a time: CID order.
	mid := []cid.Cid{c3.CID, c4.CID}
	if c4.CID.String() < c3.CID.String() {
		mid = []cid.Cid{c4.CID, c3.CID}
	}
	want := append(append([]cid.Cid{m.CID}, mid...), c2.CID, c1.CID)
	if got := logOf(t, h, m.CID); !equalCIDs(got, want) {
		t.Fatalf("log = %v, want %v", got, want)
	}
	// Stop ends the walk without error; other errors come back as they are.
	var n int
	if err := h.Log(ctx, m.CID, func(Commit) error {
		if n++; n == 2 {
			return Stop
		}
		return nil
	}); err != nil || n != 2 {
		t.Fatalf("Log with Stop: %d calls, %v", n, err)
	}
	if err := h.Log(ctx, m.CID, func(Commit) error { return io.ErrUnexpectedEOF }); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Log error: %v", err)
	}
	if r, err := h.Resolve(ctx, "HEAD~1"); err != nil || !r.Equals(c3.CID) {
		t.Fatalf("HEAD~1 of a merge = %v, %v; want the first parent", r, err)
	}
	if _, err := h.Create(ctx, Commit{Tree: c1.Tree, Parents: []cid.Cid{c1.Tree}}, true); !errors.Is(err, ErrNotCommit) {
		t.Fatalf("parent that is a tree: %v", err)
	}
}

func TestGetRejectsNonCommits(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)
	tree := buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": "x"})
	if _, err := h.Get(ctx, tree); !errors.Is(err, ErrNotCommit) {
		t.Fatalf("Get(tree) = %v", err)
	}
	// A dag-cbor block that is not a commit.
	n, err := qp.BuildMap(basicnode.Prototype.Map, 1, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "hello", qp.String("world"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	c, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(buf.Bytes())
	if err := s.Put(ctx, c, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Get(ctx, c); !errors.Is(err, ErrNotCommit) {
		t.Fatalf("Get(non-commit cbor) = %v", err)
	}
	// A block stored under a CID it does not hash to.
	bad, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("other"))
	if err := s.Put(ctx, bad, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Get(ctx, bad); !errors.Is(err, unixfs.ErrHashMismatch) {
		t.Fatalf("Get(corrupt) = %v", err)
	}
}

// TestConcurrentCommits: commits from many goroutines through one History
// form one linear history.
func TestConcurrentCommits(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)
	const workers, each = 8, 5
	trees := make([][]cid.Cid, workers)
	for w := range trees {
		for i := 0; i < each; i++ {
			trees[w] = append(trees[w], buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": fmt.Sprint(w, i)}))
		}
	}
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for _, tree := range trees[w] {
				if _, err := h.Create(ctx, Commit{Tree: tree}, false); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	_, head, err := h.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for c := head; c.Defined(); depth++ {
		cm, err := h.Get(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(cm.Parents) > 1 {
			t.Fatalf("commit %s has %d parents", c, len(cm.Parents))
		}
		c = cid.Undef
		if len(cm.Parents) == 1 {
			c = cm.Parents[0]
		}
	}
	if depth != workers*each {
		t.Fatalf("history is %d commits deep, want %d", depth, workers*each)
	}
}

// TestBatchHoldsTheHistory: while a Batch runs, no other ref update of the
// History runs; the Batch's own updates (through its Writer) do.
func TestBatchHoldsTheHistory(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	h := New(s)
	t1 := buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": "1"})
	t2 := buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": "2"})
	first, err := h.Create(ctx, Commit{Tree: t1}, false)
	if err != nil {
		t.Fatal(err)
	}
	inBatch := make(chan struct{})
	release := make(chan struct{})
	batchDone := make(chan error, 1)
	go func() {
		batchDone <- h.Batch(ctx, func(w Writer) error {
			close(inBatch)
			<-release
			if err := w.SetBranch(ctx, "side", first.CID); err != nil {
				return err
			}
			_, err := w.Create(ctx, Commit{Tree: t2}, false)
			return err
		})
	}()
	<-inBatch
	tagged := make(chan error, 1)
	go func() { tagged <- h.SetTag(ctx, "during", first.CID) }()
	select {
	case err := <-tagged:
		t.Fatalf("SetTag ran while a Batch held the history: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-batchDone; err != nil {
		t.Fatal(err)
	}
	if err := <-tagged; err != nil {
		t.Fatal(err)
	}
	_, head, err := h.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := h.Get(ctx, head)
	if err != nil || !cm.Tree.Equals(t2) || !cm.Parents[0].Equals(first.CID) {
		t.Fatalf("HEAD after the batch: %+v, %v", cm, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.Batch(cancelled, func(Writer) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Batch with a cancelled context: %v", err)
	}
}
