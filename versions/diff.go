package versions

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// ChangeKind says how a path differs between two trees.
type ChangeKind int

// Kinds of change.
const (
	Added ChangeKind = iota + 1
	Removed
	Modified
)

func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Modified:
		return "modified"
	default:
		return fmt.Sprintf("ChangeKind(%d)", int(k))
	}
}

// Change is one path that differs between two trees.
type Change struct {
	Path             string // slash-separated, relative to the tree root
	Kind             ChangeKind
	OldSize, NewSize uint64 // file sizes (symlinks: target length; 0 for directories / absent side)
}

// DiffStats says what a Diff cost.
type DiffStats struct {
	NodesLoaded int // dag-pb directory nodes read, HAMT shards included
}

// maxShardDepth bounds HAMT recursion: a 64-bit hash with fanout >= 2 has
// at most 64 levels.
const maxShardDepth = 64

// Diff compares the UnixFS directory trees a and b (either may be
// cid.Undef, an empty tree) and calls fn for each change, sorted by path
// (byte order; a path Removed and Added, for a directory replaced by a file
// or the reverse, gives Removed first).
//
// Identical subtrees are skipped by CID without loading them, HAMT shards
// included when both sides shard with the same fanout and hash, so the cost
// follows the number of changes, not the size of the tree. Directories are
// reported only when added or removed, followed by every path inside them;
// a directory whose content changed is reported through those paths.
// Changes of file content, of a symlink's target or of a file's UnixFS
// metadata are Modified. fn's error ends the diff and is returned, except
// Stop, which ends it without error.
func Diff(ctx context.Context, bs unixfs.BlockViewer, a, b cid.Cid, fn func(Change) error) (DiffStats, error) {
	d := &differ{ctx: ctx, bs: bs, fn: fn}
	if a.Equals(b) {
		return d.stats, nil
	}
	root := func(c cid.Cid) (*treeNode, error) {
		if !c.Defined() {
			return nil, nil
		}
		n, err := d.load(c)
		if err != nil {
			return nil, err
		}
		if !n.dir {
			return nil, fmt.Errorf("versions: diff: %s: %w", c, unixfs.ErrNotDir)
		}
		return n, nil
	}
	na, err := root(a)
	if err != nil {
		return d.stats, err
	}
	nb, err := root(b)
	if err != nil {
		return d.stats, err
	}
	err = d.dirs("", na, nb)
	if errors.Is(err, Stop) {
		err = nil
	}
	return d.stats, err
}

type differ struct {
	ctx   context.Context
	bs    unixfs.BlockViewer
	fn    func(Change) error
	stats DiffStats
}

// treeNode is what Diff needs of a UnixFS node.
type treeNode struct {
	cid      cid.Cid
	dir      bool // basic directory or HAMT shard
	shard    bool
	fanout   uint64
	hashType uint64
	size     uint64 // files and symlinks
	links    []entry
}

// entry is a directory entry, or for a HAMT shard a raw link (bucket
// prefix plus name).
type entry struct {
	name string
	cid  cid.Cid
}

// subtree is a directory pair whose changes are still to report, under key
// (its name plus "/", where its paths sort among its siblings').
type subtree struct {
	key, path string
	a, b      *treeNode
}

// dirs reports the changes between directories a and b (nil: absent) at
// path. Changes come in path order: a subtree's paths sort at name+"/",
// which may come after siblings whose names extend name with a byte below
// '/' ("a-b" < "a/x"), so subtrees wait in pending until their turn.
func (d *differ) dirs(path string, a, b *treeNode) error {
	ea, eb, err := d.entries(a, b)
	if err != nil {
		return err
	}
	var pending []subtree
	flush := func(before string, all bool) error {
		for len(pending) > 0 && (all || pending[0].key < before) {
			s := pending[0]
			pending = pending[1:]
			if err := d.dirs(s.path, s.a, s.b); err != nil {
				return err
			}
		}
		return nil
	}
	i, j := 0, 0
	for i < len(ea) || j < len(eb) {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		var name string
		var ca, cb cid.Cid
		switch {
		case j == len(eb) || i < len(ea) && ea[i].name < eb[j].name:
			name, ca = ea[i].name, ea[i].cid
			i++
		case i == len(ea) || eb[j].name < ea[i].name:
			name, cb = eb[j].name, eb[j].cid
			j++
		default:
			name, ca, cb = ea[i].name, ea[i].cid, eb[j].cid
			i, j = i+1, j+1
			if ca.Equals(cb) {
				continue
			}
		}
		if err := flush(name, false); err != nil {
			return err
		}
		full := name
		if path != "" {
			full = path + "/" + name
		}
		na, nb, err := d.loadPair(ca, cb)
		if err != nil {
			return fmt.Errorf("versions: diff %s: %w", full, err)
		}
		sub := subtree{key: name + "/", path: full}
		switch {
		case na != nil && nb != nil && na.dir && nb.dir:
			sub.a, sub.b = na, nb
		case na != nil && nb != nil && !na.dir && !nb.dir:
			if err := d.fn(Change{Path: full, Kind: Modified, OldSize: na.size, NewSize: nb.size}); err != nil {
				return err
			}
		default:
			if na != nil {
				if err := d.fn(Change{Path: full, Kind: Removed, OldSize: na.size}); err != nil {
					return err
				}
				if na.dir {
					sub.a = na
				}
			}
			if nb != nil {
				if err := d.fn(Change{Path: full, Kind: Added, NewSize: nb.size}); err != nil {
					return err
				}
				if nb.dir {
					sub.b = nb
				}
			}
		}
		if sub.a != nil || sub.b != nil {
			k := sort.Search(len(pending), func(x int) bool { return pending[x].key > sub.key })
			pending = append(pending, subtree{})
			copy(pending[k+1:], pending[k:])
			pending[k] = sub
		}
	}
	return flush("", true)
}

