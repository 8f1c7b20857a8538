package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/chunker"
	"github.com/ipfrs/ipfrs-mount/deltabase"
	"github.com/ipfrs/ipfrs-mount/s3tier"
	"github.com/ipfrs/ipfrs-mount/safetensors"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

type addFlags struct {
	recursive, quiet, hidden bool
	compress, asJSON         bool
	chunker, profile         string
	s3                       s3Flags
}

func addCommand() *command {
	f := &addFlags{}
	return &command{
		name: "add", args: "[-r] [-Q] [--json] [--chunker SPEC] [--profile NAME] PATH...",
		help: "add files or directories to the repo and print their CIDs",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVarP(&f.recursive, "recursive", "r", false, "add directories recursively")
			fs.BoolVarP(&f.quiet, "quieter", "Q", false, "print only the root CID of each PATH")
			fs.BoolVar(&f.asJSON, "json", false, "print JSON lines: name, cid, size")
			fs.BoolVarP(&f.hidden, "hidden", "H", false, "include files whose names start with a dot")
			fs.StringVar(&f.chunker, "chunker", "", "fastcdc | fastcdc-MIN-AVG-MAX | size-N (default: the profile's)")
			fs.BoolVar(&f.compress, "compress", true, "store the tensors of safetensors and torch.save files compressed: byte-grouped and entropy-coded, safetensors tensors as deltas against the same tensor in the last file that had it (--compress=false: stored plainly)")
			fs.StringVar(&f.profile, "profile", "default", "default (FastCDC) | kubo (= ipfs add --cid-version=1 --raw-leaves) | unixfs-v1-2025")
			f.s3.add(fs)
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.add(ctx, f, fs.Args()) },
	}
}

// adder adds OS files and trees through one store batch.
type adder struct {
	a      *app
	batch  *store.Batch
	im     *unixfs.Importer
	layout unixfs.Layout
	f      *addFlags
	bases  *deltabase.Index // nil: no deltas
}

