package unixfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-unixfsnode"
	"github.com/ipfs/go-unixfsnode/data"
	"github.com/ipfs/go-unixfsnode/data/builder"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	mh "github.com/multiformats/go-multihash"
)

// Entry is one named child of a directory.
type Entry struct {
	Name string
	Node Node
}

// ValidName reports whether name may be a directory entry: not empty, not
// "." or "..", no "/" and no NUL.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid entry name %q", name)
	}
	return nil
}

// BuildDirectory stores a directory over entries: a basic directory, or a
// HAMT shard when it is larger than the layout's threshold.
func (l Layout) BuildDirectory(ctx context.Context, put BlockPutter, entries []Entry) (Node, error) {
	links := make([]dagpb.PBLink, 0, len(entries))
	var size uint64
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if err := ValidName(e.Name); err != nil {
			return Node{}, err
		}
		if seen[e.Name] {
			return Node{}, fmt.Errorf("duplicate entry name %q", e.Name)
		}
		seen[e.Name] = true
		lnk, err := builder.BuildUnixFSDirectoryEntry(e.Name, int64(e.Node.Tsize), cidlink.Link{Cid: e.Node.CID})
		if err != nil {
			return Node{}, err
		}
		links = append(links, lnk)
		size += e.Node.Size
	}
	// Block bytes are never fewer than link bytes, so the cheap estimate
	// decides whenever it already exceeds the threshold.
	linkBytes := 0
	for _, e := range entries {
		linkBytes += len(e.Name) + e.Node.CID.ByteLen()
	}
	shard := linkBytes > l.HAMTThreshold
	var enc []byte
	if !shard {
		var err error
		if enc, err = encodeBasicDir(links); err != nil {
			return Node{}, fmt.Errorf("unixfs: build directory: %w", err)
		}
		shard = l.DirEstimate == EstimateBlock && len(enc) > l.HAMTThreshold
	}
	if shard {
		lnk, tsize, err := builder.BuildUnixFSShardedDirectory(l.HAMTFanout, mh.MURMUR3X64_64, links, linkSystem(ctx, nil, put))
		if err != nil {
			return Node{}, fmt.Errorf("unixfs: build sharded directory: %w", err)
		}
		return Node{CID: lnk.(cidlink.Link).Cid, Size: size, Tsize: tsize}, nil
	}
	c := sha256CID(cid.DagProtobuf, enc)
	if err := put.Put(ctx, c, enc); err != nil {
		return Node{}, err
	}
	tsize := uint64(len(enc))
	for _, e := range entries {
		tsize += e.Node.Tsize
	}
	return Node{CID: c, Size: size, Tsize: tsize}, nil
}

func encodeBasicDir(links []dagpb.PBLink) ([]byte, error) {
	ufd, err := builder.BuildUnixFS(func(b *builder.Builder) { builder.DataType(b, data.Data_Directory) })
	if err != nil {
		return nil, err
	}
	nb := dagpb.Type.PBNode.NewBuilder()
	ma, err := nb.BeginMap(2)
	if err != nil {
		return nil, err
	}
	if err := ma.AssembleKey().AssignString("Data"); err != nil {
		return nil, err
	}
	if err := ma.AssembleValue().AssignBytes(data.EncodeUnixFSData(ufd)); err != nil {
		return nil, err
	}
	if err := ma.AssembleKey().AssignString("Links"); err != nil {
		return nil, err
	}
	la, err := ma.AssembleValue().BeginList(int64(len(links)))
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if err := la.AssembleValue().AssignNode(l); err != nil {
			return nil, err
		}
	}
	if err := la.Finish(); err != nil {
		return nil, err
	}
	if err := ma.Finish(); err != nil {
		return nil, err
	}
	return dagpb.AppendEncode(nil, nb.Build()) // the codec sorts links by name
}

// BuildSymlink stores a UnixFS symlink to target.
func BuildSymlink(ctx context.Context, put BlockPutter, target string) (Node, error) {
	lnk, tsize, err := builder.BuildUnixFSSymlink(target, linkSystem(ctx, nil, put))
	if err != nil {
		return Node{}, fmt.Errorf("unixfs: build symlink: %w", err)
	}
	return Node{CID: lnk.(cidlink.Link).Cid, Size: uint64(len(target)), Tsize: tsize}, nil
}

// DirEntry is one entry read back from a stored directory.
type DirEntry struct {
	Name  string
	CID   cid.Cid
	Tsize uint64
}