func (d *differ) loadPair(ca, cb cid.Cid) (na, nb *treeNode, err error) {
	if ca.Defined() {
		if na, err = d.load(ca); err != nil {
			return nil, nil, err
		}
	}
	if cb.Defined() {
		if nb, err = d.load(cb); err != nil {
			return nil, nil, err
		}
	}
	return na, nb, nil
}

// entries returns the entries of a and b that may differ, each side sorted
// by name: all of them, or for two compatible HAMTs only those in buckets
// whose links differ.
func (d *differ) entries(a, b *treeNode) (ea, eb []entry, err error) {
	seenA, seenB := map[cid.Cid]bool{}, map[cid.Cid]bool{}
	if a != nil && b != nil && compatibleShards(a, b) {
		seenA[a.cid], seenB[b.cid] = true, true
		err = d.shardDiff(a, b, 0, seenA, seenB, &ea, &eb)
	} else {
		if err = d.list(a, seenA, &ea); err == nil {
			err = d.list(b, seenB, &eb)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	for _, es := range [][]entry{ea, eb} {
		sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
		for k := 1; k < len(es); k++ {
			if es[k].name == es[k-1].name {
				return nil, nil, fmt.Errorf("%w: directory entry %q appears twice", unixfs.ErrMalformed, es[k].name)
			}
		}
	}
	return ea, eb, nil
}

func compatibleShards(a, b *treeNode) bool {
	return a.shard && b.shard && a.fanout == b.fanout && a.hashType == b.hashType
}

// list appends every entry of directory n (nil: none).
func (d *differ) list(n *treeNode, seen map[cid.Cid]bool, out *[]entry) error {
	switch {
	case n == nil:
		return nil
	case n.shard:
		seen[n.cid] = true
		return d.listShard(n, 0, seen, out)
	default:
		*out = append(*out, n.links...)
		return nil
	}
}

// shardPad is the length of the bucket prefix of a shard's link names.
func shardPad(n *treeNode) (int, error) {
	f := n.fanout
	if f < 2 || f&(f-1) != 0 || f > 1<<16 {
		return 0, fmt.Errorf("%w: HAMT fanout %d", unixfs.ErrMalformed, f)
	}
	return len(fmt.Sprintf("%X", f-1)), nil
}

// listShard appends every entry under shard n. A shard reached twice in one
// directory is malformed (and would let a small DAG list exponentially many
// entries).
func (d *differ) listShard(n *treeNode, depth int, seen map[cid.Cid]bool, out *[]entry) error {
	if depth > maxShardDepth {
		return fmt.Errorf("%w: HAMT deeper than %d levels", unixfs.ErrMalformed, maxShardDepth)
	}
	pad, err := shardPad(n)
	if err != nil {
		return err
	}
	for _, l := range n.links {
		if err := d.expand(l, pad, depth, seen, out); err != nil {
			return err
		}
	}
	return nil
}

// expand appends the entries a shard link stands for: itself, or everything
// under the sub-shard it names.
func (d *differ) expand(l entry, pad, depth int, seen map[cid.Cid]bool, out *[]entry) error {
	if len(l.name) < pad {
		return fmt.Errorf("%w: HAMT link name %q", unixfs.ErrMalformed, l.name)
	}
	if len(l.name) > pad {
		*out = append(*out, entry{name: l.name[pad:], cid: l.cid})
		return nil
	}
	sub, err := d.subShard(l.cid, seen)
	if err != nil {
		return err
	}
	return d.listShard(sub, depth+1, seen, out)
}

func (d *differ) subShard(c cid.Cid, seen map[cid.Cid]bool) (*treeNode, error) {
	if seen[c] {
		return nil, fmt.Errorf("%w: HAMT shard %s appears twice", unixfs.ErrMalformed, c)
	}
	seen[c] = true
	n, err := d.load(c)
	if err != nil {
		return nil, err
	}
	if !n.shard {
		return nil, fmt.Errorf("%w: HAMT child %s is not a shard", unixfs.ErrMalformed, c)
	}
	return n, nil
}

// shardDiff walks two HAMTs of the same fanout and hash side by side. A
// name's bucket at each level depends only on its hash, so a bucket whose
// links are identical on both sides holds identical entries and is skipped;
// the entries of the other buckets are appended to ea and eb.
func (d *differ) shardDiff(a, b *treeNode, depth int, seenA, seenB map[cid.Cid]bool, ea, eb *[]entry) error {
	if depth > maxShardDepth {
		return fmt.Errorf("%w: HAMT deeper than %d levels", unixfs.ErrMalformed, maxShardDepth)
	}
	pad, err := shardPad(a)
	if err != nil {
		return err
	}
	ga, err := buckets(a, pad)
	if err != nil {
		return err
	}
	gb, err := buckets(b, pad)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(ga)+len(gb))
	for k := range ga {
		keys = append(keys, k)
	}
	for k := range gb {
		if _, ok := ga[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // deterministic loads; the entries are sorted later anyway
	for _, k := range keys {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		la, lb := ga[k], gb[k]
		if sameLinks(la, lb) {
			continue
		}
		if len(la) == 1 && len(lb) == 1 && len(la[0].name) == pad && len(lb[0].name) == pad {
			sa, err := d.subShard(la[0].cid, seenA)
			if err != nil {
				return err
			}
			sb, err := d.subShard(lb[0].cid, seenB)
			if err != nil {
				return err
			}
			if compatibleShards(sa, sb) {
				if err := d.shardDiff(sa, sb, depth+1, seenA, seenB, ea, eb); err != nil {
					return err
				}
			} else {
				if err := d.listShard(sa, depth+1, seenA, ea); err != nil {
					return err
				}
				if err := d.listShard(sb, depth+1, seenB, eb); err != nil {
					return err
				}
			}
			continue
		}
		for _, l := range la {
			if err := d.expand(l, pad, depth, seenA, ea); err != nil {
				return err
			}
		}
		for _, l := range lb {
			if err := d.expand(l, pad, depth, seenB, eb); err != nil {
				return err
			}
		}
	}
	return nil
}

// buckets groups a shard's links by bucket prefix.
func buckets(n *treeNode, pad int) (map[string][]entry, error) {
	out := make(map[string][]entry, len(n.links))
	for _, l := range n.links {
		if len(l.name) < pad {
			return nil, fmt.Errorf("%w: HAMT link name %q", unixfs.ErrMalformed, l.name)
		}
		out[l.name[:pad]] = append(out[l.name[:pad]], l)
	}
	return out, nil
}

func sameLinks(a, b []entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].name != b[i].name || !a[i].cid.Equals(b[i].cid) {
			return false
		}
	}
	return true
}

// sizer is implemented by stores that know a block's size without reading
// it (store.Badger).
type sizer interface {
	Size(ctx context.Context, c cid.Cid) (int, error)
}

// load reads what Diff needs of node c, verifying dag-pb nodes against
// their hash. A raw leaf is only sized, not read.
func (d *differ) load(c cid.Cid) (*treeNode, error) {
	switch c.Prefix().Codec {
	case cid.Raw:
		var size int
		var err error
		if s, ok := d.bs.(sizer); ok {
			size, err = s.Size(d.ctx, c)
		} else {
			err = d.bs.View(d.ctx, c, func(b []byte) error { size = len(b); return nil })
		}
		if err != nil {
			return nil, err
		}
		return &treeNode{cid: c, size: uint64(size)}, nil
	case cid.DagProtobuf:
	default:
		return nil, fmt.Errorf("%s: %w", c, unixfs.ErrUnsupported)
	}
	var n *treeNode
	err := d.bs.View(d.ctx, c, func(b []byte) error {
		if err := unixfs.CheckHash(c, b); err != nil {
			return err
		}
		var err error
		n, err = decodeNode(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	n.cid = c
	if n.dir {
		d.stats.NodesLoaded++
	}
	return n, nil
}

// decodeNode decodes a dag-pb UnixFS node (with unixfs.Decode); the links
// are kept only for directories.
func decodeNode(b []byte) (*treeNode, error) {
	d, err := unixfs.Decode(b)
	if err != nil {
		return nil, err
	}
	n := &treeNode{}
	switch d.Kind {
	case unixfs.KindDirectory:
		n.dir, n.shard, n.fanout, n.hashType = true, d.HAMT, d.Fanout, d.HashType
		n.links = make([]entry, 0, len(d.Links))
		for _, l := range d.Links {
			if !n.shard && (l.Name == "" || strings.Contains(l.Name, "/")) {
				return nil, fmt.Errorf("%w: directory entry name %q", unixfs.ErrMalformed, l.Name)
			}
			n.links = append(n.links, entry{name: l.Name, cid: l.CID})
		}
	case unixfs.KindFile:
		n.size = d.Size
	case unixfs.KindSymlink:
		n.size = d.DataLen
	}
	return n, nil
}
