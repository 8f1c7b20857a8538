package versions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Commit is one recorded state of the working tree.
type Commit struct {
	CID     cid.Cid // the commit's own CID (CIDv1, dag-cbor, sha2-256); set by Create/Get
	Tree    cid.Cid // UnixFS root of the tree
	Parents []cid.Cid
	Message string
	Author  string
	Time    time.Time
	Chunker string // the chunker/layout parameters the tree was written with
}

// Errors of the history. Each is wrapped with the name or CID it concerns.
var (
	ErrNothingToCommit = errors.New("nothing to commit: the tree is unchanged")
	ErrUnknownRef      = errors.New("unknown revision")
	ErrAmbiguous       = errors.New("ambiguous short CID")
	ErrExists          = errors.New("already exists")
	ErrBadName         = errors.New("invalid branch or tag name")
	ErrCurrentBranch   = errors.New("cannot delete the current branch")
	// ErrNotCommit means a block exists but is not a dag-cbor commit.
	ErrNotCommit = errors.New("not a commit")
)

// DefaultBranch is the branch HEAD names on a fresh repo.
const DefaultBranch = "main"

// Metadata keys.
const (
	keyHead     = "versions/head"
	keyBranches = "versions/branches/"
	keyTags     = "versions/tags/"
	keyCommits  = "versions/commits/"
)

// History reads and writes the repo's commits and refs.
type History struct {
	s *store.Badger
	// mu serialises read-modify-write updates of the refs: the store runs
	// without conflict detection. Batch holds it across a caller's steps.
	mu sync.Mutex
}

// New returns the history kept in s. A repo must have exactly one: two
// Histories of one store do not see each other's lock, and a commit of one
// can then fail or move a branch under the other.
func New(s *store.Badger) *History { return &History{s: s} }

// Writer is a History held by Batch: its ref updates run under the lock
// Batch holds. Reads are the History's own.
type Writer struct{ *History }

// Batch runs fn with h held: no other ref update of h (commit, branch, tag,
// HEAD) runs until fn returns, so fn can read the refs, change the working
// tree and move a ref as one step (a commit of the tree as it is, a switch
// that changes the tree and HEAD together). fn must make its updates
// through w, not h, which would wait for itself.
func (h *History) Batch(ctx context.Context, fn func(w Writer) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(Writer{h})
}

// Create stores c as a dag-cbor block, records it in the commit index and
// advances the HEAD branch to it; the metadata changes are one transaction
// and are synced before Create returns.
//
// A nil c.Parents means HEAD's commit (none for the first commit); a
// non-nil empty slice makes a root commit. A zero c.Time means now. The
// tree's root block must be stored. Create returns ErrNothingToCommit when
// c.Tree is the tree of HEAD's commit, unless allowEmpty.
func (h *History) Create(ctx context.Context, c Commit, allowEmpty bool) (Commit, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.create(ctx, c, allowEmpty)
}

// Create is History.Create under the Batch's lock.
func (w Writer) Create(ctx context.Context, c Commit, allowEmpty bool) (Commit, error) {
	return w.create(ctx, c, allowEmpty)
}

func (h *History) create(ctx context.Context, c Commit, allowEmpty bool) (Commit, error) {
	if !c.Tree.Defined() {
		return Commit{}, errors.New("versions: commit has no tree")
	}
	if ok, err := h.s.Has(ctx, c.Tree); err != nil {
		return Commit{}, fmt.Errorf("versions: tree %s: %w", c.Tree, err)
	} else if !ok {
		return Commit{}, fmt.Errorf("versions: tree %s: %w", c.Tree, store.ErrNotFound)
	}
	branch, head, err := h.Head(ctx)
	if err != nil {
		return Commit{}, err
	}
	if head.Defined() {
		hc, err := h.Get(ctx, head)
		if err != nil {
			return Commit{}, fmt.Errorf("versions: HEAD: %w", err)
		}
		if !allowEmpty && hc.Tree.Equals(c.Tree) {
			return Commit{}, ErrNothingToCommit
		}
	}
	if c.Parents == nil {
		if head.Defined() {
			c.Parents = []cid.Cid{head}
		}
	} else {
		c.Parents = append([]cid.Cid(nil), c.Parents...)
		seen := make(map[cid.Cid]bool, len(c.Parents))
		for _, p := range c.Parents {
			if seen[p] {
				return Commit{}, fmt.Errorf("versions: parent %s given twice", p)
			}
			seen[p] = true
			if _, err := h.Get(ctx, p); err != nil {
				return Commit{}, fmt.Errorf("versions: parent: %w", err)
			}
		}
	}
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	c.Time = c.Time.UTC().Round(0) // what decoding gives back: no monotonic clock, UTC
	data, err := encodeCommit(c)
	if err != nil {
		return Commit{}, err
	}
	id, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		return Commit{}, fmt.Errorf("versions: hash commit: %w", err)
	}
	// Until the index names the commit, only this pin keeps GC off it.
	tp := h.s.TempPin()
	defer tp.Release()
	tp.Protect(id)
	tp.Protect(c.Tree)
	if err := h.s.Put(ctx, id, data); err != nil {
		return Commit{}, fmt.Errorf("versions: store commit: %w", err)
	}
	err = h.s.UpdateMeta(ctx, func(txn store.MetaTxn) error {
		// Refuse to overwrite a branch another writer moved meanwhile.
		cur, err := txnCID(txn, keyBranches+branch)
		if err != nil {
			return err
		}
		if !cur.Equals(head) {
			return fmt.Errorf("branch %q moved during the commit", branch)
		}
		if err := txn.Set(keyHead, []byte(branch)); err != nil {
			return err
		}
		if err := txn.Set(keyBranches+branch, []byte(id.String())); err != nil {
			return err
		}
		return txn.Set(keyCommits+id.String(), nil)
	})
	if err != nil {
		return Commit{}, fmt.Errorf("versions: commit: %w", err)
	}
	if err := h.s.Sync(); err != nil {
		return Commit{}, fmt.Errorf("versions: commit: %w", err)
	}
	c.CID = id
	return c, nil
}

