package versions

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// openStore opens a real store in a temporary directory, closed at the end
// of the test.
func openStore(t *testing.T, dir string) *store.Badger {
	t.Helper()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// buildTree stores a tree described by path -> content: a path ending in
// "/" is an (empty) directory, content starting "->" a symlink to the rest.
func buildTree(t *testing.T, put unixfs.BlockPutter, l unixfs.Layout, files map[string]string) cid.Cid {
	t.Helper()
	n, err := buildDir(context.Background(), put, l, files)
	if err != nil {
		t.Fatal(err)
	}
	return n.CID
}

func buildDir(ctx context.Context, put unixfs.BlockPutter, l unixfs.Layout, files map[string]string) (unixfs.Node, error) {
	subdirs := map[string]map[string]string{}
	var entries []unixfs.Entry
	im := &unixfs.Importer{Put: put, Layout: l, Workers: 1}
	for p, content := range files {
		if name, rest, ok := strings.Cut(p, "/"); ok {
			if subdirs[name] == nil {
				subdirs[name] = map[string]string{}
			}
			if rest != "" {
				subdirs[name][rest] = content
			}
			continue
		}
		var n unixfs.Node
		var err error
		switch {
		case strings.HasPrefix(content, "->"):
			n, err = unixfs.BuildSymlink(ctx, put, content[2:])
		case l.Chunker.OneChunk(uint64(len(content))):
			n, err = im.ImportChunk(ctx, []byte(content))
		default:
			n, err = im.ImportReader(ctx, bytes.NewReader([]byte(content)))
		}
		if err != nil {
			return unixfs.Node{}, err
		}
		entries = append(entries, unixfs.Entry{Name: p, Node: n})
	}
	for name, sub := range subdirs {
		n, err := buildDir(ctx, put, l, sub)
		if err != nil {
			return unixfs.Node{}, err
		}
		entries = append(entries, unixfs.Entry{Name: name, Node: n})
	}
	return l.BuildDirectory(ctx, put, entries)
}

// commitTree stores a one-file tree whose content is name and commits it
// at time sec (seconds after a fixed epoch).
func commitTree(t *testing.T, h *History, s *store.Badger, name string, sec int) Commit {
	t.Helper()
	tree := buildTree(t, s, unixfs.DefaultLayout(), map[string]string{"f": name})
	c, err := h.Create(context.Background(), Commit{Tree: tree, Message: name, Author: "test", Time: at(sec), Chunker: "fastcdc"}, false)
	if err != nil {
		t.Fatalf("commit %s: %v", name, err)
	}
	return c
}

func at(sec int) time.Time {
	return time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC).Add(time.Duration(sec) * time.Second)
}
