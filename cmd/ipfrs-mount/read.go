package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func catCommand() *command {
	rf := &remoteFlags{}
	return &command{
		name: "cat", args: "CID[/PATH]... [--remote URL[,URL...]]", help: "write the contents of files to stdout",
		flags: rf.add,
		run:   func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.cat(ctx, fs.Args(), rf) },
	}
}

func (a *app) cat(ctx context.Context, args []string, rf *remoteFlags) error {
	if len(args) == 0 {
		return errors.New("no CID given")
	}
	// Parse every argument before writing anything.
	for _, arg := range args {
		if _, _, err := parseCIDPath(arg); err != nil {
			return err
		}
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
	workers := runtime.GOMAXPROCS(0)
	if rf.enabled() {
		workers = max(workers, 16) // leaves in flight from the network
	}
	for _, arg := range args {
		c, err := resolveIn(ctx, bs, arg)
		if err != nil {
			return err
		}
		f, err := unixfs.OpenFile(ctx, bs, c)
		if err != nil {
			return argErr(arg, err)
		}
		if _, err := f.WriteTo(ctx, a.stdout, workers); err != nil {
			return argErr(arg, err)
		}
	}
	return nil
}

// resolve turns "CID[/path]" into the CID it names.
func (r *repo) resolve(ctx context.Context, arg string) (cid.Cid, error) {
	return resolveIn(ctx, r.store, arg)
}

// resolveIn resolves "CID[/path]" through bs.
func resolveIn(ctx context.Context, bs unixfs.BlockViewer, arg string) (cid.Cid, error) {
	c, p, err := parseCIDPath(arg)
	if err != nil {
		return cid.Undef, err
	}
	c, err = unixfs.Resolve(ctx, bs, c, p)
	if errors.Is(err, store.ErrNotFound) {
		return cid.Undef, argErr(arg, err)
	}
	if err != nil {
		return cid.Undef, err // it names the path already
	}
	return c, nil
}

func lsCommand() *command {
	var asJSON bool
	return &command{
		name: "ls", args: "[--json] CID[/PATH]...", help: "list directory entries: CID, size, name",
		flags: func(fs *pflag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON lines") },
		run:   func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.ls(ctx, fs.Args(), asJSON) },
	}
}

// lsEntry is one line of ls output.
type lsEntry struct {
	Name string `json:"name"`
	CID  string `json:"cid"`
	Type string `json:"type"`
	Size uint64 `json:"size"`
}

func (a *app) ls(ctx context.Context, args []string, asJSON bool) error {
	if len(args) == 0 {
		return errors.New("no CID given")
	}
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	for _, arg := range args {
		c, err := r.resolve(ctx, arg)
		if err != nil {
			return err
		}
		info, err := unixfs.Stat(ctx, r.store, c)
		if err != nil {
			return argErr(arg, err)
		}
		var out []lsEntry
		if info.Kind != unixfs.KindDirectory {
			out = append(out, lsEntry{Name: arg, CID: c.String(), Type: info.Kind.String(), Size: info.Size})
		} else {
			ents, err := unixfs.ReadDir(ctx, r.store, c)
			if err != nil {
				return argErr(arg, err)
			}
			for _, e := range ents {
				ci, err := unixfs.Stat(ctx, r.store, e.CID)
				if err != nil {
					return argErr(arg+"/"+e.Name, err)
				}
				out = append(out, lsEntry{Name: e.Name, CID: e.CID.String(), Type: ci.Kind.String(), Size: ci.Size})
			}
		}
		for _, e := range out {
			if asJSON {
				b, _ := json.Marshal(e)
				fmt.Fprintf(a.stdout, "%s\n", b)
				continue
			}
			name := e.Name
			if e.Type == unixfs.KindDirectory.String() {
				name += "/"
			}
			fmt.Fprintf(a.stdout, "%s %d %s\n", e.CID, e.Size, name)
		}
	}
	return nil
}