// Get reads the commit c, verifying its hash.
func (h *History) Get(ctx context.Context, c cid.Cid) (Commit, error) {
	if !c.Defined() {
		return Commit{}, fmt.Errorf("versions: undefined CID: %w", ErrNotCommit)
	}
	if c.Prefix().Codec != cid.DagCBOR {
		return Commit{}, fmt.Errorf("versions: %s is not dag-cbor: %w", c, ErrNotCommit)
	}
	var out Commit
	err := h.s.View(ctx, c, func(b []byte) error {
		if err := unixfs.CheckHash(c, b); err != nil {
			return err
		}
		var err error
		out, err = decodeCommit(b)
		return err
	})
	if err != nil {
		return Commit{}, fmt.Errorf("versions: commit %s: %w", c, err)
	}
	out.CID = c
	return out, nil
}

// encodeCommit serialises c (without its CID) as dag-cbor with links as
// real IPLD links, so that generic IPLD tools walk from a commit to its
// tree and parents.
func encodeCommit(c Commit) ([]byte, error) {
	n, err := qp.BuildMap(basicnode.Prototype.Map, 6, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "tree", qp.Link(cidlink.Link{Cid: c.Tree}))
		qp.MapEntry(ma, "parents", qp.List(int64(len(c.Parents)), func(la datamodel.ListAssembler) {
			for _, p := range c.Parents {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: p}))
			}
		}))
		qp.MapEntry(ma, "message", qp.String(c.Message))
		qp.MapEntry(ma, "author", qp.String(c.Author))
		qp.MapEntry(ma, "time", qp.String(c.Time.UTC().Format(time.RFC3339Nano)))
		qp.MapEntry(ma, "chunker", qp.String(c.Chunker))
	})
	if err != nil {
		return nil, fmt.Errorf("versions: encode commit: %w", err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		return nil, fmt.Errorf("versions: encode commit: %w", err)
	}
	return buf.Bytes(), nil
}

// decodeCommit parses a commit block. "tree", "parents" and "time" are
// required; unknown fields are ignored so that later versions may add some.
func decodeCommit(b []byte) (Commit, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(b)); err != nil {
		return Commit{}, fmt.Errorf("%w: %v", ErrNotCommit, err)
	}
	n := nb.Build()
	if n.Kind() != datamodel.Kind_Map {
		return Commit{}, fmt.Errorf("%w: a %s, not a map", ErrNotCommit, n.Kind())
	}
	var c Commit
	var err error
	if c.Tree, err = linkField(n, "tree"); err != nil {
		return Commit{}, err
	}
	ps, err := n.LookupByString("parents")
	if err != nil || ps.Kind() != datamodel.Kind_List {
		return Commit{}, fmt.Errorf("%w: no parents list", ErrNotCommit)
	}
	it := ps.ListIterator()
	for !it.Done() {
		_, v, err := it.Next()
		if err != nil {
			return Commit{}, fmt.Errorf("%w: %v", ErrNotCommit, err)
		}
		l, err := v.AsLink()
		if err != nil {
			return Commit{}, fmt.Errorf("%w: parent is not a link", ErrNotCommit)
		}
		cl, ok := l.(cidlink.Link)
		if !ok {
			return Commit{}, fmt.Errorf("%w: parent is not a CID", ErrNotCommit)
		}
		c.Parents = append(c.Parents, cl.Cid)
	}
	ts, err := stringField(n, "time", true)
	if err != nil {
		return Commit{}, err
	}
	if c.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return Commit{}, fmt.Errorf("%w: time: %v", ErrNotCommit, err)
	}
	c.Time = c.Time.UTC()
	if c.Message, err = stringField(n, "message", false); err != nil {
		return Commit{}, err
	}
	if c.Author, err = stringField(n, "author", false); err != nil {
		return Commit{}, err
	}
	if c.Chunker, err = stringField(n, "chunker", false); err != nil {
		return Commit{}, err
	}
	return c, nil
}

func linkField(n datamodel.Node, key string) (cid.Cid, error) {
	v, err := n.LookupByString(key)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: no %s", ErrNotCommit, key)
	}
	l, err := v.AsLink()
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %s is not a link", ErrNotCommit, key)
	}
	cl, ok := l.(cidlink.Link)
	if !ok || !cl.Cid.Defined() {
		return cid.Undef, fmt.Errorf("%w: %s is not a CID", ErrNotCommit, key)
	}
	return cl.Cid, nil
}

func stringField(n datamodel.Node, key string, required bool) (string, error) {
	v, err := n.LookupByString(key)
	if err != nil {
		if !required {
			return "", nil
		}
		return "", fmt.Errorf("%w: no %s", ErrNotCommit, key)
	}
	s, err := v.AsString()
	if err != nil {
		return "", fmt.Errorf("%w: %s is not a string", ErrNotCommit, key)
	}
	return s, nil
}
