package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/carfile"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func exportCommand() *command {
	var out string
	var version int
	rf := &remoteFlags{}
	return &command{
		name: "export", args: "CID[/PATH] -o FILE.car [--car-version 1|2] [--remote URL[,URL...]]", help: "write a DAG to a CAR file",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVarP(&out, "output", "o", "", "CAR file to write")
			fs.IntVar(&version, "car-version", 1, "CAR format version, 1 or 2")
			rf.add(fs)
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 || out == "" {
				return errors.New("want exactly one CID and -o FILE.car")
			}
			return a.export(ctx, fs.Arg(0), a.abs(out), version, rf)
		},
	}
}

func (a *app) export(ctx context.Context, arg, out string, version int, rf *remoteFlags) error {
	if version != 1 && version != 2 {
		return fmt.Errorf("--car-version must be 1 or 2, not %d", version)
	}
	if _, _, err := parseCIDPath(arg); err != nil {
		return err
	}
	r, err := a.open(!rf.enabled()) // fetched blocks are cached: writable
	if err != nil {
		return err
	}
	defer r.close()
	bs, closeRemote, err := a.blockSource(rf, r)
	if err != nil {
		return err
	}
	defer closeRemote()
	c, err := resolveIn(ctx, bs, arg)
	if err != nil {
		return err
	}
	// Write next to the target and rename, so a failed export leaves no
	// partial CAR behind.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".export-*.car")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	prog := a.newProgress(-1, "exporting")
	_, err = carfile.Export(ctx, bs, []cid.Cid{c}, tmp, carfile.ExportOptions{Version: version, Progress: prog.add})
	prog.done()
	if err != nil {
		return argErr(arg, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

func importCommand() *command {
	return &command{
		name: "import", args: "FILE.car...", help: "store the blocks of CAR files (all verified first) and print their roots",
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.importCARs(ctx, fs.Args()) },
	}
}

func (a *app) importCARs(ctx context.Context, files []string) error {
	if len(files) == 0 {
		return errors.New("no CAR file given")
	}
	var total int64
	for i, f := range files {
		files[i] = a.abs(f)
		fi, err := os.Stat(files[i])
		if err != nil {
			return err
		}
		total += 2 * fi.Size() // two passes
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	prog := a.newProgress(total, "importing")
	defer prog.done()
	// The pin keeps GC off the new blocks until their roots are recorded.
	tp := r.store.TempPin()
	defer tp.Release()
	for _, f := range files {
		batch := tp.NewBatch()
		roots, st, err := carfile.Import(ctx, f, batch, carfile.ImportOptions{Progress: prog.add, Has: r.store.Has})
		if err != nil {
			batch.Cancel()
			return err
		}
		if err := batch.Close(); err != nil {
			return err
		}
		for _, root := range roots {
			// A file root's logical size is its content; other DAGs count
			// their share of the CAR's blocks.
			rec := rootRecord{Name: f, Size: uint64(st.Bytes) / uint64(len(roots)), Added: time.Now().UTC()}
			if info, err := unixfs.Stat(ctx, r.store, root); err == nil && info.Kind == unixfs.KindFile {
				rec.Size = info.Size
			}
			if err := r.recordRoot(ctx, root, rec); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, root)
		}
	}
	return r.store.Sync()
}