func (a *app) add(ctx context.Context, f *addFlags, paths []string) error {
	if len(paths) == 0 {
		return errors.New("no PATH given")
	}
	layout, err := unixfs.LayoutFor(f.profile)
	if err != nil {
		return err
	}
	if f.chunker != "" {
		if layout.Chunker, err = chunker.ParseSpec(f.chunker); err != nil {
			return err
		}
	}
	// Check every argument before storing anything.
	var total int64
	for i, p := range paths {
		paths[i] = a.abs(p)
		p = paths[i]
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() && !f.recursive {
			return fmt.Errorf("%s is a directory (use -r)", p)
		}
		n, err := treeSize(p, f.hidden)
		if err != nil {
			return err
		}
		total += n
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	prog := a.newProgress(total, "adding")
	// The pin keeps GC off the new blocks until their roots are recorded.
	tp := r.store.TempPin()
	defer tp.Release()
	ad := &adder{a: a, batch: tp.NewBatch(), layout: layout, f: f}
	ad.im = &unixfs.Importer{Put: ad.batch, Layout: layout, Progress: prog.add}
	if f.profile == "default" { // tensor-aware; other profiles keep their CIDs
		ad.im.Cuts = safetensors.FindSegments
		if f.compress {
			// Tensors are coded against their last stored version.
			ad.im.Encoder, ad.bases = r.store, deltabase.New(r.store)
			ad.im.Cuts = ad.bases.Cuts
		}
	}
	var roots []unixfs.Node
	for _, p := range paths {
		n, err := ad.addPath(ctx, p, filepath.Base(filepath.Clean(p)))
		if err != nil {
			ad.batch.Cancel()
			return err
		}
		roots = append(roots, n)
	}
	if err := ad.batch.Close(); err != nil {
		return err
	}
	prog.done()
	if f.s3.enabled() {
		if _, err := s3tier.ParseURL(f.s3.url); err != nil {
			return err
		}
	}
	for i, n := range roots {
		if err := r.recordRoot(ctx, n.CID, rootRecord{Name: paths[i], Size: n.Size, Added: time.Now().UTC()}); err != nil {
			return err
		}
		switch {
		case f.quiet && f.asJSON:
			printAdded(a, filepath.Base(filepath.Clean(paths[i])), n)
		case f.quiet:
			fmt.Fprintln(a.stdout, n.CID)
		}
	}
	if err := r.store.Sync(); err != nil {
		return err
	}
	if !f.s3.enabled() {
		return nil
	}
	// Pushed once durable here; the queue keeps them if the push is cut short.
	cids := make([]cid.Cid, len(roots))
	for i, n := range roots {
		cids[i] = n.CID
	}
	return a.pushRoots(ctx, &f.s3, r.store, cids)
}

// treeSize sums the regular files under p that add will read.
func treeSize(p string, hidden bool) (int64, error) {
	var n int64
	err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if q != p && !hidden && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func (ad *adder) addPath(ctx context.Context, p, display string) (unixfs.Node, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return unixfs.Node{}, err
	}
	var n unixfs.Node
	switch {
	case fi.Mode().IsRegular():
		n, err = ad.addFile(ctx, p)
	case fi.IsDir():
		n, err = ad.addDir(ctx, p, display)
	case fi.Mode()&os.ModeSymlink != 0:
		var target string
		if target, err = os.Readlink(p); err == nil {
			n, err = unixfs.BuildSymlink(ctx, ad.batch, target)
		}
	default:
		err = fmt.Errorf("%s: cannot add a %s", p, fileType(fi.Mode()))
	}
	if err != nil {
		return unixfs.Node{}, err
	}
	switch {
	case ad.f.quiet:
	case ad.f.asJSON:
		printAdded(ad.a, display, n)
	default:
		fmt.Fprintf(ad.a.stdout, "added %s %s\n", n.CID, display)
	}
	return n, nil
}

func (ad *adder) addFile(ctx context.Context, p string) (unixfs.Node, error) {
	f, err := os.Open(p)
	if err != nil {
		return unixfs.Node{}, err
	}
	defer f.Close()
	n, err := ad.im.ImportReader(ctx, f)
	if err != nil {
		return unixfs.Node{}, fmt.Errorf("%s: %w", p, err)
	}
	var head [9]byte
	if k, _ := f.ReadAt(head[:], 0); ad.bases != nil && k == len(head) && head[8] == '{' {
		// A safetensors file: commit it so that the next file with its
		// tensors (in this add or a later one) is stored against it.
		if err := ad.batch.Flush(); err != nil {
			return unixfs.Node{}, err
		}
		if err := ad.bases.Record(ctx, n.CID); err != nil {
			return unixfs.Node{}, fmt.Errorf("%s: %w", p, err)
		}
	}
	return n, nil
}

func (ad *adder) addDir(ctx context.Context, p, display string) (unixfs.Node, error) {
	des, err := os.ReadDir(p)
	if err != nil {
		return unixfs.Node{}, err
	}
	entries := make([]unixfs.Entry, 0, len(des))
	for _, de := range des {
		if !ad.f.hidden && strings.HasPrefix(de.Name(), ".") {
			continue
		}
		n, err := ad.addPath(ctx, filepath.Join(p, de.Name()), display+"/"+de.Name())
		if err != nil {
			return unixfs.Node{}, err
		}
		entries = append(entries, unixfs.Entry{Name: de.Name(), Node: n})
	}
	return ad.layout.BuildDirectory(ctx, ad.batch, entries)
}

// addedJSON is one line of add --json; its shape is stable.
type addedJSON struct {
	Name string `json:"name"`
	CID  string `json:"cid"`
	Size uint64 `json:"size"` // content bytes (for a directory, of its files)
}

func printAdded(a *app, name string, n unixfs.Node) {
	b, _ := json.Marshal(addedJSON{Name: name, CID: n.CID.String(), Size: n.Size})
	fmt.Fprintf(a.stdout, "%s\n", b)
}

func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	default:
		return "special file"
	}
}