// ReadDir lists the directory c (basic or HAMT-sharded), sorted by name.
func ReadDir(ctx context.Context, bs BlockViewer, c cid.Cid) ([]DirEntry, error) {
	n, err := loadDir(ctx, bs, c)
	if err != nil {
		return nil, err
	}
	var out []DirEntry
	if n.typ == data.Data_Directory {
		for _, l := range n.links {
			out = append(out, DirEntry{Name: l.Name, CID: l.CID, Tsize: l.Tsize})
		}
	} else if err := readShard(ctx, bs, n, 0, map[cid.Cid]bool{c: true}, &out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func loadDir(ctx context.Context, bs BlockViewer, c cid.Cid) (*pbNode, error) {
	if c.Prefix().Codec != cid.DagProtobuf {
		return nil, fmt.Errorf("%s: %w", c, ErrNotDir)
	}
	n, err := loadPB(ctx, bs, c)
	if err != nil {
		return nil, err
	}
	if n.typ != data.Data_Directory && n.typ != data.Data_HAMTShard {
		return nil, fmt.Errorf("%s: %w", c, ErrNotDir)
	}
	return n, nil
}

// maxShardDepth bounds HAMT recursion: a 64-bit hash with fanout ≥ 2 has at
// most 64 levels.
const maxShardDepth = 64

// maxDirEntries bounds what a listing may hold, against hostile DAGs.
const maxDirEntries = 1 << 24

// readShard lists a HAMT shard. A valid HAMT is a tree: a shard reached
// twice (which would make a small DAG list exponentially many entries) is
// malformed.
func readShard(ctx context.Context, bs BlockViewer, n *pbNode, depth int, seen map[cid.Cid]bool, out *[]DirEntry) error {
	if depth > maxShardDepth {
		return fmt.Errorf("%w: HAMT deeper than %d levels", ErrMalformed, maxShardDepth)
	}
	if n.fanout < 2 || n.fanout&(n.fanout-1) != 0 || n.fanout > 1<<16 {
		return fmt.Errorf("%w: HAMT fanout %d", ErrMalformed, n.fanout)
	}
	pad := len(fmt.Sprintf("%X", n.fanout-1))
	for _, l := range n.links {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case len(l.Name) < pad:
			return fmt.Errorf("%w: HAMT link name %q", ErrMalformed, l.Name)
		case len(l.Name) == pad:
			if seen[l.CID] {
				return fmt.Errorf("%w: HAMT shard %s appears twice", ErrMalformed, l.CID)
			}
			seen[l.CID] = true
			sub, err := loadPB(ctx, bs, l.CID)
			if err != nil {
				return err
			}
			if sub.typ != data.Data_HAMTShard {
				return fmt.Errorf("%w: HAMT child %s is not a shard", ErrMalformed, l.CID)
			}
			if err := readShard(ctx, bs, sub, depth+1, seen, out); err != nil {
				return err
			}
		default:
			if len(*out) >= maxDirEntries {
				return fmt.Errorf("%w: directory has more than %d entries", ErrMalformed, maxDirEntries)
			}
			*out = append(*out, DirEntry{Name: l.Name[pad:], CID: l.CID, Tsize: l.Tsize})
		}
	}
	return nil
}

// Resolve walks a slash-separated path from root through directories
// (basic or HAMT) and returns the CID it names.
func Resolve(ctx context.Context, bs BlockViewer, root cid.Cid, p string) (cid.Cid, error) {
	cur := root
	ls := linkSystem(ctx, bs, nil)
	walked := root.String()
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if name == "" {
			continue
		}
		n, err := loadDir(ctx, bs, cur)
		if err != nil {
			return cid.Undef, fmt.Errorf("%s: %w", walked, err)
		}
		var next cid.Cid
		if n.typ == data.Data_Directory {
			found := false
			for _, l := range n.links {
				if l.Name == name {
					next, found = l.CID, true
					break
				}
			}
			if !found {
				return cid.Undef, fmt.Errorf("%s/%s: %w", walked, name, ErrNoEntry)
			}
		} else {
			next, err = lookupShard(ctx, ls, cur, name)
			if err != nil {
				return cid.Undef, fmt.Errorf("%s/%s: %w", walked, name, err)
			}
		}
		cur, walked = next, walked+"/"+name
	}
	return cur, nil
}

// lookupShard finds name in a HAMT through go-unixfsnode, which hashes the
// name and follows one path of shards.
func lookupShard(ctx context.Context, ls *ipld.LinkSystem, c cid.Cid, name string) (cid.Cid, error) {
	nd, err := ls.Load(ipld.LinkContext{Ctx: ctx}, cidlink.Link{Cid: c}, dagpb.Type.PBNode)
	if err != nil {
		return cid.Undef, err
	}
	dir, err := unixfsnode.Reify(ipld.LinkContext{Ctx: ctx}, nd, ls)
	if err != nil {
		return cid.Undef, err
	}
	v, err := dir.LookupByString(name)
	var notExist datamodel.ErrNotExists
	if errors.As(err, &notExist) {
		return cid.Undef, ErrNoEntry
	}
	if err != nil {
		return cid.Undef, err
	}
	l, err := v.AsLink()
	if err != nil {
		return cid.Undef, err
	}
	return l.(cidlink.Link).Cid, nil
}
